//! TLS for the https listener: rustls (TLS 1.2 and 1.3, its safe defaults, the `ring`
//! provider), ALPN `h2` then `http/1.1`, certificate chain and key from PEM files. With
//! `self_signed = true` and no files present, a development pair for `localhost`/`127.0.0.1`
//! is generated (rcgen) and written there, so the next start reuses it.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

use crate::config::Tls;

/// Builds the server TLS configuration, generating a dev certificate first if asked to.
pub fn server_config(tls: &Tls) -> Result<Arc<ServerConfig>, String> {
    if tls.self_signed && !tls.cert.exists() && !tls.key.exists() {
        generate_self_signed(&tls.cert, &tls.key)?;
        tracing::warn!(cert = %tls.cert.display(), "generated a self-signed development certificate");
    }
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&tls.cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| {
            format!(
                "{}: cannot read the certificate chain: {e}",
                tls.cert.display()
            )
        })?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate found", tls.cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key)
        .map_err(|e| format!("{}: cannot read the private key: {e}", tls.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            format!(
                "{}: certificate and key do not match: {e}",
                tls.cert.display()
            )
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
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

    #[test]
    fn a_self_signed_pair_is_generated_once_and_reused() {
        let dir = std::env::temp_dir().join(format!("mc-tls-{}", std::process::id()));
        let tls = Tls {
            cert: dir.join("certs/proxy.pem"),
            key: dir.join("certs/proxy-key.pem"),
            self_signed: true,
        };
        let first = server_config(&tls).unwrap();
        assert_eq!(first.alpn_protocols[0], b"h2");
        let pem = std::fs::read(&tls.cert).unwrap();
        server_config(&tls).unwrap();
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
        let err = server_config(&tls).unwrap_err();
        assert!(err.contains("/nonexistent/proxy.pem"), "{err}");
    }
}
