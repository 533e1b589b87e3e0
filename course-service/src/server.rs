//! `course-service serve`: connect, bind, serve until SIGTERM, drain, exit.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::app::{router, AppState};
use crate::config::Config;
use crate::store;

/// Runs one instance until `shutdown` completes, then drains in-flight requests for at most
/// the configured grace period.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let client = store::connect(&config)
        .await
        .map_err(|e| format!("cannot set up the MongoDB client: {e}"))?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let state = AppState::new(&config, &client)?;
    let background = [
        tokio::spawn(state.clone().ensure_indexes_until_done()),
        tokio::spawn(state.cache.clone().follow_changes(state.store.clone())),
    ];
    if state.admin_token.is_none() {
        tracing::warn!("MC_ADMIN_TOKEN is not set: every write will be refused with 403");
    }
    tracing::info!(listen = %config.listen, database = %config.database, "course-service ready to accept");
    serve(listener, state, &config, shutdown).await;
    // The client's shutdown waits for every cursor (the change stream's too) to be dropped.
    for task in background {
        task.abort();
        let _ = task.await;
    }
    client.shutdown().await;
    Ok(())
}

/// Serves `listener` until `shutdown`; then stops accepting and waits (bounded) for in-flight
/// requests to finish.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    config: &Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let app = router(state, config.request_timeout);
    let draining = Arc::new(Notify::new());
    let notify = draining.clone();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        notify.notify_one();
    });
    let grace = config.shutdown_grace;
    tokio::select! {
        res = server => {
            if let Err(e) = res {
                tracing::error!(error = %e, "server error");
            }
            tracing::info!("drained, exiting");
        }
        _ = async { draining.notified().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(?grace, "in-flight requests still running after the grace period; exiting");
        }
    }
}
