//! The read model answers every query as the database does: on a generated catalogue, after
//! the instance restarts, after the database restarts, after events were missed (a stream
//! that must be resumed, history the server no longer has), and while writes run
//! concurrently through the API and straight into the database.
//!
//! The database's answer comes from a second instance on the same database with the read
//! model and the cache off: every one of its reads is a MongoDB query.

mod support;

use std::time::Duration;

use course_service::metrics::Metrics;
use course_service::model::CourseDoc;
use course_service::seed;
use course_service::store::CourseStore;
use mongodb::bson::doc;
use reqwest::Method;
use serde_json::{json, Value};
use support::{course, wait_until_async, MongoServer, TestApp};

/// An instance answering from its read model, and one answering from the database.
struct Pair {
    model: TestApp,
    database: TestApp,
}

impl Pair {
    async fn start(uri: String, db: &str) -> Pair {
        Pair {
            model: TestApp::builder()
                .uri(uri.clone())
                .database(db)
                .spawn()
                .await,
            database: TestApp::builder()
                .uri(uri)
                .database(db)
                .without_read_model()
                .without_cache()
                .spawn()
                .await,
        }
    }

    /// `path` through both: (status, x-cache, body) of the model, and the database's body.
    async fn both(&self, path: &str) -> ((u16, String, Value), Value) {
        let res = self.model.get(path).await;
        let status = res.status().as_u16();
        let source = res
            .headers()
            .get("x-cache")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let mut body: Value = res.json().await.expect("JSON");
        // A suggestion is the model's hint beside the listing (the database path has no
        // vocabulary to offer one); the listing itself must be the same.
        if let Some(suggestion) = body.as_object_mut().and_then(|b| b.remove("suggestion")) {
            assert_eq!(
                body["total"], 0,
                "{path}: suggested {suggestion} beside a find"
            );
        }
        let db: Value = self.database.get(path).await.json().await.expect("JSON");
        ((status, source, body), db)
    }

    /// Asserts every one of `paths` is answered from the model, exactly as the database
    /// answers it.
    async fn assert_same(&self, paths: &[String]) {
        for path in paths {
            let ((status, source, model), db) = self.both(path).await;
            if status == 200 {
                assert_eq!(
                    source, "MODEL",
                    "{path} was not answered from the read model"
                );
            } else {
                assert_eq!(status, 404, "{path}: {model}");
            }
            assert_eq!(
                model, db,
                "{path}: the read model and the database disagree"
            );
        }
    }

    /// Waits until every one of `paths` is answered from the model as the database answers
    /// it (writes made straight into the database reach the model through its stream).
    async fn converge(&self, paths: &[String]) {
        for path in paths {
            wait_until_async(
                &format!("the read model to agree with the database on {path}"),
                Duration::from_secs(20),
                || async {
                    let ((status, source, model), db) = self.both(path).await;
                    (source == "MODEL" || status == 404) && model == db
                },
            )
            .await;
        }
        self.assert_same(paths).await;
    }
}

/// A direct handle on the database, for writes that bypass every instance.
async fn store(uri: &str, db: &str) -> (mongodb::Client, CourseStore) {
    let client = mongodb::Client::with_uri_str(uri).await.expect("client");
    let store = CourseStore::new(&client, db, Duration::from_secs(30), Metrics::new());
    (client, store)
}

/// Listing queries drawn (seeded) from every parameter: each sort both ways, each filter
/// and combinations, search texts long and short, with accents and in other cases, pages
/// from the first to past the last.
fn queries(n: usize, seed: u64) -> Vec<String> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let sorts = [
        "title",
        "-title",
        "created_at",
        "-created_at",
        "updated_at",
        "-updated_at",
        "price",
        "-price",
        "duration",
        "-duration",
    ];
    let searches = [
        "rust",
        "RUST",
        "cr%C3%A8me",
        "CR%C3%88ME",
        "%C3%A9tude",
        "go",
        "a",
        "tokio%20kernel",
        "%2312",
        "grace",
        "basics%20%2330",
        "no%20such%20course",
        "in%20depth",
    ];
    let tags = ["rust", "web", "cooking", "nope"];
    let levels = ["beginner", "intermediate", "advanced"];
    let mut out = vec![
        "/api/courses".to_string(),
        "/api/courses?per_page=100&page=15".to_string(),
    ];
    for _ in 0..n {
        let mut params = vec![format!("sort={}", sorts[rng.usize(..sorts.len())])];
        if rng.bool() {
            params.push(format!("q={}", searches[rng.usize(..searches.len())]));
        }
        if rng.u8(..3) == 0 {
            params.push(format!("tag={}", tags[rng.usize(..tags.len())]));
        }
        if rng.u8(..3) == 0 {
            params.push(format!("level={}", levels[rng.usize(..levels.len())]));
        }
        let per_page = [1, 7, 20, 100][rng.usize(..4)];
        let page = [1, 1, 2, 5, 40, 300][rng.usize(..6)];
        params.push(format!("per_page={per_page}&page={page}"));
        out.push(format!("/api/courses?{}", params.join("&")));
    }
    out
}

