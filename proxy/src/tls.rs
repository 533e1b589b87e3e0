//! TLS for the https listener: rustls (TLS 1.2 and 1.3, its safe defaults, the `ring`
//! provider), ALPN `h2` then `http/1.1`, certificate chain and key from PEM files. With
//! `self_signed = true` and no files present, a development pair for `localhost`/`127.0.0.1`
//! is generated (rcgen) and written there, so the next start reuses it. When the served
//! certificate expires (its `notAfter`, read with x509-parser) is exported and logged.

use std::path::Path;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use prometheus::{IntCounterVec, IntGauge};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

use crate::config::Tls;
use crate::reload::{now_rfc3339, ReloadStatus, UNCHANGED};

/// The certificate and key the https listener presents, swapped whole by a reload: a
/// handshake gets the old pair or the new one, and connections already open keep theirs.
pub struct Certificates {
    files: Tls,
    provider: Arc<CryptoProvider>,
    current: ArcSwap<CertifiedKey>,
    /// The PEM files as last loaded, to tell a touch from a change.
    loaded: Mutex<(Vec<u8>, Vec<u8>)>,
    last: Mutex<ReloadStatus>,
    /// `tls_certificate_reloads_total{result}`.
    reloads: IntCounterVec,
    /// `tls_certificate_not_after_seconds`: when the served certificate expires.
    not_after: IntGauge,
}

impl std::fmt::Debug for Certificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificates")
            .field("cert", &self.files.cert)
            .field("key", &self.files.key)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

impl Certificates {
    pub fn files(&self) -> &Tls {
        &self.files
    }

