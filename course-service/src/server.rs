//! `course-service serve`: connect, listen, serve until SIGTERM, drain, exit.
//!
//! Listening sockets: a worker under `course-service cluster` is handed its sockets by the
//! supervisor (`LISTEN_FDS`, systemd's protocol): fd 3 is the instance's public port, which
//! the supervisor keeps open across worker restarts and reloads so it never refuses a
//! connection; fd 4 is a private port only the supervisor probes (`/readyz` of this worker,
//! not of whichever worker the public port hands a connection to). Run alone, `serve` binds
//! its `listen` address itself.
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
    /// The sockets handed over by a supervisor (`LISTEN_FDS`), else `listen` bound here.
    pub async fn take_or_bind(listen: SocketAddr) -> Result<Listeners, String> {
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
        if let Some(public) = inherited(0, &mut passed)? {
            let private = inherited(1, &mut passed)?;
            return Ok(Listeners { public, private });
        }
        let public = TcpListener::bind(listen)
            .await
            .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        Ok(Listeners {
            public,
            private: None,
        })
    }
}

/// Runs one instance until `shutdown` completes, then drains (see the module doc).
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let client = store::connect(&config)
        .await
        .map_err(|e| format!("cannot set up the MongoDB client: {e}"))?;
    let listeners = Listeners::take_or_bind(config.listen).await?;
    let state = AppState::new(&config, &client)?;
    let mut background = state.spawn_followers();
    background.push(tokio::spawn(state.clone().ensure_indexes_until_done()));
    if state.admin_token.is_none() {
        tracing::warn!("MC_ADMIN_TOKEN is not set: every write will be refused with 403");
    }
    tracing::info!(
        listen = %listeners.public.local_addr().map_or(config.listen, |a| a),
        private = ?listeners.private.as_ref().and_then(|l| l.local_addr().ok()),
        database = %config.database,
        "course-service ready to accept"
    );
    // A worker of `cluster` (it has the private port) also stops when its supervisor is gone.
    let parent = listeners
        .private
        .is_some()
        .then(std::os::unix::process::parent_id);
    let shutdown = async move {
        tokio::select! {
            () = shutdown => {}
            () = supervisor_gone(parent) => {}
        }
    };
    serve(listeners, state, &config, shutdown).await;
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
/// `http.shutdown_grace`) for the requests in flight.
pub async fn serve(
    listeners: Listeners,
    state: AppState,
    config: &Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
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
            let accepted = tokio::select! {
                biased;
                () = stopped => None,
                accepted = inner.accept() => Some(accepted),
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