/// A few course paths, including one that does not exist.
fn course_paths(docs: &[CourseDoc]) -> Vec<String> {
    let mut paths: Vec<String> = docs
        .iter()
        .step_by(97)
        .map(|d| format!("/api/courses/{}", d.id.to_hex()))
        .collect();
    paths.push("/api/courses/0123456789abcdef01234567".into());
    paths
}

#[tokio::test]
async fn every_query_is_answered_as_the_database_answers_it() {
    let mongo = support::mongo();
    let db = support::unique_db("model");
    let (_client, direct) = store(&mongo.uri(), &db).await;
    let docs = seed::synthetic(1500, 7);
    seed::load_synthetic(&direct, docs.clone()).await.unwrap();
    let pair = Pair::start(mongo.uri(), &db).await;
    pair.assert_same(&queries(120, 1)).await;
    pair.assert_same(&course_paths(&docs)).await;

    // An instance that starts later loads the same catalogue.
    drop(pair);
    let pair = Pair::start(mongo.uri(), &db).await;
    pair.assert_same(&queries(30, 2)).await;
}

#[tokio::test]
async fn concurrent_writes_through_the_api_and_into_the_database_are_followed() {
    let mongo = support::mongo();
    let db = support::unique_db("model");
    let (_client, direct) = store(&mongo.uri(), &db).await;
    let docs = seed::synthetic(600, 11);
    seed::load_synthetic(&direct, docs.clone()).await.unwrap();
    let pair = Pair::start(mongo.uri(), &db).await;

    // Four writers through the instance (create, then update or delete what they created),
    // each reading its own write back at once; one writer straight into the database.
    let writers = (0..4).map(|w| {
        let app = &pair.model;
        async move {
            for i in 0..8 {
                let created = app.create(course(1000 * w + i)).await;
                let id = created["id"].as_str().unwrap().to_string();
                let path = format!("/api/courses/{id}");
                assert_eq!(app.get(&path).await.status(), 200, "read your write");
                if i % 2 == 0 {
                    let res = app.admin(Method::DELETE, &path).send().await.unwrap();
                    assert_eq!(res.status(), 204);
                    assert_eq!(app.get(&path).await.status(), 404, "read your delete");
                } else {
                    let res = app
                        .admin(Method::PATCH, &path)
                        .json(&json!({ "price_cents": 4242, "tags": ["patched"] }))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(res.status(), 200);
                    let shown = app.get_json(&path).await;
                    assert_eq!(shown["price_cents"], 4242, "read your update");
                }
            }
        }
    });
    let courses = direct.clone();
    let behind_its_back = async move {
        let raw = mongodb::Client::with_uri_str(support::mongo().uri())
            .await
            .unwrap()
            .database(&db)
            .collection::<mongodb::bson::Document>("courses");
        for (i, doc) in docs.iter().take(40).enumerate() {
            if i % 3 == 0 {
                raw.delete_one(doc! { "_id": doc.id }).await.unwrap();
            } else {
                raw.update_one(
                    doc! { "_id": doc.id },
                    doc! { "$set": { "title": format!("Renamed {i}"), "title_key": format!("renamed {i}") },
                           "$inc": { "version": 1_i64 } },
                )
                .await
                .unwrap();
            }
        }
        seed::load_synthetic(&courses, seed::synthetic(650, 11))
            .await
            .unwrap();
    };
    futures_util::future::join(futures_util::future::join_all(writers), behind_its_back).await;

    let mut paths = queries(40, 3);
    paths.extend([
        "/api/courses?tag=patched&sort=price".to_string(),
        "/api/courses?q=renamed&sort=title&per_page=100".to_string(),
        "/api/courses?q=course%20number&per_page=100".to_string(),
    ]);
    pair.converge(&paths).await;
}

