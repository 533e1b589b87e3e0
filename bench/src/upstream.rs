//! Synthetic upstreams: hyper servers on loopback that answer a small fixed JSON body after a
//! configured latency, and that a scenario can kill (listener and every connection closed,
//! as a killed process), restart on the same port, or hang (accept, never answer: SIGSTOP).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

/// What every upstream answers: a course-sized JSON body.
pub const BODY: &str =
    r#"{"id":"6b06c0945a4c4d02edca3612","title":"Intro to Rust","level":"beginner"}"#;

/// A running synthetic upstream.
pub struct Upstream {
    pub addr: SocketAddr,
    latency: Duration,
    hang: Arc<AtomicBool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Upstream {
    pub async fn start(latency: Duration) -> std::io::Result<Upstream> {
        let mut u = Upstream {
            addr: ([127, 0, 0, 1], 0).into(),
            latency,
            hang: Arc::new(AtomicBool::new(false)),
            task: None,
        };
        u.listen(0).await?;
        Ok(u)
    }

    async fn listen(&mut self, port: u16) -> std::io::Result<()> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        self.addr = listener.local_addr()?;
        let (latency, hang) = (self.latency, self.hang.clone());
        self.task = Some(tokio::spawn(async move {
            // Connections live in this set: aborting the task closes them all.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let hang = hang.clone();
                connections.spawn(async move {
                    let svc = service_fn(move |_req| {
                        let hang = hang.clone();
                        async move {
                            if hang.load(Ordering::Relaxed) {
                                std::future::pending::<()>().await;
                            }
                            if !latency.is_zero() {
                                tokio::time::sleep(latency).await;
                            }
                            let mut res = hyper::Response::new(Full::new(Bytes::from_static(
                                BODY.as_bytes(),
                            )));
                            res.headers_mut().insert(
                                http::header::CONTENT_TYPE,
                                http::HeaderValue::from_static("application/json"),
                            );
                            Ok::<_, Infallible>(res)
                        }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
                while connections.try_join_next().is_some() {}
            }
        }));
        Ok(())
    }

    /// Closes the listener and every connection.
    pub fn kill(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    /// Listens again on the same port.
    pub async fn restart(&mut self) -> std::io::Result<()> {
        self.kill();
        self.listen(self.addr.port()).await
    }

    pub fn set_hang(&self, hang: bool) {
        self.hang.store(hang, Ordering::Relaxed);
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.kill();
    }
}
