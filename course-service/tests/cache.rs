//! The catalogue cache, against real SecantusDB: freshness across instances through the
//! change stream, one query for concurrent misses, ETag/304 and canonical keys, stale
//! serving while the database is down and recovery when it is back.
//!
//! The cache is the read path when the read model is off, or not following (loading, its
//! stream broken): these instances run without it (`tests/readmodel.rs` covers it).

mod support;

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;
use support::{
    course, problem, titles, unique_db, wait_until_async, MongoServer, RedisServer, TestApp,
};

#[tokio::test]
async fn a_write_through_one_instance_is_seen_through_the_others_at_once() {
    let db = unique_db("fresh");
    let apps = [
        TestApp::builder()
            .without_read_model()
            .database(&db)
            .spawn()
            .await,
        TestApp::builder()
            .without_read_model()
            .database(&db)
            .spawn()
            .await,
        TestApp::builder()
            .without_read_model()
            .database(&db)
            .spawn()
            .await,
    ];
    write_is_seen_everywhere("memory", &apps).await;
}

#[tokio::test]
async fn with_redis_a_write_through_one_instance_is_seen_through_the_others_at_once() {
    let redis = RedisServer::start();
    let db = unique_db("rfresh");
    let apps = [
        TestApp::builder()
            .without_read_model()
            .database(&db)
            .redis(redis.url())
            .spawn()
            .await,
        TestApp::builder()
            .without_read_model()
            .database(&db)
            .redis(redis.url())
            .spawn()
            .await,
        TestApp::builder()
            .without_read_model()
            .database(&db)
            .redis(redis.url())
            .spawn()
            .await,
    ];
    write_is_seen_everywhere("redis", &apps).await;
}

