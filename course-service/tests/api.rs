//! The REST API through HTTP, against a real SecantusDB: every route and every error case.

mod support;

use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;
use support::{course, problem, titles, unique_db, TestApp, TOKEN};

// ===== create and read =====

#[tokio::test]
async fn create_then_read_back() {
    let app = TestApp::spawn().await;
    let res = app
        .admin(Method::POST, "/api/courses")
        .json(&json!({
            "title": "  Intro to   Rust ",
            "description": "Ownership, borrowing and lifetimes.",
            "instructor": "Ada Lovelace",
            "duration_minutes": 90,
            "level": "beginner",
            "tags": ["Rust", "systems", "rust"],
            "price_cents": 1999
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let location = res.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(res.headers()["etag"], "\"v1\"");
    let created: Value = res.json().await.unwrap();
    assert_eq!(created["title"], "Intro to Rust");
    assert_eq!(created["slug"], "intro-to-rust");
    assert_eq!(created["tags"], json!(["rust", "systems"]));
    assert_eq!(created["version"], 1);
    assert_eq!(
        location,
        format!("/api/courses/{}", created["id"].as_str().unwrap())
    );
    assert!(created["created_at"].as_str().unwrap().ends_with('Z'));

    let fetched = app.get_json(&location).await;
    assert_eq!(fetched, created);
}

#[tokio::test]
async fn read_errors_distinguish_malformed_from_absent() {
    let app = TestApp::spawn().await;
    let body = problem(app.get("/api/courses/not-an-id").await, 400).await;
    assert!(body["detail"].as_str().unwrap().contains("24 hexadecimal"));
    problem(app.get("/api/courses/6b06c0945a4c4d02edca3612").await, 404).await;
    problem(app.get("/api/nothing-here").await, 404).await;
}

#[tokio::test]
async fn conditional_get_answers_304() {
    let app = TestApp::spawn().await;
    let c = app.create(course(1)).await;
    let path = format!("/api/courses/{}", c["id"].as_str().unwrap());
    let res = app
        .http
        .get(app.url(&path))
        .header("if-none-match", "\"v1\"")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 304);
    assert_eq!(res.headers()["etag"], "\"v1\"");
    let res = app
        .http
        .get(app.url(&path))
        .header("if-none-match", "\"v0\"")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

// ===== validation and body handling =====

#[tokio::test]
async fn validation_reports_every_broken_rule() {
    let app = TestApp::spawn().await;
    let res = app
        .admin(Method::POST, "/api/courses")
        .json(&json!({
            "title": "",
            "instructor": "X",
            "duration_minutes": 0,
            "level": "beginner",
            "tags": ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k"],
            "price_cents": -5,
            "slug": "Not A Slug"
        }))
        .send()
        .await
        .unwrap();
    let body = problem(res, 422).await;
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        ["title", "slug", "duration_minutes", "tags", "price_cents"]
    );
    // Nothing reached the database.
    assert_eq!(app.get_json("/api/courses").await["total"], 0);
}

#[tokio::test]
async fn long_fields_are_refused() {
    let app = TestApp::spawn().await;
    let mut c = course(1);
    c["title"] = json!("t".repeat(121));
    c["description"] = json!("d".repeat(5001));
    c["tags"] = json!(["x".repeat(31)]);
    c["duration_minutes"] = json!(10_001);
    let res = app
        .admin(Method::POST, "/api/courses")
        .json(&c)
        .send()
        .await
        .unwrap();
    let body = problem(res, 422).await;
    assert_eq!(body["errors"].as_array().unwrap().len(), 4, "{body}");
}

#[tokio::test]
async fn unknown_and_mistyped_fields_are_422_with_every_rule_and_bad_json_is_400() {
    let app = TestApp::spawn().await;
    let mut c = course(1);
    c["colour"] = json!("red");
    let res = app
        .admin(Method::POST, "/api/courses")
        .json(&c)
        .send()
        .await
        .unwrap();
    let body = problem(res, 422).await;
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("colour"),
        "{body}"
    );

    let res = app
        .admin(Method::POST, "/api/courses")
        .header("content-type", "application/json")
        .body("{\"title\": ")
        .send()
        .await
        .unwrap();
    problem(res, 400).await;

    // An unknown level does not hide the other broken fields of the same body.
    let mut c = course(2);
    c["level"] = json!("expert");
    c["duration_minutes"] = json!("ninety");
    c["price_cents"] = json!(-1);
    let res = app
        .admin(Method::POST, "/api/courses")
        .json(&c)
        .send()
        .await
        .unwrap();
    let body = problem(res, 422).await;
    let errors: Vec<(String, String)> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["field"].as_str().unwrap().into(),
                e["message"].as_str().unwrap().into(),
            )
        })
        .collect();
    let fields: Vec<&str> = errors.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(
        fields,
        ["duration_minutes", "level", "price_cents"],
        "{body}"
    );
    assert!(errors[1].1.contains("expert"), "{body}");
    assert_eq!(app.get_json("/api/courses").await["total"], 0);
}

