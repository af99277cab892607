//! Certificates and TLS settings. With no `--cert`/`--key`, a self-signed
//! certificate for localhost is generated on first start into
//! `DATA_DIR/tls/` (key mode 0600) and reused afterwards; clients pin its
//! SHA-256 fingerprint.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

use crate::setup::{SetupError, warn_if_readable_by_others, write_private};

/// ALPN protocol id for every TLS-based transport.
pub const ALPN: &[u8] = b"confab/1";

/// The server's certificate chain and key.
#[derive(Debug)]
pub struct Identity {
    /// Leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: PrivateKeyDer<'static>,
    /// Where the certificate was loaded from.
    pub cert_path: PathBuf,
    /// Whether it was generated just now.
    pub generated: bool,
}

impl Identity {
    /// Lowercase hex SHA-256 of the leaf certificate's DER: what clients pin.
    pub fn fingerprint(&self) -> String {
        self.chain.first().map(|c| fingerprint(c)).unwrap_or_default()
    }
}

/// Lowercase hex SHA-256 of a DER certificate.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// Loads `cert`/`key`, or the generated pair in `data_dir/tls`, generating
/// it on first start.
pub fn load_or_generate(data_dir: &Path, cert: Option<&Path>, key: Option<&Path>) -> Result<Identity, SetupError> {
    if let (Some(cert), Some(key)) = (cert, key) {
        return load(cert, key, false);
    }
    let dir = data_dir.join("tls");
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    if cert_path.exists() && key_path.exists() {
        return load(&cert_path, &key_path, false);
    }
    std::fs::create_dir_all(&dir).map_err(SetupError::file("creating", &dir))?;
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
    let generated = rcgen::generate_simple_self_signed(names)
        .map_err(|e| SetupError::Invalid(format!("generating a self-signed certificate: {e}")))?;
    write_private(&key_path, generated.signing_key.serialize_pem().as_bytes())?;
    std::fs::write(&cert_path, generated.cert.pem()).map_err(SetupError::file("writing", &cert_path))?;
    let mut id = load(&cert_path, &key_path, true)?;
    id.generated = true;
    Ok(id)
}

fn load(cert: &Path, key: &Path, generated: bool) -> Result<Identity, SetupError> {
    let pem = std::fs::read(cert).map_err(SetupError::file("reading certificate", cert))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| SetupError::Invalid(format!("parsing certificate {}: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(SetupError::Invalid(format!("no certificate found in {}", cert.display())));
    }
    let key_pem = std::fs::read(key).map_err(SetupError::file("reading key", key))?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| SetupError::Invalid(format!("parsing private key {}: {e}", key.display())))?;
    warn_if_readable_by_others(key, "the TLS private key");
    Ok(Identity { chain, key: key_der, cert_path: cert.to_path_buf(), generated })
}

/// The ring crypto provider: the only one in the dependency tree.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// TLS 1.3 server settings for the protocol on TCP: ALPN `confab/1`, which
/// a client must offer (§2.2). A ClientHello offering only other protocols
/// gets rustls' `no_application_protocol` alert (RFC 7301 §3.2); one
/// without the ALPN extension, which rustls would serve, is refused with
/// `access_denied` ([`RequireAlpn`]).
pub fn server_config(id: &Identity) -> Result<Arc<rustls::ServerConfig>, SetupError> {
    let mut config = base_config(id)?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    config.cert_resolver = Arc::new(RequireAlpn(Arc::clone(&config.cert_resolver)));
    // We never accept early data.
    config.max_early_data_size = 0;
    Ok(Arc::new(config))
}

/// TLS 1.3 server settings for QUIC: ALPN `confab/1`. rustls holds QUIC to
/// RFC 9001 §8.1 itself: a ClientHello without `confab/1`, with no ALPN
/// extension or other protocols only, fails with `no_application_protocol`
/// (QUIC error 0x178).
pub fn quic_config(id: &Identity) -> Result<Arc<rustls::ServerConfig>, SetupError> {
    let mut config = base_config(id)?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    // QUIC needs 0-RTT off or bounded; we never accept early data.
    config.max_early_data_size = 0;
    Ok(Arc::new(config))
}

/// TLS 1.3 server settings for HTTP (`--http-tls`): ALPN `http/1.1`, and
/// clients that offer none are served too.
pub fn http_config(id: &Identity) -> Result<Arc<rustls::ServerConfig>, SetupError> {
    let mut config = base_config(id)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.max_early_data_size = 0;
    Ok(Arc::new(config))
}

fn base_config(id: &Identity) -> Result<rustls::ServerConfig, SetupError> {
    let mut config = rustls::ServerConfig::builder_with_provider(server_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| SetupError::Invalid(format!("TLS 1.3 with ring: {e}")))?
        .with_no_client_auth()
        .with_single_cert(id.chain.clone(), id.key.clone_key())
        .map_err(|e| SetupError::Invalid(format!("certificate and key do not match: {e}")))?;
    config.ignore_client_order = true;
    Ok(config)
}

