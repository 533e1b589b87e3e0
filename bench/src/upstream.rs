//! Synthetic upstreams: HTTP/1.1 servers on loopback that answer a small fixed JSON body after
//! a latency (fixed, or drawn from an exponential distribution), with a given share of 500s.
//! They are deliberately lean (a head parsed with httparse, one prepared answer written
//! whole; no HTTP library), so that on a small machine the upstreams take as little CPU as
//! nginx serving a static body would, and the systems under test get the rest.
//! [`UpstreamProcess`] runs one in a process of its own (`bench upstream`), to be SIGKILLed,
//! restarted on its port, and SIGSTOPped like a real server.
//!
//! A [`Profile`] is written `LATENCY[/ERROR_RATE]`: `1ms`, `40ms`, `exp:2ms` (exponential
//! with a 2 ms mean), `exp:2ms/0.05` (and 5 % of answers are 500). Random draws come from an
//! RNG seeded per upstream and connection, so a run's sequence of latencies is reproducible.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What every upstream answers: a course-sized JSON body.
pub const BODY: &str =
    r#"{"id":"6b06c0945a4c4d02edca3612","title":"Intro to Rust","level":"beginner"}"#;

/// How long an upstream takes to answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Latency {
    Fixed(Duration),
    /// Exponentially distributed with this mean (many quick answers, a long tail).
    Exponential(Duration),
}

/// How a synthetic upstream behaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Profile {
    pub latency: Latency,
    /// Share of answers that are `500 Internal Server Error`, 0 to 1.
    pub error_rate: f64,
}

impl Profile {
    pub fn fixed(latency: Duration) -> Profile {
        Profile {
            latency: Latency::Fixed(latency),
            error_rate: 0.0,
        }
    }

    /// Parses `LATENCY[/ERROR_RATE]` (see the module documentation).
    pub fn parse(text: &str) -> Result<Profile, String> {
        let (latency, errors) = text.split_once('/').unwrap_or((text, "0"));
        let duration = |t: &str| {
            humantime::parse_duration(t)
                .map_err(|e| format!("`{t}` in `{text}` is not a duration like 2ms: {e}"))
        };
        let latency = match latency.strip_prefix("exp:") {
            Some(mean) => Latency::Exponential(duration(mean)?),
            None => Latency::Fixed(duration(latency)?),
        };
        let error_rate: f64 = errors
            .parse()
            .ok()
            .filter(|r| (0.0..=1.0).contains(r))
            .ok_or_else(|| format!("`{errors}` in `{text}` is not an error rate from 0 to 1"))?;
        Ok(Profile {
            latency,
            error_rate,
        })
    }

    /// One answer's latency and whether it is an error.
    fn draw(&self, rng: &mut fastrand::Rng) -> (Duration, bool) {
        let latency = match self.latency {
            Latency::Fixed(d) => d,
            // Inverse transform sampling; 1 - f64() is in (0, 1], so ln is finite.
            Latency::Exponential(mean) => mean.mul_f64(-(1.0 - rng.f64()).ln()),
        };
        (latency, rng.f64() < self.error_rate)
    }
}