#[tokio::test]
async fn non_json_is_415_and_oversized_is_413() {
    let app = TestApp::builder().max_body_bytes(1024).spawn().await;
    let res = app
        .admin(Method::POST, "/api/courses")
        .header("content-type", "text/plain")
        .body(course(1).to_string())
        .send()
        .await
        .unwrap();
    problem(res, 415).await;

    let mut c = course(1);
    c["description"] = json!("d".repeat(2000));
    let res = app
        .admin(Method::POST, "/api/courses")
        .json(&c)
        .send()
        .await
        .unwrap();
    let body = problem(res, 413).await;
    assert!(body["detail"].as_str().unwrap().contains("1024"), "{body}");
}

#[tokio::test]
async fn oversized_chunked_body_is_413() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestApp::builder().max_body_bytes(1024).spawn().await;
    let addr = app.base.trim_start_matches("http://").to_string();
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /api/courses HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {TOKEN}\r\n\
         content-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let chunk = format!("200\r\n{}\r\n", " ".repeat(0x200));
    for _ in 0..4 {
        // The server may answer and close before every chunk is written.
        if conn.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let _ = conn.write_all(b"0\r\n\r\n").await;
    let mut answer = String::new();
    let _ = conn.read_to_string(&mut answer).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
}

// ===== auth =====

#[tokio::test]
async fn writes_need_the_admin_token() {
    let app = TestApp::spawn().await;
    let res = app
        .http
        .post(app.url("/api/courses"))
        .json(&course(1))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.headers()["www-authenticate"],
        "Bearer realm=\"microcourses\""
    );
    problem(res, 401).await;

    let res = app
        .http
        .post(app.url("/api/courses"))
        .bearer_auth("wrong-token-but-long-enough")
        .json(&course(1))
        .send()
        .await
        .unwrap();
    problem(res, 403).await;

    let res = app
        .http
        .post(app.url("/api/courses"))
        .header("authorization", format!("Basic {TOKEN}"))
        .json(&course(1))
        .send()
        .await
        .unwrap();
    problem(res, 401).await;

    for method in [Method::PUT, Method::PATCH, Method::DELETE] {
        let res = app
            .http
            .request(
                method.clone(),
                app.url("/api/courses/6b06c0945a4c4d02edca3612"),
            )
            .json(&course(1))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401, "{method}");
    }
    assert_eq!(app.get_json("/api/courses").await["total"], 0);
}

#[tokio::test]
async fn without_a_configured_token_writes_are_refused() {
    let app = TestApp::builder().token(None).spawn().await;
    let res = app
        .admin(Method::POST, "/api/courses")
        .json(&course(1))
        .send()
        .await
        .unwrap();
    let body = problem(res, 403).await;
    assert!(body["detail"].as_str().unwrap().contains("MC_ADMIN_TOKEN"));
    // Reads stay public.
    assert_eq!(app.get_json("/api/courses").await["total"], 0);
}

// ===== uniqueness =====