/// A database server of its own (fail points are server-wide) holding `count` generated
/// courses, and the database's name.
async fn own_server_with(count: usize, generator_seed: u64) -> (MongoServer, String) {
    let server = MongoServer::start();
    let db = support::unique_db("model");
    let (_client, direct) = store(&server.uri(), &db).await;
    seed::load_synthetic(&direct, seed::synthetic(count, generator_seed))
        .await
        .unwrap();
    (server, db)
}

async fn metric(app: &TestApp, line_prefix: &str) -> f64 {
    let text = app.get("/metrics").await.text().await.unwrap();
    text.lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn missed_events_are_resumed_or_reloaded_never_lost() {
    let (server, db) = own_server_with(300, 5).await;
    let pair = Pair::start(server.uri(), &db).await;
    let loads = |reason: &'static str| {
        let app = &pair.model;
        async move {
            metric(
                app,
                &format!("course_service_read_model_loads_total{{reason=\"{reason}\"}}"),
            )
            .await
        }
    };
    assert_eq!(loads("start").await, 1.0);

    // The connection drops under the stream (resumable): it is resumed after its last
    // event, and the writes made meanwhile arrive; nothing is loaded again.
    server
        .fail_next(&["getMore"], 2, doc! { "closeConnection": true })
        .await;
    for i in 0..5 {
        pair.database.create(course(i)).await;
    }
    let paths = vec![
        "/api/courses?q=course%20number&sort=title".to_string(),
        "/api/courses?sort=-updated_at&per_page=50".to_string(),
    ];
    pair.converge(&paths).await;
    assert_eq!(loads("history_lost").await, 0.0);

    // The server no longer has the history after the token (ChangeStreamHistoryLost): the
    // model is loaded again, and the writes it could not follow are in it.
    server
        .fail_next(&["getMore"], 1, doc! { "errorCode": 286 })
        .await;
    for i in 5..10 {
        pair.database.create(course(i)).await;
    }
    pair.converge(&paths).await;
    wait_until_async("a reload", Duration::from_secs(10), || async {
        loads("history_lost").await >= 1.0
    })
    .await;
    pair.converge(&queries(20, 4)).await;
}

