//! Listeners, workers and connections.
//!
//! Thread per core, as Envoy and nginx do: each worker thread runs its own current-thread
//! tokio runtime, accepts from the shared listening sockets (the idlest worker tends to win
//! the accept), and forwards through its own upstream connection pool, so a request and its
//! upstream connection are driven by one thread with no cross-thread wake-ups. The workers
//! share the topology, endpoint state and metrics. A control thread waits for the shutdown
//! signal and serves the admin listener.
//!
//! Accept is bounded by `limits.max_connections`; the https listener does the TLS handshake
//! first; hyper-util's auto builder then serves HTTP/1.1 and HTTP/2 on the same socket. On
//! shutdown the accept loops stop, every connection is told to finish its in-flight requests
//! and close, and the process waits for them, up to a bound.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::admin;
use crate::checker::HealthChecker;
use crate::config::{ProxyConfig, UpstreamsConfig};
use crate::conn;
use crate::forward::{upstream_connections, Proxy};
use crate::headers;
use crate::metrics::{ActiveConnection, Metrics};
use crate::reload::{self, Reloader};
use crate::tls;
use crate::topology::Topology;
use crate::upstream::Connections;

/// Longest wait for in-flight requests after a shutdown signal before exiting anyway.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause after a failed accept (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);
/// hyper's own header-read timeout fires this much after ours, should ours ever not.
const HEAD_DEADLINE_BACKSTOP: Duration = Duration::from_secs(1);

/// Which listener a connection came in on (a metric label).
#[derive(Debug, Clone, Copy)]
enum Listener {
    Http,
    Https,
}

impl Listener {
    fn as_str(self) -> &'static str {
        match self {
            Listener::Http => "http",
            Listener::Https => "https",
        }
    }
}

/// What every worker shares.
struct Shared {
    proxy: Arc<Proxy>,
    builder: auto::Builder<TokioExecutor>,
    connections: Arc<Semaphore>,
    /// TLS handshakes must finish within the header read timeout too (slowloris over TLS).
    handshake_timeout: Duration,
    http: std::net::TcpListener,
    https: Option<(std::net::TcpListener, TlsAcceptor)>,
}

/// The number of worker threads: `runtime.workers`, else `TOKIO_WORKER_THREADS`, else one
/// per core.
pub fn worker_count(configured: usize) -> usize {
    if configured > 0 {
        return configured;
    }
    std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Binds every listener, starts the workers, and serves until `shutdown` completes and the
/// connections have drained. Blocks the calling thread, which becomes the control thread.
pub fn run(
    config: ProxyConfig,
    upstreams: UpstreamsConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    let control = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("proxy-control")
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    control.block_on(run_control(config, upstreams, shutdown))
}

async fn run_control(
    config: ProxyConfig,
    upstreams: UpstreamsConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    // Signal handlers go in before any socket is bound: a SIGHUP or SIGTERM sent as soon as
    // a port answers must find them, not the default action (which ends the process). The
    // shutdown future installs its handlers when first polled, so it is polled once here.
    let hup = reload::sighup();
    let mut shutdown = std::pin::pin!(shutdown);
    tokio::select! {
        biased;
        () = &mut shutdown => return Ok(()),
        () = std::future::ready(()) => {}
    }
    let http = bind(config.listen.http, "listen.http")?;
    let https = match config.listen.https {
        Some(addr) => Some((
            bind(addr, "listen.https")?,
            TlsAcceptor::from(tls::server_config(&config.tls)?),
        )),
        None => None,
    };
    let admin_listener = TcpListener::from_std(bind(config.listen.admin, "listen.admin")?)
        .map_err(|e| format!("listen.admin: {e}"))?;

    let metrics = Metrics::new();
    let topology = Topology::build(&upstreams, None, &metrics, tokio::time::Instant::now());
    let proxy = Arc::new(Proxy::new(&config, topology, metrics));
    let checker = HealthChecker::new();
    checker.sync(&proxy.topology.load());
    let reloader = Arc::new(Reloader::new(
        proxy.clone(),
        checker,
        config.upstreams_file.clone(),
    ));
    // Watch before serving, so no edit made from here on is missed.
    let watch_task = match reload::watch_file(reloader.clone()) {
        Ok(watching) => Some(tokio::spawn(watching)),
        Err(e) => {
            tracing::warn!(error = %e, "file watching unavailable; reload with SIGHUP or POST /admin/reload");
            None
        }
    };
    let shared = Arc::new(Shared {
        builder: connection_builder(&config),
        connections: Arc::new(Semaphore::new(config.limits.max_connections)),
        handshake_timeout: config.timeouts.header_read,
        proxy: proxy.clone(),
        http,
        https,
    });

    let workers = worker_count(config.runtime.workers);
    let (stop_tx, stop_rx) = watch::channel(false);
    let (done_tx, mut done_rx) = mpsc::channel::<()>(workers);
    for i in 0..workers {
        let (shared, stop, done) = (shared.clone(), stop_rx.clone(), done_tx.clone());
        std::thread::Builder::new()
            .name(format!("proxy-worker-{i}"))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                match runtime {
                    Ok(rt) => rt.block_on(worker(shared, stop)),
                    Err(e) => tracing::error!(error = %e, "cannot start a worker runtime"),
                }
                let _ = done.try_send(());
            })
            .map_err(|e| format!("cannot start worker thread: {e}"))?;
    }
    drop(done_tx);
    tracing::info!(
        http = %config.listen.http,
        https = ?config.listen.https,
        admin = %config.listen.admin,
        workers,
        "proxy listening"
    );
    let admin_task = tokio::spawn(admin_loop(admin_listener, proxy, reloader.clone()));
    let sighup_task = tokio::spawn(reload::on_sighup(hup, reloader.clone()));

    shutdown.await;
    tracing::info!("shutting down: no new connections; draining in-flight requests");
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT + Duration::from_secs(1), async {
        for _ in 0..workers {
            if done_rx.recv().await.is_none() {
                break;
            }
        }
    })
    .await;
    admin_task.abort();
    sighup_task.abort();
    if let Some(task) = watch_task {
        task.abort();
    }
    match drained {
        Ok(()) => tracing::info!("drained, exiting"),
        Err(_) => tracing::warn!(timeout = ?DRAIN_TIMEOUT, "connections still open; exiting"),
    }
    Ok(())
}