#[tokio::test]
async fn duplicate_slug_or_title_is_409() {
    let app = TestApp::spawn().await;
    app.create(course(1)).await;

    let mut same_title = course(1);
    same_title["title"] = json!("COURSE NUMBER 1");
    same_title["slug"] = json!("another-slug");
    let res = app
        .admin(Method::POST, "/api/courses")
        .json(&same_title)
        .send()
        .await
        .unwrap();
    let body = problem(res, 409).await;
    assert!(body["detail"].as_str().unwrap().contains("title"), "{body}");

    let mut same_slug = course(2);
    same_slug["slug"] = json!("course-number-1");
    let res = app
        .admin(Method::POST, "/api/courses")
        .json(&same_slug)
        .send()
        .await
        .unwrap();
    let body = problem(res, 409).await;
    assert!(
        body["detail"].as_str().unwrap().contains("course-number-1"),
        "{body}"
    );
}

// ===== update =====

#[tokio::test]
async fn put_replaces_and_checks_if_match() {
    let app = TestApp::spawn().await;
    let c = app.create(course(1)).await;
    let path = format!("/api/courses/{}", c["id"].as_str().unwrap());
    let mut replacement = course(1);
    replacement["title"] = json!("Course number one, revised");
    replacement["price_cents"] = json!(0);

    let res = app
        .admin(Method::PUT, &path)
        .header("if-match", "\"v1\"")
        .json(&replacement)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["etag"], "\"v2\"");
    let updated: Value = res.json().await.unwrap();
    assert_eq!(updated["title"], "Course number one, revised");
    assert_eq!(updated["slug"], "course-number-1", "slug kept when absent");
    assert_eq!(updated["price_cents"], 0);
    assert_eq!(updated["version"], 2);
    assert_eq!(updated["created_at"], c["created_at"]);

    // A stale precondition changes nothing.
    replacement["price_cents"] = json!(5);
    let res = app
        .admin(Method::PUT, &path)
        .header("if-match", "\"v1\"")
        .json(&replacement)
        .send()
        .await
        .unwrap();
    let body = problem(res, 412).await;
    assert!(
        body["detail"].as_str().unwrap().contains("\"v2\""),
        "{body}"
    );
    assert_eq!(app.get_json(&path).await["price_cents"], 0);

    let res = app
        .admin(Method::PUT, &path)
        .header("if-match", "v2")
        .json(&replacement)
        .send()
        .await
        .unwrap();
    problem(res, 400).await;

    // Well-formed entity-tags that are not ours can never match: 412 (RFC 9110 §13.1.1).
    for foreign in ["\"999\"", "W/\"v2\""] {
        let res = app
            .admin(Method::PUT, &path)
            .header("if-match", foreign)
            .json(&replacement)
            .send()
            .await
            .unwrap();
        problem(res, 412).await;
    }
    assert_eq!(app.get_json(&path).await["price_cents"], 0);
}

