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

use bytes::BytesMut;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;

use crate::access_log::AccessLog;
use crate::admin;
use crate::checker::HealthChecker;
use crate::config::{ProxyConfig, UpstreamsConfig};
use crate::forward::{upstream_connections, Proxy};
use crate::front::{http1, http2, Prefixed};
use crate::headers;
use crate::metrics::{ActiveConnection, Metrics};
use crate::reload::{self, Reloader};
use crate::tls;
use crate::topology::Topology;
use crate::upgrade;

/// Longest wait for in-flight requests after a shutdown signal before exiting anyway.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause after a failed accept (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);
/// The first read buffer of a client connection.
const FIRST_READ: usize = 8 * 1024;

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
    /// hyper's HTTP/2 server, for clients that speak it.
    h2: http2::Builder,
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
    // While this is the only thread: see `fds` for why the table is sized now. Each client
    // connection may hold an upstream one, plus idle pooled ones and the listeners.
    let needed = 2 * config.limits.max_connections as u64;
    let fds = crate::fds::prepare(needed + 1024);
    if fds.limit < needed {
        tracing::warn!(
            limit = fds.limit,
            max_connections = config.limits.max_connections,
            "the open-files limit is below what limits.max_connections may need (about twice \
             as many, one for the client and one for the upstream); raise it (ulimit -n, or \
             LimitNOFILE= in the systemd unit) or lower max_connections"
        );
    }
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
    // Sockets handed over by the process this one replaces (see `upgrade`), else bound here.
    let relauncher = upgrade::Relauncher::capture();
    let mut inherited = upgrade::Inherited::from_env()?;
    let mut listen = |name: &str, addr: SocketAddr, field: &str, backlog: u32| match inherited
        .take(name, addr)
    {
        Some(socket) => Ok(socket),
        None => bind(addr, field, backlog),
    };
    let metrics = Metrics::new();
    let backlog = u32::try_from(config.limits.max_connections).unwrap_or(u32::MAX);
    let http = listen("http", config.listen.http, "listen.http", backlog)?;
    let mut certificates = None;
    let https = match config.listen.https {
        Some(addr) => {
            let socket = listen("https", addr, "listen.https", backlog)?;
            let (tls_config, certs) = tls::server_config(
                &config.tls,
                metrics.tls_certificate_reloads.clone(),
                metrics.tls_certificate_not_after(),
            )?;
            certificates = Some(certs);
            Some((socket, TlsAcceptor::from(tls_config)))
        }
        None => None,
    };
    let admin_socket = listen("admin", config.listen.admin, "listen.admin", ADMIN_BACKLOG)?;
    let admin_handover = admin_socket
        .try_clone()
        .map_err(|e| format!("listen.admin: {e}"))?;
    let admin_listener =
        TcpListener::from_std(admin_socket).map_err(|e| format!("listen.admin: {e}"))?;

    let topology = Topology::build(&upstreams, None, &metrics, tokio::time::Instant::now());
    let access_log = AccessLog::start(&config.access_log, metrics.access_log_lines.clone())?;
    let proxy = Arc::new(Proxy::new(&config, topology, metrics, access_log));
    let checker = HealthChecker::new();
    checker.sync(&proxy.topology.load());
    let reloader = Arc::new(Reloader::new(
        proxy.clone(),
        checker,
        config.upstreams_file.clone(),
        certificates,
    ));
    // Watch before serving, so no edit made from here on is missed.
    let mut watch_tasks = Vec::new();
    match reload::watch_file(reloader.clone()) {
        Ok(watching) => watch_tasks.push(tokio::spawn(watching)),
        Err(e) => {
            tracing::warn!(error = %e, "file watching unavailable; reload with SIGHUP or POST /admin/reload");
        }
    }
    if let Some(certs) = reloader.certificates().cloned() {
        let files = certs.files().clone();
        match reload::watch_files(&[&files.cert, &files.key], move || {
            let _ = certs.reload("file");
        }) {
            Ok(watching) => watch_tasks.push(tokio::spawn(watching)),
            Err(e) => {
                tracing::warn!(error = %e, "certificate watching unavailable; reload with SIGHUP or POST /admin/reload");
            }
        }
    }
    let shared = Arc::new(Shared {
        h2: http2::builder(&config),
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
                    .on_thread_park(crate::batch::parking)
                    .on_thread_unpark(crate::batch::unparked)
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
    let upgrade_task = match relauncher {
        Ok(relauncher) => Some(tokio::spawn(upgrade_on_sigusr2(
            relauncher,
            shared.clone(),
            admin_handover,
        ))),
        Err(e) => {
            tracing::warn!(error = %e, "binary upgrade (SIGUSR2) unavailable");
            None
        }
    };
    upgrade::serving(config.pid_file.as_deref());
    let access = Arc::new(admin::Access::from_env());
    let admin_task = tokio::spawn(admin_loop(
        admin_listener,
        proxy.clone(),
        reloader.clone(),
        access,
    ));
    let sighup_task = tokio::spawn(reload::on_sighup(hup, reloader.clone()));
    let usr1_task = tokio::spawn(reopen_on_sigusr1(proxy.clone()));

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
    usr1_task.abort();
    // The workers have flushed their lines: the log thread writes them out.
    proxy.access_log.close(Duration::from_secs(2));
    if let Some(task) = upgrade_task {
        task.abort();
    }
    for task in watch_tasks {
        task.abort();
    }
    match drained {
        Ok(()) => tracing::info!("drained, exiting"),
        Err(_) => tracing::warn!(timeout = ?DRAIN_TIMEOUT, "connections still open; exiting"),
    }
    Ok(())
}

/// On every SIGUSR2, starts the binary again with this process's sockets (see `upgrade`);
/// the new process sends SIGTERM once it serves, and this one drains. A new process that
/// exits first failed: this one goes on serving.
async fn upgrade_on_sigusr2(
    relauncher: upgrade::Relauncher,
    shared: Arc<Shared>,
    admin: std::net::TcpListener,
) {
    let Ok(mut usr2) =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined2())
    else {
        tracing::warn!("cannot listen for SIGUSR2; binary upgrade unavailable");
        return;
    };
    while usr2.recv().await.is_some() {
        let mut sockets = vec![("http", &shared.http), ("admin", &admin)];
        if let Some((https, _)) = &shared.https {
            sockets.push(("https", https));
        }
        match relauncher.start(&sockets) {
            Ok(mut child) => {
                tracing::info!(
                    pid = child.id(),
                    "SIGUSR2: started the new process; it takes over once it serves"
                );
                // Until it tells this process to stop (SIGTERM), a new process that exits
                // has failed.
                let status = child.wait().await;
                tracing::error!(
                    ?status,
                    "upgrade failed: the new process exited; still serving"
                );
            }
            Err(e) => tracing::error!(error = %e, "upgrade failed; still serving"),
        }
    }
}

