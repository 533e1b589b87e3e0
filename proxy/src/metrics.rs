//! Prometheus metrics of the proxy. Label lookups cost a hash and a lock, so per-endpoint and
//! per-pool handles are resolved once when the topology is built; the request path only
//! increments atomics. Gauges that mirror endpoint state (in flight, RTT estimate) are set
//! when `/metrics` is scraped, at no cost to requests.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Request latency buckets in seconds: sub-millisecond proxying up to the request timeout.
const LATENCY_BUCKETS: &[f64] = &[
    0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0,
];

/// Why the proxy answered a request itself instead of an upstream answering it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalError {
    /// 404: no route matches the host and path.
    NoRoute,
    /// 503: the pool has no endpoint to send to.
    NoEndpoint,
    /// 502: the upstream refused or reset the connection, or sent a broken response.
    UpstreamError,
    /// 504: the upstream did not answer within the per-try or request timeout.
    UpstreamTimeout,
    /// 413: the request body is over `limits.max_body_bytes`.
    BodyTooLarge,
    /// 400: the request is malformed, or cannot be forwarded as is.
    BadRequest,
    /// 431: the request head is over `limits.max_header_bytes`.
    HeadTooLarge,
    /// 405: a method a reverse proxy does not serve (CONNECT).
    MethodNotAllowed,
    /// 408: the request head did not arrive within `timeouts.header_read`, or the client
    /// stopped sending its body for that long.
    RequestTimeout,
    /// 501: a transfer coding other than a single `chunked`, or an upgrade to a protocol
    /// the configuration does not allow.
    NotImplemented,
    /// 417: an `Expect` other than `100-continue`.
    ExpectationFailed,
}

impl LocalError {
    pub const ALL: [LocalError; 11] = [
        LocalError::NoRoute,
        LocalError::NoEndpoint,
        LocalError::UpstreamError,
        LocalError::UpstreamTimeout,
        LocalError::BodyTooLarge,
        LocalError::BadRequest,
        LocalError::HeadTooLarge,
        LocalError::MethodNotAllowed,
        LocalError::RequestTimeout,
        LocalError::NotImplemented,
        LocalError::ExpectationFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LocalError::NoRoute => "no_route",
            LocalError::NoEndpoint => "no_endpoint",
            LocalError::UpstreamError => "upstream_error",
            LocalError::UpstreamTimeout => "upstream_timeout",
            LocalError::BodyTooLarge => "body_too_large",
            LocalError::BadRequest => "bad_request",
            LocalError::HeadTooLarge => "head_too_large",
            LocalError::MethodNotAllowed => "method_not_allowed",
            LocalError::RequestTimeout => "request_timeout",
            LocalError::NotImplemented => "not_implemented",
            LocalError::ExpectationFailed => "expectation_failed",
        }
    }

    /// The status the client gets.
    pub fn status(self) -> http::StatusCode {
        use http::StatusCode as S;
        match self {
            LocalError::NoRoute => S::NOT_FOUND,
            LocalError::NoEndpoint => S::SERVICE_UNAVAILABLE,
            LocalError::UpstreamError => S::BAD_GATEWAY,
            LocalError::UpstreamTimeout => S::GATEWAY_TIMEOUT,
            LocalError::BodyTooLarge => S::PAYLOAD_TOO_LARGE,
            LocalError::BadRequest => S::BAD_REQUEST,
            LocalError::HeadTooLarge => S::REQUEST_HEADER_FIELDS_TOO_LARGE,
            LocalError::MethodNotAllowed => S::METHOD_NOT_ALLOWED,
            LocalError::RequestTimeout => S::REQUEST_TIMEOUT,
            LocalError::NotImplemented => S::NOT_IMPLEMENTED,
            LocalError::ExpectationFailed => S::EXPECTATION_FAILED,
        }
    }

    /// The one-line body the client gets.
    pub fn text(self) -> &'static str {
        match self {
            LocalError::NoRoute => "no route for this host and path\n",
            LocalError::NoEndpoint => "no upstream available; retry shortly\n",
            LocalError::UpstreamError => "upstream connection failed\n",
            LocalError::UpstreamTimeout => "upstream did not answer in time\n",
            LocalError::BodyTooLarge => "request body is larger than this proxy accepts\n",
            LocalError::BadRequest => "malformed request\n",
            LocalError::HeadTooLarge => {
                "request header fields are larger than this proxy accepts\n"
            }
            LocalError::MethodNotAllowed => "this reverse proxy does not serve CONNECT\n",
            LocalError::RequestTimeout => "request not received in time\n",
            LocalError::NotImplemented => {
                "transfer coding or upgrade not supported by this proxy\n"
            }
            LocalError::ExpectationFailed => "only Expect: 100-continue is supported\n",
        }
    }

    /// Seconds a client is told to wait before trying again, for a 503.
    pub fn retry_after(self) -> Option<&'static str> {
        (self == LocalError::NoEndpoint).then_some(NO_ENDPOINT_RETRY_AFTER)
    }
}