    pub fn last(&self) -> ReloadStatus {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// When the served certificate expires (RFC 3339).
    pub fn not_after(&self) -> String {
        let secs = u64::try_from(self.not_after.get()).unwrap_or(0);
        humantime::format_rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
            .to_string()
    }

    /// Serves `pair` from the next handshake on, and says when it expires.
    fn serve(&self, pair: Served) {
        self.current.store(Arc::new(pair.key));
        self.not_after.set(pair.not_after);
        warn_if_expiring(&self.files, pair.not_after);
    }

    /// Loads the pair again and swaps it in if it is valid and changed; an invalid pair
    /// changes nothing and is reported (logged, counted, kept for `/admin/upstreams`), like
    /// an invalid `upstreams.toml`.
    pub fn reload(&self, trigger: &'static str) -> Result<String, String> {
        let result = read_pair(&self.files).and_then(|(cert, key)| {
            let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
            if loaded.0 == cert && loaded.1 == key {
                return Ok(UNCHANGED.to_string());
            }
            let pair = certified_key(&self.files, &cert, &key, &self.provider)?;
            self.serve(pair);
            *loaded = (cert, key);
            Ok(format!("loaded {}", self.files.cert.display()))
        });
        if trigger == "file" && result.as_deref() == Ok(UNCHANGED) {
            return result;
        }
        let (ok, message) = match &result {
            Ok(message) => {
                tracing::info!(trigger, "TLS certificate: {message}");
                (true, message.clone())
            }
            Err(e) => {
                tracing::error!(
                    trigger,
                    "TLS certificate reload refused, previous pair kept: {e}"
                );
                (false, e.clone())
            }
        };
        let label = if ok { "ok" } else { "error" };
        self.reloads.with_label_values(&[label]).inc();
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = ReloadStatus {
            at: now_rfc3339(),
            trigger,
            ok,
            message,
        };
        result
    }
}

/// Builds the server TLS configuration, generating a dev certificate first if asked to; the
/// pair is served through [`Certificates`], which reloads it.
pub fn server_config(
    tls: &Tls,
    reloads: IntCounterVec,
    not_after: IntGauge,
) -> Result<(Arc<ServerConfig>, Arc<Certificates>), String> {
    if tls.self_signed && !tls.cert.exists() && !tls.key.exists() {
        generate_self_signed(&tls.cert, &tls.key)?;
        tracing::warn!(cert = %tls.cert.display(), "generated a self-signed development certificate");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let (cert, key) = read_pair(tls)?;
    let pair = certified_key(tls, &cert, &key, &provider)?;
    let certificates = Arc::new(Certificates {
        files: tls.clone(),
        provider: provider.clone(),
        current: ArcSwap::from_pointee(pair.key.clone()),
        loaded: Mutex::new((cert, key)),
        last: Mutex::new(ReloadStatus {
            at: now_rfc3339(),
            trigger: "startup",
            ok: true,
            message: format!("loaded {}", tls.cert.display()),
        }),
        reloads,
        not_after,
    });
    certificates.serve(pair);
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(certificates.clone());
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((Arc::new(config), certificates))
}

fn read_pair(tls: &Tls) -> Result<(Vec<u8>, Vec<u8>), String> {
    let read = |path: &Path, what: &str| {
        std::fs::read(path).map_err(|e| format!("{}: cannot read the {what}: {e}", path.display()))
    };
    Ok((
        read(&tls.cert, "certificate chain")?,
        read(&tls.key, "private key")?,
    ))
}

/// A certified key ready to serve, and when its certificate expires.
struct Served {
    key: CertifiedKey,
    /// `notAfter` of the leaf certificate, Unix seconds.
    not_after: i64,
}

/// Within this of its expiry, a loaded certificate is logged as a warning (the alert rule
/// `ProxyCertificateExpiresSoon` uses the same margin).
const EXPIRY_WARNING: i64 = 14 * 24 * 3600;

fn warn_if_expiring(tls: &Tls, not_after: i64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let days = (not_after - now) / 86_400;
    if not_after <= now {
        tracing::error!(cert = %tls.cert.display(), "the TLS certificate has expired: clients will refuse it");
    } else if not_after - now < EXPIRY_WARNING {
        tracing::warn!(cert = %tls.cert.display(), days, "the TLS certificate expires soon");
    }
}

/// The chain and key from PEM text, checked to belong together.
fn certified_key(
    tls: &Tls,
    cert: &[u8],
    key: &[u8],
    provider: &CryptoProvider,
) -> Result<Served, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<_, _>>()
        .map_err(|e| {
            format!(
                "{}: cannot read the certificate chain: {e}",
                tls.cert.display()
            )
        })?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate found", tls.cert.display()));
    }
    let key = PrivateKeyDer::from_pem_slice(key)
        .map_err(|e| format!("{}: cannot read the private key: {e}", tls.key.display()))?;
    let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0]).map_err(|e| {
        format!(
            "{}: the first certificate is not X.509: {e}",
            tls.cert.display()
        )
    })?;
    let not_after = leaf.validity().not_after.timestamp();
    let key = CertifiedKey::from_der(chain, key, provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => format!(
            "{} and {}: the certificate and key do not match ({e})",
            tls.cert.display(),
            tls.key.display()
        ),
        e => format!("{}: cannot use the private key: {e}", tls.key.display()),
    })?;
    Ok(Served { key, not_after })
}

/// A TLS version as the access log names it.
pub fn version_name(v: rustls::ProtocolVersion) -> &'static str {
    match v {
        rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3",
        rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2",
        _ => "TLS",
    }
}

