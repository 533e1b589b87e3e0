//! Listeners and connections: accept (bounded by `limits.max_connections`), TLS handshake on
//! the https listener, then hyper-util's auto builder serves HTTP/1.1 and HTTP/2 on the same
//! socket. On shutdown the accept loops stop, every connection is told to finish its
//! in-flight requests and close, and the process waits for them, up to a bound.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::admin;
use crate::config::{ProxyConfig, UpstreamsConfig};
use crate::forward::Proxy;
use crate::headers;
use crate::metrics::{ActiveConnection, Metrics};
use crate::tls;
use crate::topology::Topology;

/// Longest wait for in-flight requests after a shutdown signal before exiting anyway.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause after a failed accept (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

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

/// Everything an accept loop shares with its connections.
struct Shared {
    proxy: Arc<Proxy>,
    builder: auto::Builder<TokioExecutor>,
    connections: Arc<Semaphore>,
    /// TLS handshakes must finish within the header read timeout too (slowloris over TLS).
    handshake_timeout: Duration,
}

/// Binds every listener, then serves until `shutdown` completes and connections drain.
pub async fn run(
    config: ProxyConfig,
    upstreams: UpstreamsConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    let bind = |addr: SocketAddr, what: &'static str| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr} ({what}): {e}"))
    };
    let http = bind(config.listen.http, "listen.http").await?;
    let https = match config.listen.https {
        Some(addr) => Some((
            bind(addr, "listen.https").await?,
            tls::server_config(&config.tls)?,
        )),
        None => None,
    };
    let admin_listener = bind(config.listen.admin, "listen.admin").await?;

    let metrics = Metrics::new();
    let topology = Topology::build(&upstreams, None, &metrics, tokio::time::Instant::now());
    let proxy = Arc::new(Proxy::new(&config, topology, metrics));
    let shared = Arc::new(Shared {
        builder: connection_builder(&config),
        connections: Arc::new(Semaphore::new(config.limits.max_connections)),
        handshake_timeout: config.timeouts.header_read,
        proxy: proxy.clone(),
    });

    let graceful = Arc::new(GracefulShutdown::new());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut loops = tokio::task::JoinSet::new();
    tracing::info!(listen = %config.listen.http, "proxy listening (http)");
    loops.spawn(accept_loop(
        http,
        None,
        Listener::Http,
        shared.clone(),
        graceful.clone(),
        stop_rx.clone(),
    ));
    if let Some((listener, tls_config)) = https {
        tracing::info!(listen = ?config.listen.https, "proxy listening (https)");
        loops.spawn(accept_loop(
            listener,
            Some(TlsAcceptor::from(tls_config)),
            Listener::Https,
            shared.clone(),
            graceful.clone(),
            stop_rx.clone(),
        ));
    }
    tracing::info!(listen = %config.listen.admin, "admin listening");
    let admin_task = tokio::spawn(admin_loop(admin_listener, proxy.clone()));

    shutdown.await;
    tracing::info!("shutting down: no new connections; draining in-flight requests");
    let _ = stop_tx.send(true);
    while loops.join_next().await.is_some() {}
    admin_task.abort();
    // The accept loops are gone, so this is the last handle; connections hold watchers only.
    let Ok(graceful) = Arc::try_unwrap(graceful) else {
        return Err("internal: graceful shutdown handle still shared".into());
    };
    match tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await {
        Ok(()) => tracing::info!("drained, exiting"),
        Err(_) => tracing::warn!(timeout = ?DRAIN_TIMEOUT, "connections still open; exiting"),
    }
    Ok(())
}

/// HTTP/1.1 and HTTP/2 with the limits of `[limits]` and `[timeouts]`.
fn connection_builder(config: &ProxyConfig) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.timeouts.header_read)
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

async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    kind: Listener,
    shared: Arc<Shared>,
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
        let client = headers::Client {
            peer,
            tls: tls.is_some(),
            trusted: shared.proxy.trusts(peer.ip()),
        };
        let shared = shared.clone();
        let tls = tls.clone();
        let watcher = graceful.watcher();
        let active = ActiveConnection::new(active.clone());
        tokio::spawn(async move {
            serve_connection(stream, tls, client, &shared, watcher).await;
            drop(active);
            drop(permit);
        });
    }
}

async fn serve_connection(
    stream: TcpStream,
    tls: Option<TlsAcceptor>,
    client: headers::Client,
    shared: &Shared,
    watcher: Watcher,
) {
    let metrics = &shared.proxy.metrics;
    let proxy = shared.proxy.clone();
    let service = service_fn(move |req: hyper::Request<Incoming>| {
        let proxy = proxy.clone();
        async move { Ok::<_, Infallible>(proxy.handle(req, client).await) }
    });
    let result = match tls {
        None => {
            let conn = shared
                .builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service);
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
                    tracing::debug!(peer = %client.peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    metrics.tls_handshakes.with_label_values(&["timeout"]).inc();
                    return;
                }
            };
            let conn = shared
                .builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service);
            watcher.watch(conn.into_owned()).await
        }
    };
    if let Err(e) = result {
        let kind = match e.downcast_ref::<hyper::Error>() {
            Some(h) if h.is_timeout() => "header_timeout",
            Some(h) if h.is_parse() || h.is_parse_too_large() => "bad_request",
            _ => "other",
        };
        metrics.connection_errors.with_label_values(&[kind]).inc();
        tracing::debug!(peer = %client.peer, error = %e, kind, "connection ended with an error");
    }
}

/// The admin listener: small, HTTP/1.1 only, not drained on shutdown.
async fn admin_loop(listener: TcpListener, proxy: Arc<Proxy>) {
    let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
    builder.http1().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
            continue;
        };
        let proxy = proxy.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let proxy = proxy.clone();
                async move { Ok::<_, Infallible>(admin::handle(&proxy, req).await) }
            });
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
