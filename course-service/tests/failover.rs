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

/// Arms `failCommand` for the next `times` commands named `commands`.
async fn fail_next(
    server: &MongoServer,
    commands: &[&str],
    times: u32,
    data: mongodb::bson::Document,
) {
    let client = mongodb::Client::with_uri_str(server.uri()).await.unwrap();
    let mut spec = doc! { "failCommands": commands.to_vec() };
    spec.extend(data);
    client
        .database("admin")
        .run_command(doc! {
            "configureFailPoint": "failCommand",
            "mode": { "times": times },
            "data": spec,
        })
        .await
        .expect("configureFailPoint (SecantusDB --enable-test-commands)");
}

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
        fail_next(&server, &["insert"], 1, data).await;
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
        fail_next(&server, &["insert"], 2, data).await;
        let res = post(&app, 10).await;
        assert_eq!(res.status(), 503, "{what}");
        assert!(res.headers().contains_key("retry-after"), "{what}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["status"], 503, "{what}: {body}");
    }
    // A step-down the server did not label, on the write and its retry: still a 503.
    fail_next(&server, &["insert"], 2, doc! { "errorCode": 189 }).await;
    let res = post(&app, 11).await;
    assert_eq!(res.status(), 503, "PrimarySteppedDown without a label");
    let listed = app.get_json("/api/courses?per_page=100").await;
    assert_eq!(listed["total"], 3);

    // An update and a delete through a step-down: retried, applied once.
    let id = listed["items"][0]["id"].as_str().unwrap().to_string();
    let path = format!("/api/courses/{id}");
    fail_next(
        &server,
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
    fail_next(
        &server,
        &["delete", "findAndModify"],
        1,
        doc! { "errorCode": 91, "errorLabels": ["RetryableWriteError"] },
    )
    .await;
    let res = app.admin(Method::DELETE, &path).send().await.unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(app.get(&path).await.status(), 404);
}