/// The `reason` labels of `retries_total` (see `forward::retry_reason`).
pub const RETRY_REASONS: [&str; 4] = ["connect", "reset", "timeout", "malformed"];

/// Seconds a client is told to wait when no endpoint is available.
pub const NO_ENDPOINT_RETRY_AFTER: &str = "1";

/// Every metric the proxy exports, registered in one registry.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    pub in_flight: IntGaugeVec,
    pub rtt_estimate: prometheus::GaugeVec,
    local_errors: IntCounterVec,
    pub connections_total: IntCounterVec,
    pub connections_active: IntGaugeVec,
    pub tls_handshakes: IntCounterVec,
    pub connection_errors: IntCounterVec,
    /// `upstream_ejections_total{pool,endpoint}`.
    ejections: IntCounterVec,
    /// `upstream_transitions_total{pool,endpoint,to}`.
    transitions: IntCounterVec,
    /// `upstream_state{pool,endpoint,state}`: 1 for the endpoint's current state.
    pub state: IntGaugeVec,
    /// `pool_panic_requests_total{pool}`: requests routed while no endpoint was available.
    panic_requests: IntCounterVec,
    /// `retries_total{pool,reason}`.
    retries: IntCounterVec,
    /// `retry_budget_exhausted_total{pool}`: retries not made because of the budget.
    retry_budget_exhausted: IntCounterVec,
    /// `config_reloads_total{result}`.
    pub config_reloads: IntCounterVec,
    /// `config_reload_failures_total`: reloads refused because the file was invalid.
    pub config_reload_failures: IntCounter,
    /// `access_log_lines_total{result}`: `written` (handed to the log thread) or `dropped`
    /// (the log thread was behind).
    pub access_log_lines: IntCounterVec,
    /// `tls_certificate_reloads_total{result}`.
    pub tls_certificate_reloads: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("proxy".into()), None).expect("valid prefix");
        let requests = IntCounterVec::new(
            Opts::new(
                "requests_total",
                "Requests answered by an upstream, by pool, endpoint and status class",
            ),
            &["pool", "endpoint", "class"],
        )
        .expect("valid");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "request_duration_seconds",
                "Time from receiving a request to sending response headers, by pool",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["pool"],
        )
        .expect("valid");
        let in_flight = IntGaugeVec::new(
            Opts::new("upstream_in_flight", "Requests in flight to each endpoint"),
            &["pool", "endpoint"],
        )
        .expect("valid");
        let rtt_estimate = prometheus::GaugeVec::new(
            Opts::new(
                "upstream_rtt_estimate_seconds",
                "Peak-EWMA RTT estimate of each endpoint",
            ),
            &["pool", "endpoint"],
        )
        .expect("valid");
        let local_errors = IntCounterVec::new(
            Opts::new(
                "local_responses_total",
                "Requests the proxy answered itself, by reason",
            ),
            &["reason"],
        )
        .expect("valid");
        let connections_total = IntCounterVec::new(
            Opts::new(
                "connections_total",
                "Client connections accepted, by listener",
            ),
            &["listener"],
        )
        .expect("valid");
        let connections_active = IntGaugeVec::new(
            Opts::new("connections_active", "Client connections open, by listener"),
            &["listener"],
        )
        .expect("valid");
        let tls_handshakes = IntCounterVec::new(
            Opts::new("tls_handshakes_total", "TLS handshakes, by result"),
            &["result"],
        )
        .expect("valid");
        let connection_errors = IntCounterVec::new(
            Opts::new(
                "connection_errors_total",
                "Client connections that ended in an error (header timeout, protocol error)",
            ),
            &["kind"],
        )
        .expect("valid");
        let config_reloads = IntCounterVec::new(
            Opts::new(
                "config_reloads_total",
                "Reloads of upstreams.toml, by result",
            ),
            &["result"],
        )
        .expect("valid");
        let config_reload_failures = IntCounter::new(
            "config_reload_failures_total",
            "Reloads refused because upstreams.toml was invalid",
        )
        .expect("valid");
        let ejections = IntCounterVec::new(
            Opts::new("upstream_ejections_total", "Passive ejections, by endpoint"),
            &["pool", "endpoint"],
        )
        .expect("valid");
        let transitions = IntCounterVec::new(
            Opts::new(
                "upstream_transitions_total",
                "Endpoint state changes, by the state entered",
            ),
            &["pool", "endpoint", "to"],
        )
        .expect("valid");
        let state = IntGaugeVec::new(
            Opts::new("upstream_state", "1 for each endpoint's current state"),
            &["pool", "endpoint", "state"],
        )
        .expect("valid");
        let panic_requests = IntCounterVec::new(
            Opts::new(
                "pool_panic_requests_total",
                "Requests routed across all endpoints because none was available",
            ),
            &["pool"],
        )
        .expect("valid");
        let retries = IntCounterVec::new(
            Opts::new(
                "retries_total",
                "Requests sent again to another endpoint, by why the previous try failed",
            ),
            &["pool", "reason"],
        )
        .expect("valid");
        let retry_budget_exhausted = IntCounterVec::new(
            Opts::new(
                "retry_budget_exhausted_total",
                "Retries not made because the retry budget was spent",
            ),
            &["pool"],
        )
        .expect("valid");
        let access_log_lines = IntCounterVec::new(
            Opts::new(
                "access_log_lines_total",
                "Access log lines, written or dropped because the log thread was behind",
            ),
            &["result"],
        )
        .expect("valid");
        let tls_certificate_reloads = IntCounterVec::new(
            Opts::new(
                "tls_certificate_reloads_total",
                "Reloads of the TLS certificate and key, by result",
            ),
            &["result"],
        )
        .expect("valid");
        for c in [
            Box::new(config_reloads.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(tls_certificate_reloads.clone()),
            Box::new(access_log_lines.clone()),
            Box::new(retries.clone()),
            Box::new(retry_budget_exhausted.clone()),
            Box::new(ejections.clone()),
            Box::new(transitions.clone()),
            Box::new(state.clone()),
            Box::new(panic_requests.clone()),
            Box::new(config_reload_failures.clone()),
            Box::new(requests.clone()),
            Box::new(duration.clone()),
            Box::new(in_flight.clone()),
            Box::new(rtt_estimate.clone()),
            Box::new(local_errors.clone()),
            Box::new(connections_total.clone()),
            Box::new(connections_active.clone()),
            Box::new(tls_handshakes.clone()),
            Box::new(connection_errors.clone()),
        ] {
            registry.register(c).expect("registered once");
        }
        for e in LocalError::ALL {
            local_errors.with_label_values(&[e.as_str()]);
        }
        for result in ["written", "dropped"] {
            access_log_lines.with_label_values(&[result]);
        }
        for result in ["ok", "error", "timeout"] {
            tls_handshakes.with_label_values(&[result]);
        }
        for kind in ["header_timeout", "bad_request", "other"] {
            connection_errors.with_label_values(&[kind]);
        }
        for result in ["ok", "error"] {
            tls_certificate_reloads.with_label_values(&[result]);
            config_reloads.with_label_values(&[result]);
        }
        Metrics {
            registry,
            requests,
            duration,
            in_flight,
            rtt_estimate,
            local_errors,
            connections_total,
            connections_active,
            tls_handshakes,
            connection_errors,
            config_reloads,
            config_reload_failures,
            ejections,
            transitions,
            state,
            panic_requests,
            retries,
            retry_budget_exhausted,
            access_log_lines,
            tls_certificate_reloads,
        }
    }

    /// `tls_certificate_not_after_seconds`, registered when there is an https listener (a
    /// proxy without one has no certificate to expire).
    pub fn tls_certificate_not_after(&self) -> IntGauge {
        let gauge = IntGauge::new(
            "tls_certificate_not_after_seconds",
            "When the https listener's certificate expires, Unix time",
        )
        .expect("valid");
        self.registry
            .register(Box::new(gauge.clone()))
            .expect("registered once");
        gauge
    }

    /// Handles for one endpoint of one pool.
    pub fn endpoint(&self, pool: &str, endpoint: &str) -> EndpointMetrics {
        // Every series an alert or a dashboard reads exists from the start, at 0: `rate`
        // and `increase` see the first event, not a series appearing.
        self.ejections.with_label_values(&[pool, endpoint]);
        for to in ["healthy", "unhealthy", "ejected"] {
            self.transitions.with_label_values(&[pool, endpoint, to]);
        }
        let class = |c: &str| self.requests.with_label_values(&[pool, endpoint, c]);
        EndpointMetrics {
            by_class: [
                class("1xx"),
                class("2xx"),
                class("3xx"),
                class("4xx"),
                class("5xx"),
            ],
        }
    }

    /// The latency histogram of one pool.
    pub fn pool_duration(&self, pool: &str) -> prometheus::Histogram {
        self.panic_requests.with_label_values(&[pool]);
        self.retry_budget_exhausted.with_label_values(&[pool]);
        for reason in RETRY_REASONS {
            self.retries.with_label_values(&[pool, reason]);
        }
        self.duration.with_label_values(&[pool])
    }

    pub fn ejection(&self, pool: &str, endpoint: &str) {
        self.ejections.with_label_values(&[pool, endpoint]).inc();
    }

    pub fn transition(&self, pool: &str, endpoint: &str, to: &str) {
        self.transitions
            .with_label_values(&[pool, endpoint, to])
            .inc();
    }

    /// A retry, with why the try before failed (see `forward::retry_reason`).
    pub fn retry(&self, pool: &str, reason: &str) {
        self.retries.with_label_values(&[pool, reason]).inc();
    }

    pub fn retry_budget_exhausted(&self, pool: &str) {
        self.retry_budget_exhausted.with_label_values(&[pool]).inc();
    }

    pub fn pool_panic(&self, pool: &str) {
        self.panic_requests.with_label_values(&[pool]).inc();
    }

    /// A pool's retries, retries refused by the budget, and requests routed in panic mode,
    /// so far (for the status page).
    pub fn pool_counts(&self, pool: &str) -> PoolCounts {
        PoolCounts {
            retries: RETRY_REASONS
                .iter()
                .map(|r| self.retries.with_label_values(&[pool, r]).get())
                .sum(),
            retries_refused: self.retry_budget_exhausted.with_label_values(&[pool]).get(),
            panic_requests: self.panic_requests.with_label_values(&[pool]).get(),
        }
    }

    pub fn local(&self, e: LocalError) {
        self.local_errors.with_label_values(&[e.as_str()]).inc();
    }

    /// Forgets the series of an endpoint that a reload removed.
    pub fn forget_endpoint(&self, pool: &str, endpoint: &str) {
        for c in ["1xx", "2xx", "3xx", "4xx", "5xx"] {
            let _ = self.requests.remove_label_values(&[pool, endpoint, c]);
        }
        let _ = self.in_flight.remove_label_values(&[pool, endpoint]);
        let _ = self.ejections.remove_label_values(&[pool, endpoint]);
        for state in ["healthy", "unhealthy", "ejected"] {
            let _ = self.state.remove_label_values(&[pool, endpoint, state]);
            let _ = self
                .transitions
                .remove_label_values(&[pool, endpoint, state]);
        }
        let _ = self.rtt_estimate.remove_label_values(&[pool, endpoint]);
    }

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

/// A pool's counters, as `Metrics::pool_counts` reads them.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct PoolCounts {
    pub retries: u64,
    pub retries_refused: u64,
    pub panic_requests: u64,
}

/// Pre-resolved counters of one endpoint.
#[derive(Clone)]
pub struct EndpointMetrics {
    by_class: [IntCounter; 5],
}

impl EndpointMetrics {
    /// Responses so far by status class, `1xx` to `5xx`.
    pub fn counts(&self) -> [(&'static str, u64); 5] {
        let classes = ["1xx", "2xx", "3xx", "4xx", "5xx"];
        std::array::from_fn(|i| (classes[i], self.by_class[i].get()))
    }

    pub fn response(&self, status: u16) {
        let i = usize::from(status / 100).clamp(1, 5) - 1;
        self.by_class[i].inc();
    }
}

/// A gauge that counts itself down when dropped: one open connection.
pub struct ActiveConnection(IntGauge);

impl ActiveConnection {
    pub fn new(gauge: IntGauge) -> Self {
        gauge.inc();
        ActiveConnection(gauge)
    }
}

impl Drop for ActiveConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}
