//! The proxy replacing its own binary (SIGUSR2) under load: the new process takes over the
//! listening sockets, the old one drains, and no client sees a failure or a refused connect.

mod support;

use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use support::{eventually, proxy, BackgroundLoad, Upstream};

fn alive(pid: i32) -> bool {
    kill(Pid::from_raw(pid), None).is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binary_upgrade_loses_no_request_and_a_failed_one_changes_nothing() {
    let up = Upstream::start("a").await;
    let mut p = proxy().upstream(&up).start().await;
    eventually("the pid file", Duration::from_secs(10), || async {
        p.pid_from_file().is_some()
    })
    .await;
    let old = p.pid_from_file().unwrap();
    assert_eq!(old, p.child.id() as i32);

    let load = BackgroundLoad::start(p.url("/"), 8, 100_000, Duration::from_secs(30));
    tokio::time::sleep(Duration::from_millis(200)).await;
    kill(Pid::from_raw(old), Signal::SIGUSR2).unwrap();
    eventually(
        "the new process to take over",
        Duration::from_secs(20),
        || async { p.pid_from_file().is_some_and(|pid| pid != old) },
    )
    .await;
    let new = p.pid_from_file().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while p.child.try_wait().unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the old process did not drain and exit"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(alive(new));
    // Traffic on the new process for a moment, then the tally.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let results = load.finish().await;
    let failed: Vec<_> = results.iter().filter(|(s, _)| *s != 200).collect();
    assert!(results.len() > 100, "too little traffic: {}", results.len());
    assert!(
        failed.is_empty(),
        "{} of {} failed: {:?}",
        failed.len(),
        results.len(),
        &failed[..failed.len().min(3)]
    );
    let answered = p.admin_json("/admin/upstreams").await;
    assert_eq!(
        answered["pools"][0]["name"], "main",
        "the admin port moved over too"
    );

    // An upgrade whose new process cannot start (its configuration is broken now): the
    // serving process goes on as it was.
    std::fs::write(
        p.dir.join("proxy.toml"),
        "[listen]\nhttp = \"not an address\"\n",
    )
    .unwrap();
    kill(Pid::from_raw(new), Signal::SIGUSR2).unwrap();
    for _ in 0..20 {
        let (status, _) = support::get_text(&support::http_client(), &p.url("/")).await;
        assert_eq!(status, 200);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(alive(new), "a failed upgrade stopped the serving process");
    assert_eq!(p.pid_from_file(), Some(new));
}
