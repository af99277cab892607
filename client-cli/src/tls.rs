//! Server authentication by certificate fingerprint. Confab servers usually
//! run with a self-signed certificate, so the client pins the SHA-256 of
//! the server's certificate (like SSH's known_hosts) instead of asking a
//! CA. The handshake signature is still verified against the certificate's
//! key, so a pinned fingerprint cannot be replayed by another server.

use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

/// ALPN protocol id.
pub const ALPN: &[u8] = b"confab/1";

/// How to decide whether the server is the right one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// Accept only a certificate with this SHA-256 fingerprint (hex).
    Fingerprint(String),
    /// Accept any certificate and report its fingerprint (first contact;
    /// the caller stores it and pins it from then on).
    FirstUse,
}

/// Lowercase hex SHA-256 of a DER certificate.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// Normalizes a fingerprint as people write it ("sha256:AB:CD…").
pub fn normalize_fingerprint(s: &str) -> String {
    let s = s.trim();
    let s = s.strip_prefix("sha256:").or_else(|| s.strip_prefix("SHA256:")).unwrap_or(s);
    s.chars().filter(|c| c.is_ascii_hexdigit()).collect::<String>().to_ascii_lowercase()
}

#[derive(Debug)]
pub(crate) struct PinVerifier {
    trust: Trust,
    seen: Mutex<Option<String>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl PinVerifier {
    pub(crate) fn seen(&self) -> Option<String> {
        self.seen.lock().map(|g| g.clone()).unwrap_or_else(|p| p.into_inner().clone())
    }
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let fp = fingerprint(end_entity);
        if let Ok(mut seen) = self.seen.lock() {
            *seen = Some(fp.clone());
        }
        match &self.trust {
            Trust::Fingerprint(pinned) if *pinned != fp => {
                Err(rustls::Error::General(format!("certificate fingerprint {fp} does not match the pinned {pinned}")))
            }
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Only TLS 1.3 is offered.
        Err(rustls::Error::PeerIncompatible(rustls::PeerIncompatible::Tls12NotOffered))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// A TLS 1.3 client config with ALPN `confab/1` and the pin verifier.
pub(crate) fn client_config(trust: Trust) -> Result<(Arc<rustls::ClientConfig>, Arc<PinVerifier>), rustls::Error> {
    client_config_with(trust, rustls::crypto::ring::default_provider())
}

fn client_config_with(
    trust: Trust,
    provider: rustls::crypto::CryptoProvider,
) -> Result<(Arc<rustls::ClientConfig>, Arc<PinVerifier>), rustls::Error> {
    let provider = Arc::new(provider);
    let verifier = Arc::new(PinVerifier { trust, seen: Mutex::new(None), provider: Arc::clone(&provider) });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok((Arc::new(config), verifier))
}

/// The TLS 1.3 client settings the library uses (ALPN `confab/1`,
/// fingerprint trust), for tools that speak raw frames.
pub fn rustls_config(trust: Trust) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    client_config(trust).map(|(config, _)| config)
}

/// The same with the cipher suites of `provider` (a ring provider whose
/// suites or their order were changed), for tools that test what a server
/// chooses.
pub fn rustls_config_with(
    trust: Trust,
    provider: rustls::crypto::CryptoProvider,
) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    client_config_with(trust, provider).map(|(config, _)| config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_normalize() {
        assert_eq!(normalize_fingerprint("sha256:AB:cd:01"), "abcd01");
        assert_eq!(normalize_fingerprint(" abcd "), "abcd");
    }
}