/// A create and an update through the first app are served by all others, which had the
/// old answers cached.
async fn write_is_seen_everywhere(backend: &str, apps: &[TestApp]) {
    let (a, others) = apps.split_first().unwrap();
    for app in apps {
        app.wait_cache_ready().await;
    }
    if backend == "redis" {
        // Each follower bumped the shared generation as it connected; wait until every
        // instance has heard every bump, so the HITs below are not racing one.
        wait_until_async(
            "one generation everywhere",
            Duration::from_secs(5),
            || async {
                let first = generation(&apps[0]).await;
                for app in &apps[1..] {
                    if generation(app).await != first {
                        return false;
                    }
                }
                true
            },
        )
        .await;
    }
    for b in others {
        b.get_json("/api/courses").await;
        assert_eq!(b.get("/api/courses").await.headers()["x-cache"], "HIT");
    }
    let created = a.create(course(1)).await;
    let written = Instant::now();
    for b in others {
        wait_until_async("the new course listed", Duration::from_secs(5), || async {
            titles(&b.get_json("/api/courses").await) == ["Course number 1"]
        })
        .await;
    }
    eprintln!(
        "{backend}: a create is listed everywhere after {:?}",
        written.elapsed()
    );

    let path = format!("/api/courses/{}", created["id"].as_str().unwrap());
    for b in others {
        b.get_json(&path).await;
        assert_eq!(b.get(&path).await.headers()["x-cache"], "HIT");
    }
    let res = a
        .admin(Method::PATCH, &path)
        .json(&json!({ "price_cents": 5 }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let written = Instant::now();
    for b in others {
        wait_until_async("the update served", Duration::from_secs(5), || async {
            b.get_json(&path).await["price_cents"] == 5
        })
        .await;
    }
    eprintln!(
        "{backend}: an update is served everywhere after {:?}",
        written.elapsed()
    );
}

#[tokio::test]
async fn concurrent_misses_for_one_listing_run_one_query() {
    let app = TestApp::builder().without_read_model().spawn().await;
    app.create(course(1)).await;
    app.wait_cache_ready().await;
    twenty_misses_one_query(&app, "/api/courses?tag=testing&sort=title").await;
}

#[tokio::test]
async fn with_redis_concurrent_misses_run_one_query_and_other_instances_share_the_result() {
    let redis = RedisServer::start();
    let db = unique_db("rflight");
    // No in-process tier: every read goes to Redis.
    let spawn = || {
        TestApp::builder()
            .without_read_model()
            .database(&db)
            .redis(redis.url())
            .local_entries(0)
            .spawn()
    };
    let (a, b) = (spawn().await, spawn().await);
    a.create(course(1)).await;
    a.wait_cache_ready().await;
    b.wait_cache_ready().await;
    // Every bump so far (each follower bumps as it connects, the create bumped) has reached
    // both instances: they key entries alike.
    wait_until_async(
        "A and B to agree on the generation",
        Duration::from_secs(5),
        || async { generation(&a).await == generation(&b).await },
    )
    .await;
    let path = "/api/courses?tag=testing&sort=title";
    twenty_misses_one_query(&a, path).await;
    let finds_before = db_finds(&b).await;
    let misses_before = cache_events(&b, "miss").await;
    let res = b.get(path).await;
    assert_eq!(
        res.headers()["x-cache"],
        "HIT",
        "B finds A's entry in Redis"
    );
    assert_eq!(titles(&res.json().await.unwrap()), ["Course number 1"]);
    assert_eq!(
        db_finds(&b).await - finds_before,
        0,
        "B did not query the database"
    );
    // Without the in-process tier every read is answered by Redis itself.
    for _ in 0..5 {
        assert_eq!(b.get(path).await.headers()["x-cache"], "HIT");
    }
    assert_eq!(cache_events(&b, "miss").await, misses_before);
    assert_eq!(cache_events(&b, "local_hit").await, 0);
}

/// `course_service_cache_events_total{backend="redis",event}` of `app`.
async fn cache_events(app: &TestApp, event: &str) -> u64 {
    let text = app.get("/metrics").await.text().await.unwrap();
    let prefix =
        format!("course_service_cache_events_total{{backend=\"redis\",event=\"{event}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(u64::MAX)
}

/// 20 concurrent reads of `path` on a cold cache: all 200, one database query.
async fn twenty_misses_one_query(app: &TestApp, path: &str) {
    let finds_before = db_finds(app).await;
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let (http, url) = (app.http.clone(), app.url(path));
        set.spawn(async move { http.get(url).send().await.unwrap().status().as_u16() });
    }
    let statuses = set.join_all().await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(
        db_finds(app).await - finds_before,
        1,
        "one query for 20 misses"
    );
}

#[tokio::test]
async fn with_the_cache_disabled_every_read_goes_to_the_database() {
    let app = TestApp::builder()
        .without_read_model()
        .without_cache()
        .spawn()
        .await;
    app.create(course(1)).await;
    let before = db_finds(&app).await;
    for _ in 0..3 {
        let res = app.get("/api/courses").await;
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["x-cache"], "BYPASS");
    }
    assert_eq!(db_finds(&app).await - before, 3);
}

/// The catalogue generation `app` keys its entries with.
async fn generation(app: &TestApp) -> u64 {
    let text = app.get("/metrics").await.text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("course_service_cache_generation "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
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
    let app = TestApp::builder().without_read_model().spawn().await;
    app.create(course(1)).await;
    app.wait_cache_ready().await;
    // The change stream's echo of the create bumps the generation when it arrives, which
    // may be between the two requests: then the pair says nothing, and is asked again (at
    // the new generation the first is a miss again).
    let deadline = Instant::now() + Duration::from_secs(10);
    let (first, same) = loop {
        let before = generation(&app).await;
        let first = app.get("/api/courses?q=course&page=1").await;
        let same = app.get("/api/courses?page=1&q=course&per_page=20").await;
        if generation(&app).await == before {
            break (first, same);
        }
        assert!(
            Instant::now() < deadline,
            "the catalogue generation kept changing"
        );
    };
    assert_eq!(first.headers()["x-cache"], "MISS");
    assert_eq!(first.headers()["cache-control"], "no-cache");
    let etag = first.headers()["etag"].to_str().unwrap().to_string();
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
        .without_read_model()
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

#[tokio::test]
async fn with_redis_down_reads_and_writes_go_on_and_caching_resumes_when_it_is_back() {
    let mut redis = RedisServer::start();
    let app = TestApp::builder()
        .without_read_model()
        .redis(redis.url())
        .spawn()
        .await;
    app.create(course(1)).await;
    app.wait_cache_ready().await;
    app.get("/api/courses").await;
    assert_eq!(app.get("/api/courses").await.headers()["x-cache"], "HIT");

    redis.stop();
    // Every read answers, first from the in-process tier, then (the outage noticed) from the
    // database.
    wait_until_async(
        "reads to bypass the cache",
        Duration::from_secs(10),
        || async {
            let res = app.get("/api/courses").await;
            assert_eq!(res.status(), 200, "a Redis outage must not fail reads");
            res.headers()["x-cache"] == "BYPASS"
        },
    )
    .await;
    // Writes work and are visible at once.
    app.create(course(2)).await;
    assert_eq!(
        titles(&app.get_json("/api/courses").await),
        ["Course number 2", "Course number 1"]
    );

    let _redis = RedisServer::start_on(redis.port);
    wait_until_async("caching to resume", Duration::from_secs(20), || async {
        let res = app.get("/api/courses").await;
        res.status() == 200 && res.headers()["x-cache"] == "HIT"
    })
    .await;
    // And invalidation with it.
    app.create(course(3)).await;
    assert_eq!(titles(&app.get_json("/api/courses").await).len(), 3);
}

#[tokio::test]
async fn with_redis_hung_reads_go_to_the_database_and_caching_resumes_when_it_thaws() {
    reads_go_on_while_redis_is_silent(Silence::Frozen).await;
}

#[tokio::test]
async fn with_redis_cut_off_by_a_partition_reads_go_on_and_caching_resumes_when_it_heals() {
    reads_go_on_while_redis_is_silent(Silence::Partitioned).await;
}

/// How Redis stops answering.
enum Silence {
    /// SIGSTOP: the kernel still accepts connections and takes the bytes.
    Frozen,
    /// Every packet dropped: connects get no answer at all.
    Partitioned,
}

async fn reads_go_on_while_redis_is_silent(how: Silence) {
    let redis = RedisServer::start();
    let app = TestApp::builder()
        .without_read_model()
        .redis(redis.url())
        .spawn()
        .await;
    app.create(course(1)).await;
    app.wait_cache_ready().await;

    let partition = match how {
        Silence::Frozen => {
            redis.freeze(true);
            None
        }
        Silence::Partitioned => Some(shared::testbed::Partition::cut(redis.port)),
    };
    // Connections stay open but nothing answers: the follower's ping notices.
    wait_until_async(
        "reads to bypass the cache",
        Duration::from_secs(10),
        || async {
            let res = app.get("/api/courses?level=beginner").await;
            assert_eq!(res.status(), 200, "a hung Redis must not fail reads");
            res.headers()["x-cache"] == "BYPASS"
        },
    )
    .await;
    app.create(course(2)).await;
    assert_eq!(titles(&app.get_json("/api/courses").await).len(), 2);

    match partition {
        None => redis.freeze(false),
        Some(cut) => drop(cut),
    }
    wait_until_async("caching to resume", Duration::from_secs(20), || async {
        let res = app.get("/api/courses").await;
        res.status() == 200 && res.headers()["x-cache"] == "HIT"
    })
    .await;
    assert_eq!(titles(&app.get_json("/api/courses").await).len(), 2);
}