/// Reopens the access log on every SIGUSR1 (logrotate's `postrotate`).
async fn reopen_on_sigusr1(proxy: Arc<Proxy>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut usr1) = signal(SignalKind::user_defined1()) else {
        tracing::warn!("cannot listen for SIGUSR1; the access log is not reopened on it");
        return;
    };
    while usr1.recv().await.is_some() {
        proxy.access_log.reopen();
    }
}

/// Connections the kernel may hold for the admin listener before it accepts them.
const ADMIN_BACKLOG: u32 = 128;

/// A non-blocking listening socket, registered with no runtime yet: each worker registers
/// its own duplicate with its own runtime.
///
/// `backlog` is how many connections the kernel completes and holds while the workers are
/// busy (it caps it at `net.core.somaxconn`). The client listeners take
/// `limits.max_connections`, as HAProxy takes `maxconn`: with the 128 that `std` uses, a
/// burst of new connections overflows the queue, the kernel drops their handshakes, and each
/// waits for a TCP retransmission (200 ms, or 1 s for a SYN) before its first request.
fn bind(addr: SocketAddr, field: &str, backlog: u32) -> Result<std::net::TcpListener, String> {
    let cannot = |e: std::io::Error| format!("cannot listen on {addr} ({field}): {e}");
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(cannot)?;
    socket.set_reuseaddr(true).map_err(cannot)?;
    // Every accepted socket inherits it on Linux, which saves a `setsockopt` per connection.
    socket.set_nodelay(true).map_err(cannot)?;
    socket.bind(addr).map_err(cannot)?;
    let listener = socket
        .listen(backlog)
        .and_then(TcpListener::into_std)
        .map_err(cannot)?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("{field}: {e}"))?;
    Ok(listener)
}

