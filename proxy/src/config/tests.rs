use super::*;

fn upstreams(text: &str) -> Result<UpstreamsConfig, Vec<String>> {
    UpstreamsConfig::parse(Path::new("upstreams.toml"), text)
        .map_err(|es| es.into_iter().map(|e| e.to_string()).collect())
}

const SHIPPED: &str = include_str!("../../../configs/upstreams.toml");

#[test]
fn the_shipped_files_are_valid() {
    let u = upstreams(SHIPPED).unwrap();
    assert_eq!(u.pools[0].endpoints.len(), 3);
    let p = ProxyConfig::parse(
        Path::new("configs/proxy.toml"),
        include_str!("../../../configs/proxy.toml"),
    )
    .unwrap();
    assert_eq!(p.upstreams_file, Path::new("configs/upstreams.toml"));
    assert_eq!(p.listen.https.map(|a| a.port()), Some(8443));
}

#[test]
fn one_pool_without_routes_gets_everything() {
    let u = upstreams("[pool.a]\nendpoints = [{ addr = \"127.0.0.1:1\" }]\n").unwrap();
    assert_eq!(u.routes.len(), 1);
    assert_eq!(u.routes[0].host, None);
    assert_eq!(u.routes[0].path_prefix, "/");
    assert_eq!(u.pools[0].algorithm, Algorithm::PeakEwma);
    assert_eq!(u.pools[0].endpoints[0].weight, 1);
}

#[test]
fn routes_are_ordered_most_specific_first() {
    let u = upstreams(
        r#"
[[route]]
pool = "a"
[[route]]
path_prefix = "/api/"
pool = "b"
[[route]]
host = "Admin.Example"
pool = "a"
[pool.a]
endpoints = [{ addr = "127.0.0.1:1" }]
[pool.b]
endpoints = [{ addr = "127.0.0.1:2" }]
"#,
    )
    .unwrap();
    let order: Vec<_> = u
        .routes
        .iter()
        .map(|r| (r.host.clone(), r.path_prefix.as_str()))
        .collect();
    assert_eq!(
        order,
        [
            (Some("admin.example".into()), "/"),
            (None, "/api/"),
            (None, "/")
        ]
    );
}

#[test]
fn every_semantic_error_is_reported_with_its_position() {
    let text = r#"[[route]]
pool = "nope"

[pool.a]
endpoints = []

[pool.b]
endpoints = [
  { addr = "127.0.0.1:9001" },
  { addr = "127.0.0.1:9001", weight = 0 },
]
"#;
    let errs = upstreams(text).unwrap_err();
    let joined = errs.join("\n");
    assert!(
        joined.contains("upstreams.toml:5:13: field `pool.a.endpoints`"),
        "{joined}"
    );
    assert!(joined.contains("upstreams.toml:10:12: field `pool.b.endpoints[1].addr`: 127.0.0.1:9001 is listed twice"), "{joined}");
    assert!(
        joined.contains("upstreams.toml:10:39: field `pool.b.endpoints[1].weight`"),
        "{joined}"
    );
    assert!(
        joined.contains("upstreams.toml:2:8: field `route[0].pool`: no pool named `nope`"),
        "{joined}"
    );
    assert_eq!(errs.len(), 4, "{joined}");
}

#[test]
fn type_errors_come_with_line_and_column() {
    let errs = upstreams("[pool.a]\nendpoints = [{ addr = \"localhost:99999\" }]\n").unwrap_err();
    assert!(errs[0].starts_with("upstreams.toml:2:"), "{errs:?}");
    let errs = upstreams("[pool.a]\nalgorithm = \"fastest\"\nendpoints = []\n").unwrap_err();
    assert!(
        errs[0].contains("upstreams.toml:2:13") && errs[0].contains("fastest"),
        "{errs:?}"
    );
    let errs =
        upstreams("[pool.a]\nendpoints = [{ addr = \"127.0.0.1:1\" }]\ncolour = 1\n").unwrap_err();
    assert!(
        errs[0].contains(":3:1") && errs[0].contains("colour"),
        "{errs:?}"
    );
    let errs = upstreams("[pool.a\n").unwrap_err();
    assert!(errs[0].starts_with("upstreams.toml:1:"), "{errs:?}");
}