/// The ring provider with the server's cipher-suite preference: of the
/// suites a client offers, the first in this order wins (the server's
/// order, not the client's). TLS_AES_128_GCM_SHA256 first: every TLS 1.3
/// client must offer it (RFC 8446 §9.1), and its key schedule runs on
/// SHA-256, which x86 and ARM cores compute in hardware, where
/// TLS_AES_256_GCM_SHA384 (rustls' first choice) runs it on SHA-384 in
/// software. That hashing was 7 % of confabd's CPU per QUIC handshake
/// (issue 16). ChaCha20 next, for cores without AES instructions.
fn server_provider() -> Arc<rustls::crypto::CryptoProvider> {
    use rustls::crypto::ring::cipher_suite;
    let mut provider = rustls::crypto::ring::default_provider();
    let order = [
        cipher_suite::TLS13_AES_128_GCM_SHA256,
        cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        cipher_suite::TLS13_AES_256_GCM_SHA384,
    ];
    let rank =
        |s: &rustls::SupportedCipherSuite| order.iter().position(|o| o.suite() == s.suite()).unwrap_or(order.len());
    provider.cipher_suites.sort_by_key(rank);
    Arc::new(provider)
}

/// Refuses a ClientHello with no ALPN extension (rustls goes on without
/// one); without a certificate the handshake fails with an `access_denied`
/// alert. A ClientHello that offers only other protocols is resolved, and
/// rustls then refuses it with `no_application_protocol`.
#[derive(Debug)]
struct RequireAlpn(Arc<dyn rustls::server::ResolvesServerCert>);

impl rustls::server::ResolvesServerCert for RequireAlpn {
    fn resolve(&self, hello: rustls::server::ClientHello<'_>) -> Option<Arc<rustls::sign::CertifiedKey>> {
        if hello.alpn().is_some() { self.0.resolve(hello) } else { None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_then_reuses() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_generate(dir.path(), None, None).unwrap();
        assert!(first.generated);
        let second = load_or_generate(dir.path(), None, None).unwrap();
        assert!(!second.generated);
        assert_eq!(first.fingerprint(), second.fingerprint());
        assert_eq!(first.fingerprint().len(), 64);
        server_config(&second).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("tls/key.pem")).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    /// Runs a TLS 1.3 handshake in memory between a client offering
    /// `suites` in that order and confabd's TCP settings; the suite agreed
    /// on.
    fn handshake(suites: Vec<rustls::SupportedCipherSuite>) -> rustls::SupportedCipherSuite {
        let dir = tempfile::tempdir().unwrap();
        let id = load_or_generate(dir.path(), None, None).unwrap();
        let mut server = rustls::ServerConnection::new(server_config(&id).unwrap()).unwrap();
        let mut provider = rustls::crypto::ring::default_provider();
        provider.cipher_suites = suites;
        let trust = confab_client::tls::Trust::Fingerprint(id.fingerprint());
        let config = confab_client::tls::rustls_config_with(trust, provider).unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut client = rustls::ClientConnection::new(config, name).unwrap();
        for _ in 0..10 {
            let mut wire = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut wire).unwrap();
            }
            server.read_tls(&mut &wire[..]).unwrap();
            server.process_new_packets().unwrap();
            let mut wire = Vec::new();
            while server.wants_write() {
                server.write_tls(&mut wire).unwrap();
            }
            client.read_tls(&mut &wire[..]).unwrap();
            client.process_new_packets().unwrap();
            if !client.is_handshaking() && !server.is_handshaking() {
                return server.negotiated_cipher_suite().unwrap();
            }
        }
        panic!("the handshake did not finish");
    }

    #[test]
    fn the_server_picks_aes_128_gcm_whatever_the_clients_order() {
        use rustls::crypto::ring::cipher_suite::*;
        // rustls' own default order puts AES-256 first.
        let defaults = rustls::crypto::ring::default_provider().cipher_suites;
        assert_eq!(handshake(defaults).suite(), TLS13_AES_128_GCM_SHA256.suite());
        let reversed = vec![TLS13_CHACHA20_POLY1305_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_AES_128_GCM_SHA256];
        assert_eq!(handshake(reversed).suite(), TLS13_AES_128_GCM_SHA256.suite());
        // A client without it still gets served, with its best other suite.
        let only_256 = vec![TLS13_AES_256_GCM_SHA384];
        assert_eq!(handshake(only_256).suite(), TLS13_AES_256_GCM_SHA384.suite());
        let no_aes_128 = vec![TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256];
        assert_eq!(handshake(no_aes_128).suite(), TLS13_CHACHA20_POLY1305_SHA256.suite());
    }
}
