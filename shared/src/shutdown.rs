//! Graceful shutdown: the signal every server waits on before it stops accepting and drains.

/// Completes on the first SIGTERM or SIGINT (Ctrl-C). Servers pass it to their graceful-shutdown
/// hook: stop accepting, let in-flight requests finish, then exit 0.
pub async fn signal() {
    use tokio::signal::unix::{signal, SignalKind};

    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            // Without a SIGTERM handler we can still honour Ctrl-C.
            tracing::warn!(error = %e, "cannot install SIGTERM handler");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received, draining"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received, draining"),
    }
}