#[tokio::test]
async fn patch_changes_only_named_fields_and_validates_the_result() {
    let app = TestApp::spawn().await;
    let c = app.create(course(1)).await;
    let path = format!("/api/courses/{}", c["id"].as_str().unwrap());

    let res = app
        .admin(Method::PATCH, &path)
        .json(&json!({ "level": "advanced", "tags": ["Go", "web"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let patched: Value = res.json().await.unwrap();
    assert_eq!(patched["level"], "advanced");
    assert_eq!(patched["tags"], json!(["go", "web"]));
    assert_eq!(patched["title"], c["title"]);
    assert_eq!(patched["version"], 2);

    let res = app
        .admin(Method::PATCH, &path)
        .json(&json!({ "duration_minutes": 0 }))
        .send()
        .await
        .unwrap();
    problem(res, 422).await;
    let res = app
        .admin(Method::PATCH, &path)
        .json(&json!({ "id": "x" }))
        .send()
        .await
        .unwrap();
    // A field that is not writable is named, like every other problem of the body.
    let body = problem(res, 422).await;
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("`id`"),
        "{body}"
    );
    assert_eq!(app.get_json(&path).await["version"], 2);

    let res = app
        .admin(Method::PATCH, "/api/courses/6b06c0945a4c4d02edca3612")
        .json(&json!({ "level": "advanced" }))
        .send()
        .await
        .unwrap();
    problem(res, 404).await;
}

#[tokio::test]
async fn patch_into_a_taken_slug_is_409() {
    let app = TestApp::spawn().await;
    app.create(course(1)).await;
    let c2 = app.create(course(2)).await;
    let res = app
        .admin(
            Method::PATCH,
            &format!("/api/courses/{}", c2["id"].as_str().unwrap()),
        )
        .json(&json!({ "slug": "course-number-1" }))
        .send()
        .await
        .unwrap();
    problem(res, 409).await;
}

#[tokio::test]
async fn concurrent_updates_with_the_same_precondition_let_exactly_one_win() {
    let app = TestApp::spawn().await;
    let c = app.create(course(1)).await;
    let path = format!("/api/courses/{}", c["id"].as_str().unwrap());
    let send = |price: i64| {
        app.admin(Method::PATCH, &path)
            .header("if-match", "\"v1\"")
            .json(&json!({ "price_cents": price }))
            .send()
    };
    let results = futures_join(send(1), send(2)).await;
    let mut statuses: Vec<u16> = results.iter().map(|r| r.status().as_u16()).collect();
    statuses.sort();
    assert_eq!(statuses, [200, 412]);
    assert_eq!(app.get_json(&path).await["version"], 2);
}

async fn futures_join(
    a: impl std::future::Future<Output = reqwest::Result<reqwest::Response>>,
    b: impl std::future::Future<Output = reqwest::Result<reqwest::Response>>,
) -> Vec<reqwest::Response> {
    let (a, b) = tokio::join!(a, b);
    vec![a.unwrap(), b.unwrap()]
}

// ===== delete =====

#[tokio::test]
async fn delete_is_204_then_404_and_honours_if_match() {
    let app = TestApp::spawn().await;
    let c = app.create(course(1)).await;
    let path = format!("/api/courses/{}", c["id"].as_str().unwrap());

    let res = app
        .admin(Method::DELETE, &path)
        .header("if-match", "\"v7\"")
        .send()
        .await
        .unwrap();
    problem(res, 412).await;

    let res = app
        .admin(Method::DELETE, &path)
        .header("if-match", "\"v1\"")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    problem(app.get(&path).await, 404).await;
    let res = app.admin(Method::DELETE, &path).send().await.unwrap();
    problem(res, 404).await;
    let res = app
        .admin(Method::DELETE, "/api/courses/xyz")
        .send()
        .await
        .unwrap();
    problem(res, 400).await;
}

// ===== listing =====

async fn catalogue(app: &TestApp) {
    let courses = [
        (
            "Intro to Rust",
            "Ada Lovelace",
            "beginner",
            1500,
            vec!["rust"],
        ),
        (
            "Async Rust in Practice",
            "Grace Hopper",
            "advanced",
            4900,
            vec!["rust", "async"],
        ),
        (
            "C++ (part 1): Templates",
            "Bjarne S.",
            "intermediate",
            2500,
            vec!["cpp"],
        ),
        (
            "Web Security Basics",
            "Alan Turing",
            "beginner",
            0,
            vec!["security", "web"],
        ),
        (
            "Distributed Systems",
            "Leslie Lamport",
            "advanced",
            9900,
            vec!["systems"],
        ),
    ];
    for (title, instructor, level, price, tags) in courses {
        app.create(json!({
            "title": title,
            "description": format!("{title}: a course about it."),
            "instructor": instructor,
            "duration_minutes": 120,
            "level": level,
            "tags": tags,
            "price_cents": price,
        }))
        .await;
    }
}

#[tokio::test]
async fn listing_filters_search_and_sorts() {
    let app = TestApp::spawn().await;
    catalogue(&app).await;

    let all = app.get_json("/api/courses").await;
    assert_eq!(all["total"], 5);
    // Default order: newest first.
    assert_eq!(titles(&all)[0], "Distributed Systems");

    let q = app.get_json("/api/courses?q=RUST&sort=title").await;
    assert_eq!(titles(&q), ["Async Rust in Practice", "Intro to Rust"]);

    // The instructor and description are searched too.
    let q = app.get_json("/api/courses?q=lamport").await;
    assert_eq!(titles(&q), ["Distributed Systems"]);

    // Regex metacharacters are literals: "(part 1)" matches, ".*" matches nothing.
    let q = app.get_json("/api/courses?q=%2B%2B%20(part").await;
    assert_eq!(titles(&q), ["C++ (part 1): Templates"]);
    assert_eq!(app.get_json("/api/courses?q=.*").await["total"], 0);
    assert_eq!(app.get_json("/api/courses?q=%5B").await["total"], 0);

    let t = app.get_json("/api/courses?tag=Rust&sort=-price").await;
    assert_eq!(titles(&t), ["Async Rust in Practice", "Intro to Rust"]);

    let l = app.get_json("/api/courses?level=advanced&sort=price").await;
    assert_eq!(
        titles(&l),
        ["Async Rust in Practice", "Distributed Systems"]
    );

    let p = app.get_json("/api/courses?sort=price").await;
    assert_eq!(titles(&p)[0], "Web Security Basics");
}

#[tokio::test]
async fn a_misspelt_search_is_answered_with_one_that_finds_courses() {
    let app = TestApp::spawn().await;
    catalogue(&app).await;

    let res = app
        .get("/api/courses?q=Distribted%20Sytems&level=advanced")
        .await;
    assert_eq!(res.headers()["x-cache"], "MODEL");
    let missed: Value = res.json().await.unwrap();
    assert_eq!(
        missed["total"], 0,
        "the listing itself stays a substring search"
    );
    assert_eq!(
        missed["suggestion"],
        json!({
            "q": "distributed systems",
            "total": 1,
            "link": "/api/courses?q=distributed+systems&level=advanced&sort=-created_at&page=1&per_page=20",
        })
    );
    let link = missed["suggestion"]["link"].as_str().unwrap();
    assert_eq!(titles(&app.get_json(link).await), ["Distributed Systems"]);

    // A search that finds courses, or that nothing in the catalogue resembles, has none.
    let found = app.get_json("/api/courses?q=rust").await;
    assert!(found.get("suggestion").is_none(), "{found}");
    let nothing = app.get_json("/api/courses?q=xylophone").await;
    assert_eq!(nothing["total"], 0);
    assert!(nothing.get("suggestion").is_none(), "{nothing}");
}

#[tokio::test]
async fn listing_pages_with_links() {
    let app = TestApp::spawn().await;
    catalogue(&app).await;

    let page2 = app
        .get_json("/api/courses?per_page=2&page=2&sort=title")
        .await;
    assert_eq!(page2["total"], 5);
    assert_eq!(page2["pages"], 3);
    assert_eq!(titles(&page2), ["Distributed Systems", "Intro to Rust"]);
    let links = &page2["links"];
    assert_eq!(links["self"], "/api/courses?sort=title&page=2&per_page=2");
    assert_eq!(links["prev"], "/api/courses?sort=title&page=1&per_page=2");
    assert_eq!(links["next"], "/api/courses?sort=title&page=3&per_page=2");
    assert_eq!(links["last"], "/api/courses?sort=title&page=3&per_page=2");

    // Following the links walks every course exactly once.
    let mut seen = Vec::new();
    let mut next = Some("/api/courses?per_page=2&sort=title".to_string());
    while let Some(path) = next {
        let page = app.get_json(&path).await;
        seen.extend(titles(&page));
        next = page["links"]["next"].as_str().map(str::to_string);
    }
    assert_eq!(seen.len(), 5);

    let past = app.get_json("/api/courses?per_page=2&page=9").await;
    assert_eq!(past["items"], json!([]));
    assert_eq!(
        past["links"]["prev"],
        "/api/courses?sort=-created_at&page=3&per_page=2"
    );
}

#[tokio::test]
async fn listing_rejects_bad_parameters() {
    let app = TestApp::spawn().await;
    let body = problem(app.get("/api/courses?per_page=101").await, 422).await;
    assert_eq!(body["errors"][0]["field"], "per_page");
    problem(app.get("/api/courses?page=0").await, 422).await;
    problem(app.get("/api/courses?page=abc").await, 422).await;
    let body = problem(app.get("/api/courses?sort=password").await, 422).await;
    assert!(body["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("title"));
    problem(app.get("/api/courses?level=expert").await, 422).await;
    let body = problem(app.get("/api/courses?colour=red").await, 400).await;
    assert!(body["detail"].as_str().unwrap().contains("colour"));
    problem(app.get("/api/courses?q=a&q=b").await, 400).await;
    // A NUL never reaches the database: a 400 that names the parameter.
    let body = problem(app.get("/api/courses?q=%00").await, 400).await;
    assert!(body["detail"].as_str().unwrap().contains("`q`"), "{body}");
    problem(app.get("/api/courses?tag=a%00b").await, 400).await;
}

// ===== health, metrics, methods =====

#[tokio::test]
async fn health_readiness_and_metrics() {
    let app = TestApp::spawn().await;
    assert_eq!(app.get_json("/healthz").await["status"], "ok");
    assert_eq!(app.get_json("/readyz").await["status"], "ok");
    app.get_json("/api/courses").await;
    let res = app.get("/metrics").await;
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    assert!(
        text.contains(
            "course_service_http_requests_total{method=\"GET\",route=\"/api/courses\",status=\"200\"} 1"
        ),
        "{text}"
    );
    // The listing came from the read model, which follows the database.
    assert!(
        text.contains("course_service_read_model_following 1"),
        "{text}"
    );
    assert!(text.contains("course_service_read_model_loads_total{reason=\"start\"} 1"));
    assert!(
        text.contains("course_service_db_operation_duration_seconds_bucket{op=\"create_indexes\"")
    );
    assert!(text.contains("course_service_http_request_duration_seconds_bucket"));
}

#[tokio::test]
async fn unsupported_method_is_405_problem() {
    let app = TestApp::spawn().await;
    let res = app
        .http
        .request(
            Method::from_bytes(b"PURGE").unwrap(),
            app.url("/api/courses"),
        )
        .send()
        .await
        .unwrap();
    problem(res, 405).await;
}

#[tokio::test]
async fn dead_database_gives_a_quick_503_not_a_hang() {
    let dead = format!(
        "mongodb://127.0.0.1:{}/?directConnection=true",
        support::free_port()
    );
    let app = TestApp::builder()
        .uri(dead)
        .server_selection_timeout(Duration::from_millis(300))
        .spawn()
        .await;
    let started = std::time::Instant::now();
    let res = app.get("/api/courses").await;
    assert_eq!(res.headers()["retry-after"], "5");
    problem(res, 503).await;
    let res = app
        .admin(Method::POST, "/api/courses")
        .json(&course(1))
        .send()
        .await
        .unwrap();
    problem(res, 503).await;
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), 503);
    let report: Value = ready.json().await.unwrap();
    assert_eq!(report["checks"][0]["status"], "unavailable");
    // Alive even though not ready: the proxy must not eject it for a database outage.
    assert_eq!(app.get("/healthz").await.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// Clients that give up while their queries run (a closed connection, a request timeout)
/// must not wedge the instance: the driver's operations are never dropped half-way, so its
/// connection pool stays whole and the next requests are answered as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_give_up_mid_query_do_not_wedge_the_instance() {
    let app = TestApp::builder()
        .database(&unique_db("giveup"))
        .without_cache()
        .spawn()
        .await;
    let first = app.create(course(0)).await;
    for n in 1..20 {
        app.create(course(n)).await;
    }
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(15))
        .build()
        .unwrap();
    for _ in 0..4 {
        let mut burst = tokio::task::JoinSet::new();
        for _ in 0..64 {
            let (client, url) = (impatient.clone(), app.url("/api/courses?per_page=50"));
            burst.spawn(async move { client.get(url).send().await.is_ok() });
        }
        while burst.join_next().await.is_some() {}
    }
    // Whatever was abandoned has finished by itself by now, or is about to: the instance
    // answers reads (and the database operations behind them) without timing out.
    let id = first["id"].as_str().unwrap();
    for _ in 0..10 {
        let res = app.get(&format!("/api/courses/{id}")).await;
        assert_eq!(
            res.status(),
            200,
            "{}",
            res.text().await.unwrap_or_default()
        );
        let res = app.get("/api/courses?per_page=5").await;
        assert_eq!(res.status(), 200);
    }
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with("course_service_db_errors_total") && l.contains("timeout")),
        "database operations timed out after clients gave up:\n{metrics}"
    );
}
