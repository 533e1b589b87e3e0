//! `proxy.toml` and `upstreams.toml` from arbitrary text: every input is either a config or a
//! list of errors naming the file; nothing panics, and a valid pair builds a topology.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use proxy::config::{ProxyConfig, UpstreamsConfig};
use tokio::time::Instant;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The input holds both files, split at the first NUL.
    let (proxy_text, upstreams_text) = text.split_once('\0').unwrap_or((text, ""));
    let proxy = ProxyConfig::parse(Path::new("proxy.toml"), proxy_text);
    let upstreams = UpstreamsConfig::parse(Path::new("upstreams.toml"), upstreams_text);
    for errors in [proxy.as_ref().err(), upstreams.as_ref().err()]
        .into_iter()
        .flatten()
    {
        assert!(!errors.is_empty(), "an Err carries at least one error");
        for e in errors {
            assert!(
                e.to_string().contains(".toml"),
                "an error names its file: {e}"
            );
        }
    }
    if let Ok(upstreams) = upstreams {
        let metrics = proxy::metrics::Metrics::new();
        let _ = proxy::topology::Topology::build(&upstreams, None, &metrics, Instant::now());
    }
});