/// A non-blocking listening socket, registered with no runtime yet: each worker registers
/// its own duplicate with its own runtime.
fn bind(addr: SocketAddr, field: &str) -> Result<std::net::TcpListener, String> {
    let listener = std::net::TcpListener::bind(addr)
        .map_err(|e| format!("cannot listen on {addr} ({field}): {e}"))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("{field}: {e}"))?;
    Ok(listener)
}

/// Whether `err` came from [`conn::HeadDeadline`] giving up on a request head.
fn timed_out(err: &hyper::Error) -> bool {
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        source = e.source();
    }
    false
}

/// HTTP/1.1 and HTTP/2 with the limits of `[limits]` and `[timeouts]`.
fn connection_builder(config: &ProxyConfig) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // `conn::HeadDeadline` keeps this deadline (and answers 408); hyper's is the backstop.
        .header_read_timeout(config.timeouts.header_read + HEAD_DEADLINE_BACKSTOP)
        // hyper answers 431 when a request head does not fit.
        .max_buf_size(config.limits.max_header_bytes)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(config.limits.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(config.timeouts.idle / 2))
        .keep_alive_timeout(config.timeouts.header_read);
    builder
}

/// One worker: accept loops on its duplicates of the listeners, its own upstream client,
/// its own graceful-shutdown tracker. Returns once its connections have drained.
async fn worker(shared: Arc<Shared>, stop: watch::Receiver<bool>) {
    let upstream = upstream_connections(shared.proxy.timeouts());
    let sweeper = tokio::spawn(upstream.clone().sweep());
    let graceful = Arc::new(GracefulShutdown::new());
    let mut loops = tokio::task::JoinSet::new();
    let mut listeners = vec![(&shared.http, None, Listener::Http)];
    if let Some((l, acceptor)) = &shared.https {
        listeners.push((l, Some(acceptor.clone()), Listener::Https));
    }
    for (std_listener, tls, kind) in listeners {
        let listener = match std_listener.try_clone().map(TcpListener::from_std) {
            Ok(Ok(l)) => l,
            Ok(Err(e)) | Err(e) => {
                tracing::error!(error = %e, listener = kind.as_str(), "worker cannot use listener");
                continue;
            }
        };
        loops.spawn(accept_loop(
            listener,
            tls,
            kind,
            shared.clone(),
            upstream.clone(),
            graceful.clone(),
            stop.clone(),
        ));
    }
    while loops.join_next().await.is_some() {}
    // The accept loops are gone, so this is the last handle; connections hold watchers only.
    if let Ok(graceful) = Arc::try_unwrap(graceful) {
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await;
    }
    sweeper.abort();
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    kind: Listener,
    shared: Arc<Shared>,
    upstream: Arc<Connections>,
    graceful: Arc<GracefulShutdown>,
    mut stop: watch::Receiver<bool>,
) {
    let metrics = &shared.proxy.metrics;
    let total = metrics
        .connections_total
        .with_label_values(&[kind.as_str()]);
    let active = metrics
        .connections_active
        .with_label_values(&[kind.as_str()]);
    loop {
        // Take a connection slot before accepting: at the limit, clients wait in the backlog.
        let permit = tokio::select! {
            p = shared.connections.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = stop.changed() => return,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        total.inc();
        let _ = stream.set_nodelay(true);
        let client = Arc::new(headers::Peer::new(
            peer,
            tls.is_some(),
            shared.proxy.trusts(peer.ip()),
        ));
        let shared = shared.clone();
        let tls = tls.clone();
        let upstream = upstream.clone();
        let watcher = graceful.watcher();
        let active = ActiveConnection::new(active.clone());
        tokio::spawn(async move {
            serve_connection(stream, tls, client, &shared, upstream, watcher).await;
            drop(active);
            drop(permit);
        });
    }
}

async fn serve_connection(
    stream: TcpStream,
    tls: Option<TlsAcceptor>,
    client: Arc<headers::Peer>,
    shared: &Shared,
    upstream: Arc<Connections>,
    watcher: hyper_util::server::graceful::Watcher,
) {
    let metrics = &shared.proxy.metrics;
    let proxy = shared.proxy.clone();
    let requests = Arc::new(conn::Requests::default());
    let head_timeout = shared.proxy.timeouts().header_read;
    let tracker = requests.clone();
    let peer = client.peer;
    let service = service_fn(move |req: hyper::Request<Incoming>| {
        let (proxy, upstream, requests) = (proxy.clone(), upstream.clone(), tracker.clone());
        let client = client.clone();
        requests.start();
        async move {
            let res = proxy.handle(&upstream, req, &client).await;
            if res.status() == hyper::StatusCode::SWITCHING_PROTOCOLS {
                requests.upgrade();
            }
            Ok::<_, Infallible>(res.map(|body| conn::Tracked::new(body, requests)))
        }
    });
    let result = match tls {
        None => {
            let io = conn::HeadDeadline::new(stream, requests, head_timeout, false);
            let conn = shared
                .builder
                .serve_connection_with_upgrades(TokioIo::new(io), service);
            watcher.watch(conn.into_owned()).await
        }
        Some(acceptor) => {
            let handshake =
                tokio::time::timeout(shared.handshake_timeout, acceptor.accept(stream)).await;
            let stream = match handshake {
                Ok(Ok(s)) => {
                    metrics.tls_handshakes.with_label_values(&["ok"]).inc();
                    s
                }
                Ok(Err(e)) => {
                    metrics.tls_handshakes.with_label_values(&["error"]).inc();
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    metrics.tls_handshakes.with_label_values(&["timeout"]).inc();
                    return;
                }
            };
            let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
            let io = conn::HeadDeadline::new(stream, requests, head_timeout, h2);
            let conn = shared
                .builder
                .serve_connection_with_upgrades(TokioIo::new(io), service);
            watcher.watch(conn.into_owned()).await
        }
    };
    if let Err(e) = result {
        let kind = match e.downcast_ref::<hyper::Error>() {
            Some(h) if h.is_timeout() || timed_out(h) => "header_timeout",
            Some(h) if h.is_parse() || h.is_parse_too_large() => "bad_request",
            _ => "other",
        };
        metrics.connection_errors.with_label_values(&[kind]).inc();
        tracing::debug!(%peer, error = %e, kind, "connection ended with an error");
    }
}

/// The admin listener: small, HTTP/1.1 only, not drained on shutdown.
async fn admin_loop(listener: TcpListener, proxy: Arc<Proxy>, reloader: Arc<Reloader>) {
    let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
    builder.http1().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
            continue;
        };
        let (proxy, reloader) = (proxy.clone(), reloader.clone());
        let builder = builder.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let (proxy, reloader) = (proxy.clone(), reloader.clone());
                async move { Ok::<_, Infallible>(admin::handle(&proxy, &reloader, req).await) }
            });
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