/// A running synthetic upstream.
pub struct Upstream {
    pub addr: SocketAddr,
    profile: Profile,
    seed: u64,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Upstream {
    /// An upstream answering after a fixed `latency`, never failing.
    pub async fn start(latency: Duration) -> std::io::Result<Upstream> {
        Upstream::with_profile(Profile::fixed(latency), 0).await
    }

    /// An upstream behaving as `profile`, its draws seeded with `seed`.
    pub async fn with_profile(profile: Profile, seed: u64) -> std::io::Result<Upstream> {
        Upstream::on_port(profile, seed, 0).await
    }

    /// The same on `port` (0: any free one).
    pub async fn on_port(profile: Profile, seed: u64, port: u16) -> std::io::Result<Upstream> {
        let mut u = Upstream {
            addr: ([127, 0, 0, 1], 0).into(),
            profile,
            seed,
            task: None,
        };
        u.listen(port).await?;
        Ok(u)
    }

    async fn listen(&mut self, port: u16) -> std::io::Result<()> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        self.addr = listener.local_addr()?;
        let (profile, seed) = (self.profile, self.seed);
        self.task = Some(tokio::spawn(async move {
            // Connections live in this set: aborting the task closes them all.
            let mut connections = tokio::task::JoinSet::new();
            let mut accepted: u64 = 0;
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                accepted += 1;
                let rng = fastrand::Rng::with_seed(
                    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
                        .wrapping_add(accepted),
                );
                connections.spawn(serve(stream, profile, rng));
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
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The two answers, written whole.
fn answer(error: bool) -> &'static [u8] {
    static OK: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    static FAILED: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let build = |status: &str| {
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{BODY}",
            BODY.len()
        )
        .into_bytes()
    };
    if error {
        FAILED.get_or_init(|| build("500 Internal Server Error"))
    } else {
        OK.get_or_init(|| build("200 OK"))
    }
}

/// One client connection: each request head gets the profile's answer after its latency.
/// Request bodies (by Content-Length) are read and dropped; a malformed head ends the
/// connection.
async fn serve(mut stream: TcpStream, profile: Profile, mut rng: fastrand::Rng) {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        let mut fields = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut fields);
        let (head, body) = match req.parse(&buf) {
            Ok(httparse::Status::Complete(head)) => {
                let body = req
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
                    .unwrap_or(0usize);
                (head, body)
            }
            Ok(httparse::Status::Partial) => {
                match stream.read(&mut chunk).await {
                    Ok(n @ 1..) => buf.extend_from_slice(&chunk[..n]),
                    _ => return,
                }
                continue;
            }
            Err(_) => return,
        };
        while buf.len() < head + body {
            match stream.read(&mut chunk).await {
                Ok(n @ 1..) => buf.extend_from_slice(&chunk[..n]),
                _ => return,
            }
        }
        buf.drain(..head + body);
        let (latency, error) = profile.draw(&mut rng);
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        if stream.write_all(answer(error)).await.is_err() {
            return;
        }
    }
}

/// A synthetic upstream in a process of its own (`bench upstream`), so that it can be killed
/// with SIGKILL and hung with SIGSTOP like a real server.
pub struct UpstreamProcess {
    pub addr: SocketAddr,
    bin: std::path::PathBuf,
    profile: String,
    seed: u64,
    child: std::process::Child,
}

impl UpstreamProcess {
    /// Starts `bin upstream` (`bin` is the bench binary) on a free port and waits until it
    /// accepts connections.
    pub fn start(
        bin: &std::path::Path,
        profile: &str,
        seed: u64,
    ) -> Result<UpstreamProcess, String> {
        let port = crate::systems::free_port();
        let child = UpstreamProcess::spawn(bin, profile, seed, port)?;
        Ok(UpstreamProcess {
            addr: ([127, 0, 0, 1], port).into(),
            bin: bin.to_path_buf(),
            profile: profile.to_string(),
            seed,
            child,
        })
    }

    fn spawn(
        bin: &std::path::Path,
        profile: &str,
        seed: u64,
        port: u16,
    ) -> Result<std::process::Child, String> {
        use std::os::unix::process::CommandExt;
        let child = std::process::Command::new(bin)
            .process_group(0)
            .args(["upstream", "--upstreams", profile])
            .args(["--port", &port.to_string(), "--seed", &seed.to_string()])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {} upstream: {e}", bin.display()))?;
        crate::reaper::track(child.id());
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            if std::time::Instant::now() > deadline {
                return Err(format!("the upstream process did not listen on {addr}"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(child)
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, signal);
    }

    /// SIGKILL: the kernel resets every connection, the port refuses.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        crate::reaper::untrack(self.child.id());
    }

    /// A new process on the same port.
    pub fn restart(&mut self) -> Result<(), String> {
        self.kill();
        self.child = UpstreamProcess::spawn(&self.bin, &self.profile, self.seed, self.addr.port())?;
        Ok(())
    }

    /// SIGSTOP (`true`) or SIGCONT: connections are still accepted by the kernel, nothing
    /// answers.
    pub fn freeze(&self, frozen: bool) {
        use nix::sys::signal::Signal;
        self.signal(if frozen {
            Signal::SIGSTOP
        } else {
            Signal::SIGCONT
        });
    }
}

impl Drop for UpstreamProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_parse_and_bad_ones_say_why() {
        assert_eq!(
            Profile::parse("40ms").unwrap(),
            Profile::fixed(Duration::from_millis(40))
        );
        let p = Profile::parse("exp:2ms/0.05").unwrap();
        assert_eq!(p.latency, Latency::Exponential(Duration::from_millis(2)));
        assert_eq!(p.error_rate, 0.05);
        assert!(Profile::parse("fast").unwrap_err().contains("`fast`"));
        assert!(Profile::parse("1ms/2").unwrap_err().contains("error rate"));
    }

    #[test]
    fn draws_follow_the_profile_and_repeat_with_the_seed() {
        let p = Profile::parse("exp:2ms/0.25").unwrap();
        let draws = |seed| {
            let mut rng = fastrand::Rng::with_seed(seed);
            (0..20_000).map(|_| p.draw(&mut rng)).collect::<Vec<_>>()
        };
        let a = draws(7);
        assert_eq!(a, draws(7), "same seed, same run");
        let mean = a.iter().map(|(d, _)| d.as_secs_f64()).sum::<f64>() / a.len() as f64;
        assert!((0.0018..0.0022).contains(&mean), "mean {mean}");
        let errors = a.iter().filter(|(_, e)| *e).count() as f64 / a.len() as f64;
        assert!((0.23..0.27).contains(&errors), "error share {errors}");
    }
}