#[tokio::test]
async fn a_database_restart_is_followed_through() {
    let dir = std::env::temp_dir().join(format!("mc-model-{}", support::unique_db("d")));
    let port = support::free_port();
    let mut server = MongoServer::start_durable(port, &dir);
    let db = support::unique_db("model");
    let (_client, direct) = store(&server.uri(), &db).await;
    seed::load_synthetic(&direct, seed::synthetic(200, 9))
        .await
        .unwrap();
    let pair = Pair::start(server.uri(), &db).await;
    pair.assert_same(&queries(10, 5)).await;

    server.stop();
    // While the database is away the model's catalogue is served, marked stale.
    wait_until_async("a stale answer", Duration::from_secs(20), || async {
        let res = pair.model.get("/api/courses").await;
        res.status() == 200 && res.headers()["x-cache"] == "STALE"
    })
    .await;
    // Having found the database unreachable, the instance does not ask it again for every
    // read (each asking would wait out server selection) until its model follows again.
    let finds = || {
        metric(
            &pair.model,
            "course_service_db_operation_duration_seconds_count{op=\"find\"}",
        )
    };
    let before = finds().await;
    for path in [
        "/api/courses",
        "/api/courses?sort=title",
        "/api/courses?q=rust",
    ] {
        let res = pair.model.get(path).await;
        assert_eq!(res.status(), 200, "{path}");
        assert_eq!(res.headers()["x-cache"], "STALE", "{path}");
    }
    assert_eq!(finds().await, before, "the database was asked again");
    let server = MongoServer::start_durable(port, &dir);
    for i in 0..5 {
        wait_until_async(
            "a write after the restart",
            Duration::from_secs(20),
            || async {
                pair.database
                    .admin(Method::POST, "/api/courses")
                    .json(&course(i))
                    .send()
                    .await
                    .unwrap()
                    .status()
                    == 201
            },
        )
        .await;
    }
    pair.converge(&queries(15, 6)).await;
    drop(pair);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A create, an update and a delete through one instance are served by the others from
/// their read models, with the memory cache and with Redis.
async fn writes_are_seen_everywhere(apps: &[TestApp]) {
    let (a, others) = apps.split_first().unwrap();
    let created = a.create(course(1)).await;
    let path = format!("/api/courses/{}", created["id"].as_str().unwrap());
    for b in others {
        wait_until_async("the new course listed", Duration::from_secs(5), || async {
            support::titles(&b.get_json("/api/courses").await) == ["Course number 1"]
        })
        .await;
        assert_eq!(b.get(&path).await.headers()["x-cache"], "MODEL");
    }
    let res = a
        .admin(Method::PATCH, &path)
        .json(&json!({ "price_cents": 5 }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    for b in others {
        wait_until_async("the update served", Duration::from_secs(5), || async {
            b.get_json(&path).await["price_cents"] == 5
        })
        .await;
    }
    let res = a.admin(Method::DELETE, &path).send().await.unwrap();
    assert_eq!(res.status(), 204);
    for b in others {
        wait_until_async("the delete served", Duration::from_secs(5), || async {
            b.get(&path).await.status() == 404
        })
        .await;
        assert_eq!(b.get_json("/api/courses").await["total"], 0);
    }
}

#[tokio::test]
async fn a_write_through_one_instance_is_served_by_every_read_model() {
    let db = support::unique_db("fresh");
    let mut apps = Vec::new();
    for _ in 0..3 {
        apps.push(TestApp::builder().database(&db).spawn().await);
    }
    writes_are_seen_everywhere(&apps).await;

    let redis = support::RedisServer::start();
    let db = support::unique_db("rfresh");
    let mut apps = Vec::new();
    for _ in 0..3 {
        apps.push(
            TestApp::builder()
                .database(&db)
                .redis(redis.url())
                .spawn()
                .await,
        );
    }
    writes_are_seen_everywhere(&apps).await;
}

#[tokio::test]
async fn a_load_waits_out_a_busy_database_instead_of_starting_over() {
    // More courses than one batch of the load (2000), so the load asks for a second one, and
    // that answer is held back 7 s: past a change stream's silence bound (5.5 s), as a server
    // busy with several loads can be.
    let (server, db) = own_server_with(2500, 6).await;
    server
        .fail_next(
            &["getMore"],
            1,
            doc! { "blockConnection": true, "blockTimeMS": 7000 },
        )
        .await;
    // Without the cache, the load's is the only `getMore` (the model's stream is not read
    // until the load is done). `spawn` waits until the model follows.
    let app = TestApp::builder()
        .uri(server.uri())
        .database(&db)
        .without_cache()
        .spawn()
        .await;
    let metrics = app.get("/metrics").await.text().await.unwrap();
    let given_up: Vec<&str> = metrics
        .lines()
        .filter(|l| {
            l.starts_with("course_service_db_operation_errors_total") && l.contains(r#"op="scan""#)
        })
        .collect();
    assert!(given_up.is_empty(), "the load gave up: {given_up:?}");
    assert_eq!(
        metric(
            &app,
            r#"course_service_read_model_loads_total{reason="start"}"#
        )
        .await,
        1.0
    );
    let res = app.get("/api/courses?per_page=1").await;
    assert_eq!(res.headers()["x-cache"], "MODEL");
    let page: Value = res.json().await.unwrap();
    assert_eq!(page["total"], 2500);
}

/// `loads_total{reason}` of `app`.
async fn loads(app: &TestApp, reason: &str) -> f64 {
    metric(
        app,
        &format!("course_service_read_model_loads_total{{reason=\"{reason}\"}}"),
    )
    .await
}

/// A directory of its own for snapshots, removed when dropped.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let dir = std::env::temp_dir().join(format!("mc-snapshot-{}", support::unique_db("s")));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn wait_for_file(path: &std::path::Path) {
    wait_until_async(
        &format!("a snapshot at {}", path.display()),
        Duration::from_secs(20),
        || async { path.exists() },
    )
    .await;
}

#[tokio::test]
async fn an_instance_started_again_takes_up_from_its_snapshot_and_replays_what_it_missed() {
    let mongo = support::mongo();
    let db = support::unique_db("snap");
    let (client, direct) = store(&mongo.uri(), &db).await;
    let docs = seed::synthetic(1500, 11);
    seed::load_synthetic(&direct, docs.clone()).await.unwrap();
    let scratch = Scratch::new();
    let path = scratch.path("catalogue.snapshot");

    // The first instance loads from the database and writes its snapshot once it follows.
    let first = TestApp::builder()
        .uri(mongo.uri())
        .database(&db)
        .snapshot(&path)
        .spawn()
        .await;
    assert_eq!(loads(&first, "start").await, 1.0);
    wait_for_file(&path).await;
    let written = r#"course_service_read_model_snapshots_total{result="written"}"#;
    wait_until_async("the snapshot counted", Duration::from_secs(5), || async {
        metric(&first, written).await == 1.0
    })
    .await;
    drop(first);

    // Changes the snapshot cannot hold: made straight into the database after it.
    let database = TestApp::builder()
        .uri(mongo.uri())
        .database(&db)
        .without_read_model()
        .without_cache()
        .spawn()
        .await;
    let mut changed = Vec::new();
    for i in 0..3 {
        let created = database.create(course(100 + i)).await;
        changed.push(format!("/api/courses/{}", created["id"].as_str().unwrap()));
    }
    let raw = client
        .database(&db)
        .collection::<mongodb::bson::Document>("courses");
    let updated = docs[0].id;
    raw.update_one(
        doc! { "_id": updated },
        doc! { "$set": { "title": "Retitled while the instance was away",
                  "title_key": "retitled while the instance was away" },
        "$inc": { "version": 1_i64 } },
    )
    .await
    .unwrap();
    let deleted = docs[1].id;
    raw.delete_one(doc! { "_id": deleted }).await.unwrap();
    changed.push(format!("/api/courses/{}", updated.to_hex()));
    changed.push(format!("/api/courses/{}", deleted.to_hex()));
    changed.push("/api/courses?q=retitled".into());

    // Started again: from the snapshot, not the database, and with every change since.
    let pair = Pair {
        model: TestApp::builder()
            .uri(mongo.uri())
            .database(&db)
            .snapshot(&path)
            .spawn()
            .await,
        database,
    };
    assert_eq!(loads(&pair.model, "snapshot").await, 1.0);
    assert_eq!(loads(&pair.model, "start").await, 0.0);
    pair.converge(&changed).await;
    pair.assert_same(&queries(60, 12)).await;
    assert_eq!(
        pair.model.get(&changed[4]).await.status(),
        404,
        "a course deleted while the instance was away is gone"
    );

    // A snapshot cut short is not used: the catalogue is loaded from the database.
    let cut = scratch.path("cut.snapshot");
    let whole = std::fs::read(&path).unwrap();
    std::fs::write(&cut, &whole[..whole.len() * 2 / 3]).unwrap();
    let from_cut = Pair {
        model: TestApp::builder()
            .uri(mongo.uri())
            .database(&db)
            .snapshot(&cut)
            .spawn()
            .await,
        database: pair.database,
    };
    assert_eq!(loads(&from_cut.model, "snapshot").await, 0.0);
    assert_eq!(loads(&from_cut.model, "start").await, 1.0);
    from_cut.assert_same(&queries(20, 13)).await;

    // Nor is one of another collection.
    let other = support::unique_db("snap");
    let (_client, other_direct) = store(&mongo.uri(), &other).await;
    seed::load_synthetic(&other_direct, seed::synthetic(200, 14))
        .await
        .unwrap();
    let foreign = scratch.path("foreign.snapshot");
    std::fs::write(&foreign, &whole).unwrap();
    let app = TestApp::builder()
        .uri(mongo.uri())
        .database(&other)
        .snapshot(&foreign)
        .spawn()
        .await;
    assert_eq!(loads(&app, "snapshot").await, 0.0);
    assert_eq!(loads(&app, "start").await, 1.0);
    assert_eq!(app.get_json("/api/courses?per_page=1").await["total"], 200);
}

#[tokio::test]
async fn a_snapshot_whose_history_the_server_no_longer_has_is_passed_over_for_a_load() {
    let (server, db) = own_server_with(400, 15).await;
    let scratch = Scratch::new();
    let path = scratch.path("catalogue.snapshot");
    let first = TestApp::builder()
        .uri(server.uri())
        .database(&db)
        .without_cache()
        .snapshot(&path)
        .spawn()
        .await;
    wait_for_file(&path).await;
    for i in 0..4 {
        first.create(course(200 + i)).await;
    }
    drop(first);

    // The server refuses to resume after the snapshot's token (its history is gone).
    server
        .fail_next(&["aggregate"], 1, doc! { "errorCode": 286 })
        .await;
    let model = TestApp::builder()
        .uri(server.uri())
        .database(&db)
        .without_cache()
        .snapshot(&path)
        .spawn()
        .await;
    assert_eq!(loads(&model, "snapshot").await, 0.0);
    assert_eq!(loads(&model, "start").await, 1.0);
    let pair = Pair {
        model,
        database: TestApp::builder()
            .uri(server.uri())
            .database(&db)
            .without_read_model()
            .without_cache()
            .spawn()
            .await,
    };
    assert_eq!(
        pair.model.get_json("/api/courses?per_page=1").await["total"],
        404
    );
    pair.assert_same(&queries(30, 16)).await;
}

#[tokio::test]
async fn a_snapshot_that_cannot_be_written_is_counted_and_reads_go_on_from_the_model() {
    let mongo = support::mongo();
    let db = support::unique_db("snap");
    let (_client, direct) = store(&mongo.uri(), &db).await;
    seed::load_synthetic(&direct, seed::synthetic(50, 17))
        .await
        .unwrap();
    let scratch = Scratch::new();
    // Its directory would be where a file is.
    let blocked = scratch.path("a-file");
    std::fs::write(&blocked, "").unwrap();
    let app = TestApp::builder()
        .uri(mongo.uri())
        .database(&db)
        .snapshot(&blocked.join("catalogue.snapshot"))
        .spawn()
        .await;
    let failed = r#"course_service_read_model_snapshots_total{result="failed"}"#;
    wait_until_async(
        "the failed snapshot counted",
        Duration::from_secs(10),
        || async { metric(&app, failed).await == 1.0 },
    )
    .await;
    let res = app.get("/api/courses?per_page=1").await;
    assert_eq!(res.headers()["x-cache"], "MODEL");
    assert_eq!(res.json::<Value>().await.unwrap()["total"], 50);
}

#[tokio::test]
async fn an_instance_started_from_a_snapshot_follows_while_writes_keep_coming() {
    let mongo = support::mongo();
    let db = support::unique_db("snap");
    let (_client, direct) = store(&mongo.uri(), &db).await;
    let mut docs = seed::synthetic(600, 19);
    let later = docs.split_off(300);
    seed::load_synthetic(&direct, docs).await.unwrap();
    let scratch = Scratch::new();
    let path = scratch.path("catalogue.snapshot");
    let first = TestApp::builder()
        .uri(mongo.uri())
        .database(&db)
        .snapshot(&path)
        .spawn()
        .await;
    wait_for_file(&path).await;
    drop(first);

    // Events for the next instance to replay, then writes that keep coming (one every 20 ms,
    // for at most 20 s): the stream is never empty while they last.
    let mut later = later.into_iter();
    seed::load_synthetic(&direct, later.by_ref().take(30).collect())
        .await
        .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (direct, stop) = (direct.clone(), stop.clone());
        tokio::spawn(async move {
            let end = std::time::Instant::now() + Duration::from_secs(20);
            for doc in later {
                if stop.load(std::sync::atomic::Ordering::Acquire)
                    || std::time::Instant::now() > end
                {
                    break;
                }
                seed::load_synthetic(&direct, vec![doc]).await.unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    // `spawn` returns once the model follows.
    let model = TestApp::builder()
        .uri(mongo.uri())
        .database(&db)
        .snapshot(&path)
        .spawn()
        .await;
    assert!(
        !writer.is_finished(),
        "the model followed only once the writes stopped"
    );
    stop.store(true, std::sync::atomic::Ordering::Release);
    writer.await.unwrap();
    assert_eq!(loads(&model, "snapshot").await, 1.0);
    let pair = Pair {
        model,
        database: TestApp::builder()
            .uri(mongo.uri())
            .database(&db)
            .without_read_model()
            .without_cache()
            .spawn()
            .await,
    };
    pair.converge(&queries(20, 20)).await;
}