/// One worker: accept loops on its duplicates of the listeners, its own upstream
/// connections, its own count of live client connections. Returns once they have drained.
async fn worker(shared: Arc<Shared>, stop: watch::Receiver<bool>) {
    let upstream = upstream_connections(shared.proxy.timeouts());
    let sweeper = tokio::spawn(upstream.clone().sweep());
    let log = Arc::new(shared.proxy.access_log.writer());
    let flusher = tokio::spawn(log.clone().flush_periodically());
    let ctx = Arc::new(http1::Context {
        proxy: shared.proxy.clone(),
        upstream,
        log: log.clone(),
        stop: stop.clone(),
    });
    let connections = TaskTracker::new();
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
            ctx.clone(),
            connections.clone(),
            stop.clone(),
        ));
    }
    while loops.join_next().await.is_some() {}
    // The accept loops are gone: wait for the connections to finish what they are doing.
    connections.close();
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, connections.wait()).await;
    sweeper.abort();
    flusher.abort();
    log.flush();
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    kind: Listener,
    shared: Arc<Shared>,
    ctx: Arc<http1::Context>,
    connections: TaskTracker,
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
        // Linux copies TCP_NODELAY from the listener (see `bind`): no system call here.
        #[cfg(not(target_os = "linux"))]
        let _ = stream.set_nodelay(true);
        let client = headers::Peer::new(peer, tls.is_some(), shared.proxy.trusts(peer.ip()));
        let (shared, ctx, tls) = (shared.clone(), ctx.clone(), tls.clone());
        let active = ActiveConnection::new(active.clone());
        connections.spawn(async move {
            serve_connection(stream, tls, client, &shared, &ctx).await;
            drop(active);
            drop(permit);
        });
    }
}

/// One client connection: TLS first on the https listener, then HTTP/2 if ALPN chose it (or
/// the client opened with its preface), else our HTTP/1.1.
async fn serve_connection(
    stream: TcpStream,
    tls: Option<TlsAcceptor>,
    mut client: headers::Peer,
    shared: &Shared,
    ctx: &http1::Context,
) {
    let metrics = &shared.proxy.metrics;
    let peer = client.peer;
    let mut buf = BytesMut::with_capacity(FIRST_READ);
    let result = match tls {
        None => {
            let mut stream = stream;
            match http1::serve(&mut stream, &mut buf, &client, ctx).await {
                http1::Ended::Closed => Ok(()),
                http1::Ended::Http2 => {
                    let io = TokioIo::new(Prefixed::new(buf, stream));
                    serve_http2(io, client, shared, ctx).await
                }
            }
        }
        Some(acceptor) => {
            let handshake =
                tokio::time::timeout(shared.handshake_timeout, acceptor.accept(stream)).await;
            let mut stream = match handshake {
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
            let session = stream.get_ref().1;
            client.tls_version = session.protocol_version().map(tls::version_name);
            client.alpn = match session.alpn_protocol() {
                Some(b"h2") => Some("h2"),
                Some(b"http/1.1") => Some("http/1.1"),
                _ => None,
            };
            if client.alpn == Some("h2") {
                serve_http2(TokioIo::new(stream), client, shared, ctx).await
            } else {
                match http1::serve(&mut stream, &mut buf, &client, ctx).await {
                    http1::Ended::Closed => Ok(()),
                    http1::Ended::Http2 => {
                        let io = TokioIo::new(Prefixed::new(buf, stream));
                        serve_http2(io, client, shared, ctx).await
                    }
                }
            }
        }
    };
    if let Err(e) = result {
        let kind = if e.is_parse() || e.is_parse_too_large() {
            "bad_request"
        } else {
            "other"
        };
        metrics.connection_errors.with_label_values(&[kind]).inc();
        tracing::debug!(%peer, error = %e, kind, "HTTP/2 connection ended with an error");
    }
}

async fn serve_http2<I>(
    io: I,
    client: headers::Peer,
    shared: &Shared,
    ctx: &http1::Context,
) -> Result<(), hyper::Error>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    http2::serve(
        io,
        client,
        shared.proxy.clone(),
        ctx.upstream.clone(),
        ctx.log.clone(),
        &shared.h2,
        ctx.stop.clone(),
    )
    .await
}

/// The admin listener: small, HTTP/1.1 only, not drained on shutdown.
async fn admin_loop(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    reloader: Arc<Reloader>,
    access: Arc<admin::Access>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
    builder.http1().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
            continue;
        };
        let (proxy, reloader, access) = (proxy.clone(), reloader.clone(), access.clone());
        let builder = builder.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let (proxy, reloader, access) = (proxy.clone(), reloader.clone(), access.clone());
                async move {
                    Ok::<_, Infallible>(admin::handle(&proxy, &reloader, &access, peer, req).await)
                }
            });
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_accepted_connection_has_nodelay() {
        let listener = bind("127.0.0.1:0".parse().unwrap(), "listen.http", 16).unwrap();
        let addr = listener.local_addr().unwrap();
        let listener = TcpListener::from_std(listener).unwrap();
        let _client = TcpStream::connect(addr).await.unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        // What `accept_loop` relies on instead of setting it on each connection.
        #[cfg(not(target_os = "linux"))]
        stream.set_nodelay(true).unwrap();
        assert!(
            stream.nodelay().unwrap(),
            "small answers must not wait for Nagle"
        );
    }
}
