//! A replica-set election cannot be staged on one SecantusDB, but its `configureFailPoint`
//! (MongoDB's `failCommand`) can make the server answer as a primary stepping down or
//! shutting down would, or drop the connection mid-command. These tests run the real driver
//! against it: every write either succeeds once (the driver's retryable write) or gets a 503
//! with `Retry-After`; never a 500, never a duplicate, never a lost acknowledged write.

mod support;

use mongodb::bson::doc;
use reqwest::Method;
use serde_json::{json, Value};
use support::{course, MongoServer, TestApp};

async fn post(app: &TestApp, n: usize) -> reqwest::Response {
    app.admin(Method::POST, "/api/courses")
        .json(&course(n))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn step_downs_and_network_errors_are_retried_once_or_answered_503() {
    // A server of its own: fail points are server-wide.
    let server = MongoServer::start();
    let app = TestApp::builder().uri(server.uri()).spawn().await;

    // One NotWritablePrimary (a step-down), one ShutdownInProgress, one dropped connection:
    // the driver's retryable write goes again and the course exists exactly once.
    // The labels are what a 4.4+ server attaches to these codes, and what the driver reads.
    let cases: [(&str, mongodb::bson::Document); 3] = [
        (
            "NotWritablePrimary",
            doc! { "errorCode": 10107, "errorLabels": ["RetryableWriteError"] },
        ),
        (
            "ShutdownInProgress",
            doc! { "errorCode": 91, "errorLabels": ["RetryableWriteError"] },
        ),
        ("network error", doc! { "closeConnection": true }),
    ];
    for (i, (what, data)) in cases.into_iter().enumerate() {
        server.fail_next(&["insert"], 1, data).await;
        let res = post(&app, i).await;
        assert_eq!(res.status(), 201, "{what}: {:?}", res.text().await);
    }
    let listed = app.get_json("/api/courses?per_page=100").await;
    assert_eq!(listed["total"], 3, "each write exactly once: {listed}");

    // Failing twice (the write and its one retry): 503 with Retry-After, nothing written.
    for (what, data) in [
        (
            "NotWritablePrimary",
            doc! { "errorCode": 10107, "errorLabels": ["RetryableWriteError"] },
        ),
        ("network error", doc! { "closeConnection": true }),
    ] {
        server.fail_next(&["insert"], 2, data).await;
        let res = post(&app, 10).await;
        assert_eq!(res.status(), 503, "{what}");
        assert!(res.headers().contains_key("retry-after"), "{what}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["status"], 503, "{what}: {body}");
    }
    // A step-down the server did not label, on the write and its retry: still a 503.
    server
        .fail_next(&["insert"], 2, doc! { "errorCode": 189 })
        .await;
    let res = post(&app, 11).await;
    assert_eq!(res.status(), 503, "PrimarySteppedDown without a label");
    let listed = app.get_json("/api/courses?per_page=100").await;
    assert_eq!(listed["total"], 3);

    // An update and a delete through a step-down: retried, applied once.
    let id = listed["items"][0]["id"].as_str().unwrap().to_string();
    let path = format!("/api/courses/{id}");
    server
        .fail_next(
            &["update", "findAndModify"],
            1,
            doc! { "errorCode": 10107, "errorLabels": ["RetryableWriteError"] },
        )
        .await;
    let res = app
        .admin(Method::PATCH, &path)
        .json(&json!({ "price_cents": 4242 }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{:?}", res.text().await);
    let now = app.get_json(&path).await;
    assert_eq!(
        (now["price_cents"].as_i64(), now["version"].as_i64()),
        (Some(4242), Some(2))
    );
    server
        .fail_next(
            &["delete", "findAndModify"],
            1,
            doc! { "errorCode": 91, "errorLabels": ["RetryableWriteError"] },
        )
        .await;
    let res = app.admin(Method::DELETE, &path).send().await.unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(app.get(&path).await.status(), 404);
}

#[tokio::test]
async fn a_database_crash_during_writes_loses_no_acknowledged_write_and_never_answers_500() {
    let dir = std::env::temp_dir().join(format!("mc-durable-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let port = shared::testbed::free_port();
    let mut server = MongoServer::start_durable(port, &dir);
    let app = std::sync::Arc::new(TestApp::builder().uri(server.uri()).spawn().await);

    // One writer, creating courses one after another until told to stop (bounded: 400
    // writes, 90 s), keeping what each answer was.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answers = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(u16, Option<String>)>::new()));
    let writer = {
        let (app, stop, answers) = (app.clone(), stop.clone(), answers.clone());
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            for n in 0..400 {
                if stop.load(std::sync::atomic::Ordering::Acquire)
                    || started.elapsed() > std::time::Duration::from_secs(90)
                {
                    break;
                }
                let res = post(&app, 100 + n).await;
                let status = res.status().as_u16();
                let id = if status == 201 {
                    let body: Value = res.json().await.unwrap();
                    Some(body["id"].as_str().unwrap().to_string())
                } else {
                    None
                };
                answers.lock().unwrap().push((status, id));
            }
        })
    };
    let count = |status: u16| {
        answers
            .lock()
            .unwrap()
            .iter()
            .filter(|(s, _)| *s == status)
            .count()
    };
    support::wait_until_async(
        "20 acknowledged writes",
        std::time::Duration::from_secs(60),
        || async { count(201) >= 20 },
    )
    .await;
    server.crash();
    support::wait_until_async(
        "a write refused while the database is down",
        std::time::Duration::from_secs(30),
        || async { count(503) >= 1 },
    )
    .await;
    let acked_before_restart = count(201);
    let server = MongoServer::start_durable(port, &dir);
    support::wait_until_async(
        "writes acknowledged again",
        std::time::Duration::from_secs(60),
        || async { count(201) >= acked_before_restart + 10 },
    )
    .await;
    stop.store(true, std::sync::atomic::Ordering::Release);
    writer.await.unwrap();

    let answers = answers.lock().unwrap().clone();
    let unexpected: Vec<u16> = answers
        .iter()
        .map(|(s, _)| *s)
        .filter(|s| *s != 201 && *s != 503)
        .collect();
    assert!(
        unexpected.is_empty(),
        "answers other than 201 and 503: {unexpected:?}"
    );
    // Every acknowledged course is there, once; nothing is there that was not attempted.
    let client = mongodb::Client::with_uri_str(server.uri()).await.unwrap();
    let stored: Vec<mongodb::bson::Document> = {
        use futures_util::TryStreamExt;
        client
            .database(&app.database)
            .collection::<mongodb::bson::Document>("courses")
            .find(doc! {})
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap()
    };
    let stored_ids: std::collections::HashSet<String> = stored
        .iter()
        .map(|d| d.get_object_id("_id").unwrap().to_hex())
        .collect();
    assert_eq!(stored_ids.len(), stored.len());
    let acked: Vec<&String> = answers.iter().filter_map(|(_, id)| id.as_ref()).collect();
    let lost: Vec<&&String> = acked
        .iter()
        .filter(|id| !stored_ids.contains(**id))
        .collect();
    assert!(lost.is_empty(), "acknowledged and lost: {lost:?}");
    assert!(stored.len() <= answers.len(), "more courses than writes");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `name value` of an unlabelled series in a Prometheus text.
fn gauge(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        l.strip_prefix(name)?
            .strip_prefix(' ')
            .and_then(|v| v.trim().parse().ok())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_from_the_database_takes_reads_off_the_model_until_it_heals() {
    use std::time::Duration;
    let server = MongoServer::start();
    let app = TestApp::builder()
        .uri(server.uri())
        .server_selection_timeout(Duration::from_secs(1))
        .spawn()
        .await;
    app.create(course(1)).await;
    let res = app.get("/api/courses").await;
    assert_eq!(res.headers()["x-cache"], "MODEL");
    // No request may hang on the partition: each has 30 s to be answered.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let get = |path: &'static str| {
        let (http, url) = (http.clone(), app.url(path));
        async move { http.get(url).send().await.expect("answered, not hung") }
    };

    let partition = shared::testbed::Partition::cut(server.port);
    // Silence on the change stream is noticed: reads stop claiming the model is current.
    // What they get instead is the model's content marked STALE, or a 503.
    support::wait_until_async("reads off the model", Duration::from_secs(30), || async {
        let res = get("/api/courses").await;
        res.headers().get("x-cache").is_none_or(|v| v != "MODEL")
    })
    .await;
    let res = get("/api/courses").await;
    let status = res.status().as_u16();
    let source = res.headers().get("x-cache").cloned();
    assert!(
        (status == 200 && source.as_ref().is_some_and(|v| v == "STALE")) || status == 503,
        "{status} {source:?}"
    );
    let metrics = get("/metrics").await.text().await.unwrap();
    assert_eq!(
        gauge(&metrics, "course_service_read_model_following"),
        Some(0.0)
    );
    assert_eq!(gauge(&metrics, "course_service_database_up"), Some(0.0));
    assert_eq!(get("/readyz").await.status(), 503);
    let refused = http
        .post(app.url("/api/courses"))
        .bearer_auth(support::TOKEN)
        .json(&course(2))
        .send()
        .await
        .expect("a write answered, not hung");
    assert_eq!(refused.status(), 503);

    drop(partition);
    // Healed: the model follows again, and a write is read back from it.
    support::wait_until_async(
        "reads from the model again",
        Duration::from_secs(60),
        || async {
            let res = get("/api/courses").await;
            res.headers().get("x-cache").is_some_and(|v| v == "MODEL")
        },
    )
    .await;
    let created = app.create(course(3)).await;
    let listed = app.get_json("/api/courses?per_page=100").await;
    assert!(
        support::titles(&listed).contains(&created["title"].as_str().unwrap().to_string()),
        "{listed}"
    );
}
