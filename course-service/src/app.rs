//! The application: its state, its router, and the middleware every request passes through.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::time::Instant;

use crate::cache::CatalogCache;
use crate::config::Config;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::readmodel::ReadModel;
use crate::routes;
use crate::store::CourseStore;

/// Everything a handler may use; cloned per request (all fields are cheap handles).
#[derive(Clone)]
pub struct AppState {
    pub store: CourseStore,
    /// The catalogue cache; every write invalidates it.
    pub cache: CatalogCache,
    /// The catalogue in memory, answering reads while it follows the change stream.
    pub model: ReadModel,
    /// How long the last known catalogue may be served while the database is down.
    pub stale_window: Duration,
    pub metrics: Metrics,
    /// The bearer token writes must present; `None` disables writes.
    pub admin_token: Option<Arc<str>>,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Deadline of the `/readyz` database ping.
    pub ready_timeout: Duration,
    /// Set once the indexes exist; until then the instance is not ready (the unique indexes
    /// are what make duplicate slugs a 409 rather than silent duplicates).
    pub indexes_ready: Arc<AtomicBool>,
    /// Set on SIGTERM: health and readiness answer 503 and every response says
    /// `Connection: close`, so clients move their keep-alive connections elsewhere before
    /// the idle ones are closed (see `server::serve`).
    pub draining: Arc<AtomicBool>,
}

impl AppState {
    /// The state of one instance; fails only if the cache cannot be set up.
    pub fn new(config: &Config, client: &mongodb::Client) -> Result<Self, String> {
        let metrics = Metrics::new();
        Ok(AppState {
            cache: CatalogCache::new(&config.cache, &metrics)?,
            model: ReadModel::new(config.read_model, config.snapshot.clone(), &metrics),
            stale_window: config.cache.stale_window,
            store: CourseStore::new(
                client,
                &config.database,
                config.operation_timeout,
                metrics.clone(),
            ),
            metrics,
            admin_token: config.admin_token.as_deref().map(Arc::from),
            max_body_bytes: config.max_body_bytes,
            ready_timeout: config.ready_timeout,
            indexes_ready: Arc::new(AtomicBool::new(false)),
            draining: Arc::new(AtomicBool::new(false)),
        })
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    pub fn indexes_ready(&self) -> bool {
        self.indexes_ready.load(Ordering::Acquire)
    }

    /// Starts what follows the catalogue's changes for as long as the process lives: the
    /// cache's follower and the read model's.
    pub fn spawn_followers(&self) -> Vec<tokio::task::JoinHandle<()>> {
        vec![
            tokio::spawn(
                self.cache
                    .clone()
                    .follow_changes(self.store.clone(), self.model.is_enabled()),
            ),
            tokio::spawn(
                self.model
                    .clone()
                    .follow(self.store.clone(), self.cache.clone()),
            ),
        ]
    }

    /// Creates the indexes, retrying with backoff until it succeeds; the instance serves
    /// reads meanwhile and reports not ready.
    pub async fn ensure_indexes_until_done(self) {
        let mut delay = Duration::from_millis(200);
        loop {
            match self.store.ensure_indexes().await {
                Ok(()) => {
                    self.indexes_ready.store(true, Ordering::Release);
                    tracing::info!("indexes ensured");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?delay, "cannot create indexes yet");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
    }
}

/// The full router: API, web page, health, metrics, with request metrics around all of it.
pub fn router(state: AppState, request_timeout: Duration) -> Router {
    let api = Router::new()
        .route(
            "/api/courses",
            get(routes::courses::list).post(routes::courses::create),
        )
        .route("/api/openapi.json", get(crate::openapi::serve))
        .route(
            "/api/courses/{id}",
            get(routes::courses::get_one)
                .put(routes::courses::replace)
                .patch(routes::courses::patch)
                .delete(routes::courses::delete),
        )
        .route(shared::health::HEALTHZ_PATH, get(routes::health::healthz))
        .route(shared::health::READYZ_PATH, get(routes::health::readyz))
        .route("/metrics", get(routes::health::metrics))
        .route("/", get(routes::web::index))
        .route("/static/app.js", get(routes::web::script))
        .route("/static/app.css", get(routes::web::style));
    api.fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            (state.clone(), request_timeout),
            observe,
        ))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such resource; the page is at /, the API under /api/courses".into())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// One request in `http_requests_in_flight`, until dropped.
struct InFlight<'a>(&'a prometheus::IntGauge);

impl<'a> InFlight<'a> {
    fn enter(gauge: &'a prometheus::IntGauge) -> Self {
        gauge.inc();
        InFlight(gauge)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Counts and times every request by its route template (not its raw path, which would
/// explode label cardinality), and bounds it by the request timeout.
async fn observe(
    State((state, timeout)): State<(AppState, Duration)>,
    req: Request,
    next: Next,
) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let method = req.method().clone();
    let started = Instant::now();
    // A guard, so a request cancelled mid-way (client gone) is no longer counted either.
    let _in_flight = InFlight::enter(&state.metrics.http_in_flight);
    let res = match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(res) => res,
        Err(_) => ApiError::Unavailable(format!("request exceeded {timeout:?}")).into_response(),
    };
    let mut res = res;
    if state.is_draining() {
        // This connection will not be kept: the client learns it from this answer, not by
        // racing the close of an idle connection with its next request.
        res.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
    let m = &state.metrics;
    m.http_duration
        .with_label_values(&[method.as_str(), &route])
        .observe(started.elapsed().as_secs_f64());
    m.http_requests
        .with_label_values(&[method.as_str(), &route, res.status().as_str()])
        .inc();
    res
}
