//! The catalogue cache, against real SecantusDB: freshness across instances through the
//! change stream, one query for concurrent misses, ETag/304 and canonical keys, stale
//! serving while the database is down and recovery when it is back.

mod support;

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;
use support::{course, problem, titles, unique_db, wait_until_async, MongoServer, TestApp};

#[tokio::test]
async fn a_write_through_one_instance_is_seen_through_another_at_once() {
    let db = unique_db("fresh");
    let a = TestApp::builder().database(&db).spawn().await;
    let b = TestApp::builder().database(&db).spawn().await;
    a.wait_cache_ready().await;
    b.wait_cache_ready().await;

    // B has the (empty) listing cached.
    b.get_json("/api/courses").await;
    let res = b.get("/api/courses").await;
    assert_eq!(res.headers()["x-cache"], "HIT");

    let created = a.create(course(1)).await;
    let written = Instant::now();
    wait_until_async(
        "B to list the new course",
        Duration::from_secs(5),
        || async { titles(&b.get_json("/api/courses").await) == ["Course number 1"] },
    )
    .await;
    eprintln!(
        "create through A visible through B after {:?}",
        written.elapsed()
    );

    // An update of one course, cached on B, too.
    let path = format!("/api/courses/{}", created["id"].as_str().unwrap());
    b.get_json(&path).await;
    assert_eq!(b.get(&path).await.headers()["x-cache"], "HIT");
    let res = a
        .admin(Method::PATCH, &path)
        .json(&json!({ "price_cents": 5 }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let written = Instant::now();
    wait_until_async("B to serve the update", Duration::from_secs(5), || async {
        b.get_json(&path).await["price_cents"] == 5
    })
    .await;
    eprintln!(
        "update through A visible through B after {:?}",
        written.elapsed()
    );
}

#[tokio::test]
async fn concurrent_misses_for_one_listing_run_one_query() {
    let app = TestApp::spawn().await;
    app.create(course(1)).await;
    app.wait_cache_ready().await;
    let finds_before = db_finds(&app).await;
    let path = "/api/courses?tag=testing&sort=title";
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let (http, url) = (app.http.clone(), app.url(path));
        set.spawn(async move { http.get(url).send().await.unwrap().status().as_u16() });
    }
    let statuses = set.join_all().await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(
        db_finds(&app).await - finds_before,
        1,
        "one query for 20 misses"
    );
}

async fn db_finds(app: &TestApp) -> u64 {
    let text = app.get("/metrics").await.text().await.unwrap();
    text.lines()
        .find(|l| l.starts_with("course_service_db_operation_duration_seconds_count{op=\"find\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn etags_answer_304_and_parameter_order_does_not_split_the_cache() {
    let app = TestApp::spawn().await;
    app.create(course(1)).await;
    app.wait_cache_ready().await;
    let first = app.get("/api/courses?q=course&page=1").await;
    assert_eq!(first.headers()["x-cache"], "MISS");
    assert_eq!(first.headers()["cache-control"], "no-cache");
    let etag = first.headers()["etag"].to_str().unwrap().to_string();
    let same = app.get("/api/courses?page=1&q=course&per_page=20").await;
    assert_eq!(same.headers()["x-cache"], "HIT");
    assert_eq!(same.headers()["etag"].to_str().unwrap(), etag);
    let res = app
        .http
        .get(app.url("/api/courses?q=course"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 304);
    assert_eq!(res.headers()["etag"].to_str().unwrap(), etag);
    // A write changes the listing, its tag, and the 304.
    app.create(course(2)).await;
    let res = app
        .http
        .get(app.url("/api/courses?q=course"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_ne!(res.headers()["etag"].to_str().unwrap(), etag);
}

#[tokio::test]
async fn with_the_database_down_the_listing_is_served_stale_and_recovers() {
    let mut mongo = MongoServer::start();
    let app = TestApp::builder()
        .uri(mongo.uri())
        .server_selection_timeout(Duration::from_millis(500))
        .spawn()
        .await;
    app.create(course(1)).await;
    app.wait_cache_ready().await;
    assert_eq!(
        titles(&app.get_json("/api/courses").await),
        ["Course number 1"]
    );

    mongo.stop();
    // Until the change stream is known to be down the entry is still fresh (HIT); then the
    // last good listing is served, marked stale. Every answer meanwhile is a 200.
    wait_until_async("the stale listing", Duration::from_secs(30), || async {
        let res = app.get("/api/courses").await;
        assert_eq!(
            res.status(),
            200,
            "the listing must not fail while a copy exists"
        );
        res.headers()["x-cache"] == "STALE"
    })
    .await;
    let res = app.get("/api/courses").await;
    assert_eq!(res.headers()["x-cache"], "STALE");
    assert!(res.headers()["warning"].to_str().unwrap().contains("Stale"));
    let listing: serde_json::Value = res.json().await.unwrap();
    assert_eq!(titles(&listing), ["Course number 1"]);
    // Writes cannot be served stale: 503 with Retry-After.
    let res = app
        .admin(Method::POST, "/api/courses")
        .json(&course(2))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["retry-after"], "5");
    problem(res, 503).await;
    // A listing never cached has nothing stale to serve.
    problem(app.get("/api/courses?level=advanced").await, 503).await;

    // The database comes back (empty: it ran in memory); the service recovers by itself.
    let _mongo = MongoServer::start_on(mongo.port);
    wait_until_async("fresh answers again", Duration::from_secs(30), || async {
        let res = app.get("/api/courses").await;
        res.status() == 200 && res.headers()["x-cache"] != "STALE"
    })
    .await;
    app.create(course(3)).await;
    wait_until_async(
        "the new course to be listed",
        Duration::from_secs(10),
        || async { titles(&app.get_json("/api/courses").await) == ["Course number 3"] },
    )
    .await;
}
