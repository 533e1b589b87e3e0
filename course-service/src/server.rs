//! `course-service serve`: connect, listen, serve until SIGTERM, drain, exit.
//!
//! Listening sockets: a worker under `course-service cluster` is handed its sockets by the
//! supervisor (`LISTEN_FDS`, systemd's protocol): fd 3 is the instance's public port, which
//! the supervisor keeps open across worker restarts and reloads so it never refuses a
//! connection; fd 4 is a private port only the supervisor probes (`/readyz` of this worker,
//! not of whichever worker the public port hands a connection to). Run alone, `serve` binds
//! its `listen` address itself.
//!
//! Start: the public port takes traffic once the read model answers reads (or its first
//! load failed, or `read_model.startup_wait` passed), so no request meets an instance that
//! could only ask a database that needs seconds per query at 100 000 courses. Run alone, the
//! port is bound at once (a port in use is an error at once) but listens only then: until
//! then connections are refused, and a proxy sends them to another instance at once. Under
//! `cluster`, the supervisor's shared socket holds them in its backlog until this worker
//! accepts, and the supervisor's readiness probes on the private port are answered from the
//! start.
//!
//! Drain on SIGTERM (zero lost requests through a deploy):
//! 1. stop accepting on the public port (a shared socket's backlog goes to the worker that
//!    replaces this one; a socket of our own is closed, so connects are refused and a proxy
//!    retries them elsewhere), and start draining: `/healthz` and `/readyz` answer 503, and
//!    every answer says `Connection: close`;
//! 2. for [`DRAIN_NOTICE`], keep serving requests on open connections: each client learns
//!    from an answer that its connection closes, instead of racing the close of an idle
//!    connection with its next request (the proxy then drops its other idle connections to
//!    this instance);
//! 3. close idle connections and finish those in flight (up to `http.shutdown_grace`), exit.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::app::{router, AppState};
use crate::config::Config;
use crate::store;

/// How long a draining instance keeps serving its open connections (each answer saying
/// `Connection: close`) before it closes the idle ones: long enough for a busy client to
/// hear of it on every connection it uses, short against a deploy.
pub const DRAIN_NOTICE: Duration = Duration::from_secs(1);

/// The listening sockets of one instance.
pub struct Listeners {
    /// Where clients connect.
    pub public: TcpListener,
    /// The supervisor's private way in (readiness probes), when run under `cluster`.
    pub private: Option<TcpListener>,
}

impl Listeners {
    /// The sockets handed over by a supervisor (`LISTEN_FDS`), if any.
    pub fn inherited() -> Result<Option<Listeners>, String> {
        let mut passed = listenfd::ListenFd::from_env();
        let inherited =
            |i: usize, passed: &mut listenfd::ListenFd| -> Result<Option<TcpListener>, String> {
                let Some(std) = passed
                    .take_tcp_listener(i)
                    .map_err(|e| format!("listening socket {i} from the supervisor: {e}"))?
                else {
                    return Ok(None);
                };
                std.set_nonblocking(true)
                    .and_then(|()| TcpListener::from_std(std))
                    .map(Some)
                    .map_err(|e| format!("listening socket {i} from the supervisor: {e}"))
            };
        let Some(public) = inherited(0, &mut passed)? else {
            return Ok(None);
        };
        let private = inherited(1, &mut passed)?;
        Ok(Some(Listeners { public, private }))
    }
}

/// Where the public port comes from.
enum Public {
    /// The supervisor's sockets: accepting waits for the model (see the module doc's Start).
    Inherited(Listeners),
    /// Our own, bound and not listening until the model follows.
    Own(tokio::net::TcpSocket),
}

/// Connections the kernel completes and holds for a public port of our own (`std` uses 128).
const PUBLIC_BACKLOG: u32 = 1024;

/// `listen` bound, not listening yet: the port is ours, and connections are refused.
fn reserve(listen: SocketAddr) -> Result<tokio::net::TcpSocket, String> {
    let cannot = |e: io::Error| format!("cannot listen on {listen}: {e}");
    let socket = if listen.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(cannot)?;
    socket.set_reuseaddr(true).map_err(cannot)?;
    socket.bind(listen).map_err(cannot)?;
    Ok(socket)
}

/// Runs one instance until `shutdown` completes, then drains (see the module doc).
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let client = store::connect(&config)
        .await
        .map_err(|e| format!("cannot set up the MongoDB client: {e}"))?;
    // Before the load starts: a port in use is an error at once.
    let public = match Listeners::inherited()? {
        Some(listeners) => Public::Inherited(listeners),
        None => Public::Own(reserve(config.listen)?),
    };
    let state = AppState::new(&config, &client)?;
    let mut background = state.spawn_followers();
    background.push(tokio::spawn(state.clone().ensure_indexes_until_done()));
    if state.admin_token.is_none() {
        tracing::warn!("MC_ADMIN_TOKEN is not set: every write will be refused with 403");
    }
    // A worker of `cluster` (it has the private port) also stops when its supervisor is gone.
    let parent = match &public {
        Public::Inherited(l) => l
            .private
            .as_ref()
            .map(|_| std::os::unix::process::parent_id()),
        Public::Own(_) => None,
    };
    let mut shutdown = std::pin::pin!(async move {
        tokio::select! {
            () = shutdown => {}
            () = supervisor_gone(parent) => {}
        }
    });
    let model = state.model.clone();
    let startup_wait = config.startup_wait;
    let (listeners, opens) = match public {
        Public::Inherited(listeners) => (listeners, Some(model)),
        Public::Own(socket) => {
            tokio::select! {
                () = model.started(startup_wait) => {}
                () = &mut shutdown => {
                    tracing::info!("stopped while starting");
                    return stop(background, client).await;
                }
            }
            let public = socket
                .listen(PUBLIC_BACKLOG)
                .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
            let listeners = Listeners {
                public,
                private: None,
            };
            (listeners, None)
        }
    };
    tracing::info!(
        listen = %listeners.public.local_addr().map_or(config.listen, |a| a),
        private = ?listeners.private.as_ref().and_then(|l| l.local_addr().ok()),
        database = %config.database,
        read_model = if state.model.is_following() { "following" } else { "not following yet" },
        "course-service listening"
    );
    let opens = async move {
        if let Some(model) = opens {
            model.started(startup_wait).await;
        }
        tracing::info!("course-service ready to accept");
    };
    serve(listeners, state, &config, opens, shutdown).await;
    stop(background, client).await
}