#[test]
fn several_pools_need_routes_and_no_pool_is_an_error() {
    let errs = upstreams(
        "[pool.a]\nendpoints = [{ addr = \"127.0.0.1:1\" }]\n[pool.b]\nendpoints = [{ addr = \"127.0.0.1:2\" }]\n",
    )
    .unwrap_err();
    assert!(errs[0].contains("[[route]]"), "{errs:?}");
    assert!(upstreams("").unwrap_err()[0].contains("at least one"));
}

#[test]
fn proxy_limits_and_timeouts_are_checked() {
    let errs = ProxyConfig::parse(
        Path::new("proxy.toml"),
        "[limits]\nmax_header_bytes = 100\nmax_connections = 0\n[timeouts]\nper_try = \"40s\"\nconnect = \"0s\"\n",
    )
    .unwrap_err();
    let joined: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    let joined = joined.join("\n");
    assert!(
        joined.contains("proxy.toml:2:20: field `limits.max_header_bytes`"),
        "{joined}"
    );
    assert!(
        joined.contains("proxy.toml:3:19: field `limits.max_connections`"),
        "{joined}"
    );
    assert!(joined.contains("timeouts.connect"), "{joined}");
    assert!(joined.contains("timeouts.per_try"), "{joined}");
}

#[test]
fn defaults_are_safe() {
    let p = ProxyConfig::parse(Path::new("/etc/mc/proxy.toml"), "").unwrap();
    assert_eq!(p.listen.http.to_string(), DEFAULT_HTTP);
    assert_eq!(p.listen.https, None);
    assert_eq!(p.upstreams_file, Path::new("/etc/mc/upstreams.toml"));
    assert_eq!(p.timeouts.per_try, DEFAULT_PER_TRY);
    assert_eq!(p.forwarding.trusted_proxies.len(), 2);
}

// The property of `fuzz/fuzz_targets/proxy_config.rs`, on stable in every test run: arbitrary
// text is a config or errors naming the file, never a panic.
proptest::proptest! {
    #[test]
    fn arbitrary_text_is_a_config_or_errors_naming_the_file(
        text in "(\\[|\\]|pool|route|\\.|=|\"|[a-z_]{1,10}|[0-9.:]{1,12}|\\{|\\}|,| |\n){0,60}",
    ) {
        for errors in [
            ProxyConfig::parse(Path::new("proxy.toml"), &text).err(),
            UpstreamsConfig::parse(Path::new("upstreams.toml"), &text).err(),
        ]
        .into_iter()
        .flatten()
        {
            proptest::prop_assert!(!errors.is_empty());
            for e in errors {
                proptest::prop_assert!(e.to_string().contains(".toml"), "{}", e);
            }
        }
    }
}

#[test]
fn the_access_log_section_resolves_its_file_and_checks_its_sample() {
    let parse = |text: &str| ProxyConfig::parse(Path::new("/etc/mc/proxy.toml"), text);
    let off = parse("").unwrap();
    assert_eq!(off.access_log, access_log::Config::default());
    let file =
        parse("[access_log]\noutput = \"logs/access.log\"\nformat = \"logfmt\"\nsample = 0.25\n")
            .unwrap();
    assert_eq!(
        file.access_log.output,
        access_log::Output::File("/etc/mc/logs/access.log".into())
    );
    assert_eq!(file.access_log.format, access_log::Format::Logfmt);
    assert_eq!(file.access_log.sample, 0.25);
    assert_eq!(
        parse("[access_log]\noutput = \"stdout\"\n")
            .unwrap()
            .access_log
            .output,
        access_log::Output::Stdout
    );
    let errors: Vec<String> = parse("[access_log]\nsample = 1.5\n")
        .unwrap_err()
        .iter()
        .map(|e| e.to_string())
        .collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("/etc/mc/proxy.toml:2:10"), "{errors:?}");
    assert!(errors[0].contains("access_log.sample"), "{errors:?}");
    let bad_format = parse("[access_log]\nformat = \"xml\"\n").unwrap_err();
    assert!(bad_format[0].to_string().contains("json"), "{bad_format:?}");
}

#[test]
fn the_configuration_reference_documents_every_key_and_no_other() {
    let doc = include_str!("../../../docs/configuration.md");
    let proxy = shared::config::keys::<RawProxy>();
    let upstreams = shared::config::keys::<RawUpstreams>();
    assert!(
        proxy.len() > 20 && upstreams.len() > 10,
        "{proxy:?} {upstreams:?}"
    );
    shared::config::check_reference(doc, "proxy.toml", &proxy).unwrap();
    shared::config::check_reference(doc, "upstreams.toml", &upstreams).unwrap();
}
