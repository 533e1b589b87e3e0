//! Headless Chromium driven over the DevTools protocol (one WebSocket, JSON messages): enough
//! to open a page, run script in it as a person's clicks would, and wait for what a person
//! would see. Chromium comes from `scripts/test` (apt `chromium`), or `CHROMIUM` names it.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::wait_until_async;

/// How long one protocol call, or one condition, may take.
const DEADLINE: Duration = Duration::from_secs(20);

static NEXT_PROFILE: AtomicU32 = AtomicU32::new(0);

/// One headless Chromium with one tab.
pub struct Browser {
    child: Child,
    profile: PathBuf,
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The tab's protocol session.
    session: String,
    next_id: u64,
    /// Uncaught script errors in the page, as Chromium reported them.
    exceptions: Vec<String>,
}

fn executable() -> String {
    if let Ok(path) = std::env::var("CHROMIUM") {
        return path;
    }
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {name}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if found {
            return name.into();
        }
    }
    panic!("Chromium is missing: run scripts/test (it installs the `chromium` package) or set CHROMIUM");
}

impl Browser {
    pub async fn launch() -> Browser {
        let profile = std::env::temp_dir().join(format!(
            "mc-chromium-{}-{}",
            std::process::id(),
            NEXT_PROFILE.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&profile).expect("profile directory");
        let child = Command::new(executable())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                // The proxy's development certificate is self-signed.
                "--ignore-certificate-errors",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // A group of its own: its helper processes go with it (see `Drop`).
            .process_group(0)
            .spawn()
            .expect("start Chromium");
        // Chromium writes its port and the browser endpoint's path here once it listens.
        let port_file = profile.join("DevToolsActivePort");
        wait_until_async("Chromium's DevTools endpoint", DEADLINE, || async {
            std::fs::read_to_string(&port_file).is_ok_and(|s| s.lines().count() >= 2)
        })
        .await;
        let text = std::fs::read_to_string(&port_file).expect("DevToolsActivePort");
        let mut lines = text.lines();
        let (port, path) = (lines.next().unwrap_or(""), lines.next().unwrap_or(""));
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}{path}"))
            .await
            .expect("connect to Chromium's DevTools");
        let mut browser = Browser {
            child,
            profile,
            ws,
            session: String::new(),
            next_id: 0,
            exceptions: Vec::new(),
        };
        let target = browser
            .call("Target.createTarget", json!({ "url": "about:blank" }))
            .await;
        let attached = browser
            .call(
                "Target.attachToTarget",
                json!({ "targetId": target["targetId"], "flatten": true }),
            )
            .await;
        browser.session = attached["sessionId"]
            .as_str()
            .expect("a session id")
            .to_string();
        browser.call("Page.enable", json!({})).await;
        browser.call("Runtime.enable", json!({})).await;
        browser
    }

    /// Sends one command (to the tab once attached) and returns its result.
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if !self.session.is_empty() {
            message["sessionId"] = json!(self.session);
        }
        self.ws
            .send(Message::text(message.to_string()))
            .await
            .expect("send to Chromium");
        let answer = tokio::time::timeout(DEADLINE, async {
            loop {
                let Some(frame) = self.ws.next().await else {
                    panic!("Chromium closed the DevTools connection during {method}");
                };
                let Ok(Message::Text(text)) = frame else {
                    continue;
                };
                let value: Value = serde_json::from_str(&text).expect("DevTools sends JSON");
                if value["id"] == json!(id) {
                    return value;
                }
                if value["method"] == "Runtime.exceptionThrown" {
                    let details = &value["params"]["exceptionDetails"];
                    let text = details["exception"]["description"]
                        .as_str()
                        .or(details["text"].as_str())
                        .unwrap_or("an exception")
                        .to_string();
                    self.exceptions.push(text);
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("Chromium did not answer {method} within {DEADLINE:?}"));
        if let Some(error) = answer.get("error") {
            panic!("{method} failed: {error}");
        }
        answer["result"].clone()
    }

    /// Opens `url` in the tab and waits until the page and its script have loaded.
    pub async fn open(&mut self, url: &str) {
        let nav = self.call("Page.navigate", json!({ "url": url })).await;
        if let Some(error) = nav.get("errorText") {
            panic!("Chromium could not open {url}: {error}");
        }
        self.wait_for(
            &format!("{url} to load"),
            "document.readyState === 'complete'",
        )
        .await;
    }

    /// Evaluates `expression` in the page (awaiting a promise) and returns its value.
    pub async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "awaitPromise": true, "returnByValue": true }),
            )
            .await;
        if let Some(details) = result.get("exceptionDetails") {
            panic!("script `{expression}` threw: {details}");
        }
        result["result"]["value"].clone()
    }

    /// Waits until `condition` (a script expression) is true in the page.
    pub async fn wait_for(&mut self, what: &str, condition: &str) {
        self.wait_for_within(what, condition, DEADLINE).await;
    }

    /// [`Browser::wait_for`] with a deadline of its own.
    pub async fn wait_for_within(&mut self, what: &str, condition: &str, deadline: Duration) {
        let end = tokio::time::Instant::now() + deadline;
        loop {
            if self.eval(condition).await == json!(true) {
                return;
            }
            if tokio::time::Instant::now() >= end {
                let status = self
                    .eval("document.getElementById('status')?.textContent")
                    .await;
                panic!("timed out after {deadline:?} waiting for {what}; the page's status line says {status}");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The text of every element matching `selector`, in document order.
    pub async fn texts(&mut self, selector: &str) -> Vec<String> {
        let selector = serde_json::to_string(selector).expect("a JSON string");
        let value = self
            .eval(&format!(
                "[...document.querySelectorAll({selector})].map(e => e.textContent)"
            ))
            .await;
        serde_json::from_value(value).expect("a list of strings")
    }

    /// Uncaught script errors so far.
    pub fn exceptions(&self) -> &[String] {
        &self.exceptions
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The whole group: a helper left running writes into the profile after it is removed.
        let group = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