/// Ends the background tasks, then the client.
async fn stop(
    background: Vec<tokio::task::JoinHandle<()>>,
    client: mongodb::Client,
) -> Result<(), String> {
    // The client's shutdown waits for every cursor (the change stream's too) to be dropped.
    for task in background {
        task.abort();
        let _ = task.await;
    }
    client.shutdown().await;
    Ok(())
}

/// Resolves when this process is no longer the child of `parent` (never for `None`). A
/// supervisor killed with SIGKILL (or by the OOM killer) cannot forward the shutdown; its
/// workers notice they were re-parented and drain, instead of holding its port so that a
/// new cluster cannot start.
async fn supervisor_gone(parent: Option<u32>) {
    let Some(parent) = parent else {
        return std::future::pending().await;
    };
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        if std::os::unix::process::parent_id() != parent {
            tracing::warn!(supervisor = parent, "the supervisor is gone; draining");
            return;
        }
    }
}

/// Serves until `shutdown`, then drains: stop accepting, [`DRAIN_NOTICE`] of
/// `Connection: close` answers, then close idle connections and wait (bounded by
/// `http.shutdown_grace`) for the requests in flight. The public listener accepts once
/// `opens` resolves; the private one at once.
pub async fn serve(
    listeners: Listeners,
    state: AppState,
    config: &Config,
    opens: impl Future<Output = ()> + Send + 'static,
    shutdown: impl Future<Output = ()> + Send,
) {
    let app = router(state.clone(), config.request_timeout);
    // Turns true when accepting stops; the servers' graceful shutdown follows the notice.
    let (stop_accepting, accepting) = watch::channel(false);
    let (close_tx, close) = watch::channel(false);
    let closing = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|closed| *closed).await;
    };
    let public = axum::serve(
        Gate {
            inner: Some(listeners.public),
            opens: Some(Box::pin(opens)),
            stop: accepting,
        },
        app.clone(),
    )
    .with_graceful_shutdown(closing(close.clone()));
    let private = listeners
        .private
        .map(|l| axum::serve(l, app.clone()).with_graceful_shutdown(closing(close.clone())));
    let servers = async move {
        let private = async move {
            if let Some(private) = private {
                let _ = private.await;
            }
        };
        let (public, ()) = tokio::join!(public, private);
        if let Err(e) = public {
            tracing::error!(error = %e, "server error");
        }
    };
    let drain = async move {
        shutdown.await;
        tracing::info!(notice = ?DRAIN_NOTICE, "draining: no new connections; answers say Connection: close");
        state.draining.store(true, Ordering::Release);
        let _ = stop_accepting.send(true);
        tokio::time::sleep(DRAIN_NOTICE).await;
        let _ = close_tx.send(true);
    };
    let grace = config.shutdown_grace;
    tokio::pin!(servers);
    tokio::select! {
        () = &mut servers => {
            // Ended without a drain (a server error, logged above).
            return;
        }
        () = drain => {}
    }
    // The servers are closing now: the grace period bounds the requests still in flight.
    match tokio::time::timeout(grace, servers).await {
        Ok(()) => tracing::info!("drained, exiting"),
        Err(_) => {
            tracing::warn!(
                ?grace,
                "in-flight requests still running after the grace period; exiting"
            )
        }
    }
}

/// The public listener, closed to new connections once `stop` turns true: it then never
/// yields again, and drops the socket (a socket shared with other workers stays open in
/// them; one of our own is closed, so new connections are refused rather than left waiting).
struct Gate {
    inner: Option<TcpListener>,
    /// Waited for before the first accept (see the module doc's Start).
    opens: Option<std::pin::Pin<Box<dyn Future<Output = ()> + Send>>>,
    stop: watch::Receiver<bool>,
}

impl axum::serve::Listener for Gate {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            let Some(inner) = &self.inner else {
                return std::future::pending().await;
            };
            let stop = &mut self.stop;
            let stopped = async move {
                let _ = stop.wait_for(|stop| *stop).await;
            };
            let accepted = if let Some(opens) = &mut self.opens {
                tokio::select! {
                    biased;
                    () = stopped => None,
                    () = opens => {
                        self.opens = None;
                        continue;
                    }
                }
            } else {
                tokio::select! {
                    biased;
                    () = stopped => None,
                    accepted = inner.accept() => Some(accepted),
                }
            };
            match accepted {
                None => self.inner = None,
                Some(Ok((io, addr))) => {
                    let _ = io.set_nodelay(true);
                    return (io, addr);
                }
                // Out of descriptors and the like: pause rather than spin.
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        match &self.inner {
            Some(l) => l.local_addr(),
            None => Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "stopped accepting",
            )),
        }
    }
}
