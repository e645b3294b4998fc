//! TLS for both Postgres connections (SQL via tokio-postgres, replication via
//! pgwire-replication), with libpq's modes: `disable`, `require` (encrypt, trust any
//! certificate), `verify-ca` (the certificate chains to the CA file), `verify-full` (and names
//! the host). The mode comes from the source's `tls.mode`, else the URL's `sslmode`, else
//! `disable`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

use super::PgError;
use crate::config::{TlsConfig, TlsMode};

/// The mode to use and the URL without `sslmode` (tokio-postgres knows only some of the modes).
pub(crate) fn resolve(url: &str, tls: &TlsConfig) -> Result<(TlsMode, String), PgError> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut from_url = None;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .filter(|kv| match kv.strip_prefix("sslmode=") {
            Some(mode) => {
                from_url = Some(mode.to_string());
                false
            }
            None => true,
        })
        .collect();
    let mode = match (tls.mode, from_url.as_deref()) {
        (Some(mode), _) => mode,
        (None, None | Some("disable") | Some("allow") | Some("prefer")) => TlsMode::Disable,
        (None, Some("require")) => TlsMode::Require,
        (None, Some("verify-ca")) => TlsMode::VerifyCa,
        (None, Some("verify-full")) => TlsMode::VerifyFull,
        (None, Some(other)) => {
            return Err(PgError::Setup(format!(
                "sslmode={other} is not one of disable, require, verify-ca, verify-full"
            )));
        }
    };
    let url = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((mode, url))
}

/// A rustls client configuration for the mode (None: plain connections).
pub(crate) fn client_config(
    mode: TlsMode,
    tls: &TlsConfig,
) -> Result<Option<rustls::ClientConfig>, PgError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| PgError::Setup(format!("TLS setup: {e}")))?;
    let config = match mode {
        TlsMode::Disable => return Ok(None),
        TlsMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth(),
        TlsMode::VerifyCa | TlsMode::VerifyFull => {
            let roots = Arc::new(root_store(tls)?);
            let webpki =
                rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider)
                    .build()
                    .map_err(|e| PgError::Setup(format!("TLS setup: {e}")))?;
            let verifier: Arc<dyn ServerCertVerifier> = if mode == TlsMode::VerifyCa {
                Arc::new(IgnoreHostname(webpki))
            } else {
                webpki
            };
            builder
                .dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth()
        }
    };
    Ok(Some(config))
}

/// pgwire-replication's own TLS settings for the same mode, for a connection to `host`.
pub(crate) fn replication_tls(
    mode: TlsMode,
    tls: &TlsConfig,
    host: &str,
) -> pgwire_replication::TlsConfig {
    let ca = tls.ca_file.clone();
    match mode {
        TlsMode::Disable => pgwire_replication::TlsConfig::disabled(),
        TlsMode::Require => pgwire_replication::TlsConfig::require(),
        // pgwire-replication 0.5's verify-ca still refuses a name mismatch under rustls 0.23.4x
        // (it ignores only the old error variant). The SQL connection, verified against the same
        // CA, saw the names in the server's certificate: verifying the chain for one of those
        // names is verify-ca's check exactly.
        TlsMode::VerifyCa => match presented_name(host) {
            Some(name) => pgwire_replication::TlsConfig::verify_full(ca).with_sni_hostname(name),
            None => pgwire_replication::TlsConfig::verify_ca(ca),
        },
        TlsMode::VerifyFull => pgwire_replication::TlsConfig::verify_full(ca),
    }
}

/// DNS names seen in server certificates whose chain verified, by the host we connected to.
static PRESENTED_NAMES: OnceLock<Mutex<HashMap<String, String>>> = OnceLock::new();

fn presented_name(host: &str) -> Option<String> {
    PRESENTED_NAMES.get()?.lock().ok()?.get(host).cloned()
}

fn remember_presented(host: &str, presented: &[String]) {
    let name = presented
        .iter()
        .find_map(|p| p.strip_prefix("DnsName(\"")?.strip_suffix("\")"));
    if let (Some(name), Ok(mut names)) =
        (name, PRESENTED_NAMES.get_or_init(Default::default).lock())
    {
        names.insert(host.to_string(), name.to_string());
    }
}

fn root_store(tls: &TlsConfig) -> Result<rustls::RootCertStore, PgError> {
    let mut roots = rustls::RootCertStore::empty();
    let Some(path) = &tls.ca_file else {
        return Err(PgError::Setup(
            "tls.mode verify-ca and verify-full need tls.ca_file (the CA's PEM)".into(),
        ));
    };
    let pem = std::fs::read(path)
        .map_err(|e| PgError::Setup(format!("tls.ca_file {}: {e}", path.display())))?;
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert =
            cert.map_err(|e| PgError::Setup(format!("tls.ca_file {}: {e}", path.display())))?;
        roots
            .add(cert)
            .map_err(|e| PgError::Setup(format!("tls.ca_file {}: {e}", path.display())))?;
    }
    if roots.is_empty() {
        return Err(PgError::Setup(format!(
            "tls.ca_file {} holds no certificate",
            path.display()
        )));
    }
    Ok(roots)
}

/// `require`: encrypt, but accept any certificate (libpq's meaning of require).
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to the CA; the name in the certificate is not checked.
#[derive(Debug)]
struct IgnoreHostname(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for IgnoreHostname {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForName)) => {
                Ok(ServerCertVerified::assertion())
            }
            Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
                presented,
                ..
            })) => {
                remember_presented(&server_name.to_str(), &presented);
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_comes_from_the_url_unless_configured() {
        let none = TlsConfig::default();
        let (mode, url) = resolve(
            "postgres://u@h/db?sslmode=verify-full&application_name=x",
            &none,
        )
        .unwrap();
        assert_eq!(
            (mode, url.as_str()),
            (TlsMode::VerifyFull, "postgres://u@h/db?application_name=x")
        );
        let (mode, url) = resolve("postgres://u@h/db", &none).unwrap();
        assert_eq!(
            (mode, url.as_str()),
            (TlsMode::Disable, "postgres://u@h/db")
        );
        let forced = TlsConfig {
            mode: Some(TlsMode::Require),
            ca_file: None,
        };
        assert_eq!(
            resolve("postgres://u@h/db?sslmode=disable", &forced)
                .unwrap()
                .0,
            TlsMode::Require
        );
        assert!(resolve("postgres://u@h/db?sslmode=sometimes", &none).is_err());
    }
}