fn generate_self_signed(cert_path: &Path, key_path: &Path) -> Result<(), String> {
    let names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    let certified = rcgen::generate_simple_self_signed(names)
        .map_err(|e| format!("cannot generate a certificate: {e}"))?;
    for (path, pem) in [
        (cert_path, certified.cert.pem()),
        (key_path, certified.signing_key.serialize_pem()),
    ] {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("{}: cannot create: {e}", dir.display()))?;
        }
        std::fs::write(path, pem).map_err(|e| format!("{}: cannot write: {e}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reloads() -> IntCounterVec {
        IntCounterVec::new(prometheus::Opts::new("reloads", "test"), &["result"]).unwrap()
    }

    fn expiry() -> IntGauge {
        IntGauge::new("not_after", "test").unwrap()
    }

    /// Writes a self-signed pair for localhost that expires at the start of `day`
    /// (year, month, day).
    fn write_pair(tls: &Tls, day: (i32, u8, u8)) {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        params.not_after = rcgen::date_time_ymd(day.0, day.1, day.2);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        std::fs::create_dir_all(tls.cert.parent().unwrap()).unwrap();
        std::fs::write(&tls.cert, cert.pem()).unwrap();
        std::fs::write(&tls.key, key.serialize_pem()).unwrap();
    }

    #[test]
    fn a_self_signed_pair_is_generated_once_and_reused() {
        let dir = std::env::temp_dir().join(format!("mc-tls-{}", std::process::id()));
        let tls = Tls {
            cert: dir.join("certs/proxy.pem"),
            key: dir.join("certs/proxy-key.pem"),
            self_signed: true,
        };
        let first = server_config(&tls, reloads(), expiry()).unwrap().0;
        assert_eq!(first.alpn_protocols[0], b"h2");
        let pem = std::fs::read(&tls.cert).unwrap();
        server_config(&tls, reloads(), expiry()).unwrap();
        assert_eq!(std::fs::read(&tls.cert).unwrap(), pem, "regenerated");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn missing_files_without_self_signed_is_a_clear_error() {
        let tls = Tls {
            cert: "/nonexistent/proxy.pem".into(),
            key: "/nonexistent/key.pem".into(),
            self_signed: false,
        };
        let err = server_config(&tls, reloads(), expiry()).unwrap_err();
        assert!(err.contains("/nonexistent/proxy.pem"), "{err}");
    }

    #[test]
    fn a_reload_swaps_a_valid_pair_and_keeps_the_old_one_otherwise() {
        let dir = std::env::temp_dir().join(format!("mc-tls-reload-{}", std::process::id()));
        let tls = Tls {
            cert: dir.join("proxy.pem"),
            key: dir.join("proxy-key.pem"),
            self_signed: true,
        };
        let (_, certs) = server_config(&tls, reloads(), expiry()).unwrap();
        let first = certs.current.load_full();
        assert_eq!(certs.reload("file").unwrap(), UNCHANGED);

        // A new pair.
        let other = dir.join("other");
        generate_self_signed(&other.join("c.pem"), &other.join("k.pem")).unwrap();
        std::fs::copy(other.join("c.pem"), &tls.cert).unwrap();
        std::fs::copy(other.join("k.pem"), &tls.key).unwrap();
        assert!(certs.reload("sighup").unwrap().starts_with("loaded"));
        let second = certs.current.load_full();
        assert_ne!(first.cert, second.cert);
        assert!(certs.last().ok);

        // A key of another pair: refused, the second pair stays.
        generate_self_signed(&other.join("c2.pem"), &other.join("k2.pem")).unwrap();
        std::fs::copy(other.join("k2.pem"), &tls.key).unwrap();
        let err = certs.reload("file").unwrap_err();
        assert!(err.contains("do not match"), "{err}");
        assert_eq!(certs.current.load_full().cert, second.cert);
        let last = certs.last();
        assert!(!last.ok && last.trigger == "file", "{last:?}");
        assert_eq!(certs.reloads.with_label_values(&["error"]).get(), 1);

        // Garbage: refused too, with the file named.
        std::fs::write(&tls.key, "not a key").unwrap();
        let err = certs.reload("admin").unwrap_err();
        assert!(err.contains("proxy-key.pem"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_served_certificates_expiry_is_exported_and_follows_a_reload() {
        let dir = std::env::temp_dir().join(format!("mc-tls-expiry-{}", std::process::id()));
        let tls = Tls {
            cert: dir.join("proxy.pem"),
            key: dir.join("proxy-key.pem"),
            self_signed: false,
        };
        write_pair(&tls, (2031, 1, 2));
        let (_, certs) = server_config(&tls, reloads(), expiry()).unwrap();
        // 2031-01-02T00:00:00Z
        assert_eq!(certs.not_after.get(), 1_925_078_400);
        assert_eq!(certs.not_after(), "2031-01-02T00:00:00Z");

        write_pair(&tls, (2032, 6, 30));
        certs.reload("sighup").unwrap();
        assert_eq!(certs.not_after(), "2032-06-30T00:00:00Z");

        // A refused pair leaves the served one's expiry.
        std::fs::write(
            &tls.cert,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        assert!(certs.reload("file").is_err());
        assert_eq!(certs.not_after(), "2032-06-30T00:00:00Z");
        let _ = std::fs::remove_dir_all(dir);
    }
}
