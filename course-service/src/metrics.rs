//! Prometheus metrics of one instance: HTTP requests by route and status, request latency,
//! database operation latency and errors. Each `AppState` owns its registry, so several
//! instances (as in tests) never share counters.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

/// Latency buckets in seconds: from a cache hit (sub-millisecond) to a request timeout.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// `http_requests_total{method,route,status}`.
    pub http_requests: IntCounterVec,
    /// `http_request_duration_seconds{method,route}`.
    pub http_duration: HistogramVec,
    /// `http_requests_in_flight`: requests being handled (a drain waits for these).
    pub http_in_flight: IntGauge,
    /// `db_operation_duration_seconds{op}`.
    pub db_duration: HistogramVec,
    /// `db_operation_errors_total{op,kind}`.
    pub db_errors: IntCounterVec,
    /// `cache_events_total{backend,event}`: hit, local_hit, miss, invalidation, stale,
    /// bypass, error.
    pub cache_events: IntCounterVec,
    /// `cache_generation`: the catalogue generation entries are keyed by (instances sharing
    /// Redis agree on it once every bump has reached them).
    pub cache_generation: IntGauge,
    /// `read_model_courses`: courses in this instance's read model.
    pub model_courses: IntGauge,
    /// `read_model_following`: 1 while the read model follows the change stream (reads are
    /// answered from it), else 0.
    pub model_following: IntGauge,
    /// `read_model_events_total{kind}`: change events applied (insert, update, replace,
    /// delete).
    pub model_events: IntCounterVec,
    /// `read_model_loads_total{reason}`: full loads, from the database (start, history_lost,
    /// invalidated) or from the snapshot on disk (snapshot).
    pub model_loads: IntCounterVec,
    /// `read_model_load_seconds`: how long the last full load took.
    pub model_load_seconds: prometheus::Gauge,
    /// `read_model_snapshots_total{result}`: snapshots of the read model begun and how each
    /// ended (written, failed).
    pub model_snapshots: IntCounterVec,
    /// `database_up`: 1 after the last database operation (or change stream open) that
    /// reached the database, 0 after one that found it unreachable.
    pub database_up: IntGauge,
    /// `cache_following`: 1 while the catalogue cache's invalidation follower is live (the
    /// cache serves), 0 while it is down (reads bypass the cache). Registered only when the
    /// cache is on.
    pub cache_following: IntGauge,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("course_service".into()), None)
            .expect("static registry prefix is valid");
        let http_requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests by method, route and status",
            ),
            &["method", "route", "status"],
        )
        .expect("valid metric");
        let http_duration = HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "HTTP request latency")
                .buckets(LATENCY_BUCKETS.to_vec()),
            &["method", "route"],
        )
        .expect("valid metric");
        let http_in_flight = IntGauge::new(
            "http_requests_in_flight",
            "HTTP requests being handled right now",
        )
        .expect("valid metric");
        let db_duration = HistogramVec::new(
            HistogramOpts::new("db_operation_duration_seconds", "MongoDB operation latency")
                .buckets(LATENCY_BUCKETS.to_vec()),
            &["op"],
        )
        .expect("valid metric");
        let db_errors = IntCounterVec::new(
            Opts::new(
                "db_operation_errors_total",
                "MongoDB operations that failed",
            ),
            &["op", "kind"],
        )
        .expect("valid metric");
        let cache_events = IntCounterVec::new(
            Opts::new(
                "cache_events_total",
                "Catalogue cache hits, misses, invalidations, stale serves and bypasses",
            ),
            &["backend", "event"],
        )
        .expect("valid metric");
        let cache_generation = IntGauge::new(
            "cache_generation",
            "The catalogue generation cached entries are keyed by",
        )
        .expect("valid metric");
        let model_courses =
            IntGauge::new("read_model_courses", "Courses in the read model").expect("valid metric");
        let model_following = IntGauge::new(
            "read_model_following",
            "1 while the read model follows the change stream and answers reads",
        )
        .expect("valid metric");
        let model_events = IntCounterVec::new(
            Opts::new(
                "read_model_events_total",
                "Change events applied to the read model",
            ),
            &["kind"],
        )
        .expect("valid metric");
        let model_loads = IntCounterVec::new(
            Opts::new(
                "read_model_loads_total",
                "Full loads of the read model (reason=\"snapshot\": from the snapshot on disk)",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let model_load_seconds = prometheus::Gauge::new(
            "read_model_load_seconds",
            "Duration of the last full load of the read model (from a snapshot: reading it)",
        )
        .expect("valid metric");
        let model_snapshots = IntCounterVec::new(
            Opts::new(
                "read_model_snapshots_total",
                "Snapshots of the read model written to disk (result=\"failed\": not written, see the log)",
            ),
            &["result"],
        )
        .expect("valid metric");
        let database_up = IntGauge::new(
            "database_up",
            "1 when the last database operation reached the database, 0 when it found it unreachable",
        )
        .expect("valid metric");
        let cache_following = IntGauge::new(
            "cache_following",
            "1 while the catalogue cache's invalidation follower is live and the cache serves",
        )
        .expect("valid metric");
        for c in [
            Box::new(cache_events.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(database_up.clone()),
            Box::new(model_courses.clone()),
            Box::new(model_following.clone()),
            Box::new(model_events.clone()),
            Box::new(model_loads.clone()),
            Box::new(model_load_seconds.clone()),
            Box::new(model_snapshots.clone()),
            Box::new(cache_generation.clone()),
            Box::new(http_requests.clone()),
            Box::new(http_duration.clone()),
            Box::new(http_in_flight.clone()),
            Box::new(db_duration.clone()),
            Box::new(db_errors.clone()),
        ] {
            registry.register(c).expect("metric registered once");
        }
        for kind in ["insert", "update", "replace", "delete"] {
            model_events.with_label_values(&[kind]);
        }
        for result in ["written", "failed"] {
            model_snapshots.with_label_values(&[result]);
        }
        Metrics {
            registry,
            http_requests,
            http_duration,
            http_in_flight,
            db_duration,
            db_errors,
            cache_events,
            cache_generation,
            model_courses,
            model_following,
            model_events,
            model_loads,
            model_load_seconds,
            model_snapshots,
            database_up,
            cache_following,
        }
    }

    /// Exports `cache_following` (the cache is on: its follower matters).
    pub fn register_cache_following(&self) {
        let _ = self
            .registry
            .register(Box::new(self.cache_following.clone()));
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
