//! Our proxy (the real binary) in front of one course-service, on HTTP and HTTPS.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, wait_until_async, TestApp};

/// Our proxy in front of one course-service, on HTTP and HTTPS.
pub struct Proxy {
    pub http: SocketAddr,
    pub https: SocketAddr,
    pub admin: SocketAddr,
    pub dir: PathBuf,
    child: Child,
}

impl Proxy {
    pub async fn start(app: &TestApp) -> Proxy {
        let upstream = app.base.trim_start_matches("http://");
        let dir = std::env::temp_dir().join(format!("mc-web-proxy-{}", free_port()));
        std::fs::create_dir_all(&dir).expect("proxy directory");
        let http: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let https: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let admin: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        std::fs::write(
            dir.join("proxy.toml"),
            format!(
                "upstreams_file = \"upstreams.toml\"\n[listen]\nhttp = \"{http}\"\nhttps = \"{https}\"\n\
                 admin = \"{admin}\"\n[tls]\nself_signed = true\n[runtime]\nworkers = 1\n"
            ),
        )
        .expect("proxy.toml");
        std::fs::write(
            dir.join("upstreams.toml"),
            format!("[pool.courses]\nendpoints = [{{ addr = \"{upstream}\" }}]\n"),
        )
        .expect("upstreams.toml");
        let child = Command::new(shared::testbed::workspace_bin("proxy"))
            .arg("--config")
            .arg(dir.join("proxy.toml"))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .expect("start the proxy");
        let proxy = Proxy {
            http,
            https,
            admin,
            dir,
            child,
        };
        let page = format!("http://{http}/");
        wait_until_async(
            "the proxy to serve the page",
            Duration::from_secs(20),
            || {
                let (client, page) = (app.http.clone(), page.clone());
                async move {
                    let res = client.get(&page).send().await;
                    res.is_ok_and(|r| r.status() == 200)
                }
            },
        )
        .await;
        proxy
    }

    pub fn urls(&self) -> [String; 2] {
        [
            format!("http://{}", self.http),
            format!("https://{}", self.https),
        ]
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Proxy {
    /// Replaces `upstreams.toml` (renamed into place: the proxy reloads it).
    pub fn write_upstreams(&self, text: &str) {
        let tmp = self.dir.join("upstreams.toml.new");
        std::fs::write(&tmp, text).expect("upstreams.toml.new");
        std::fs::rename(tmp, self.dir.join("upstreams.toml")).expect("upstreams.toml");
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }
}
