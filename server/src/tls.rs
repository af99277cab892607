//! Certificates and TLS settings. With no `--cert`/`--key`, a self-signed
//! certificate for localhost is generated on first start into
//! `DATA_DIR/tls/` (key mode 0600) and reused afterwards; clients pin its
//! SHA-256 fingerprint.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

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
pub fn load_or_generate(data_dir: &Path, cert: Option<&Path>, key: Option<&Path>) -> anyhow::Result<Identity> {
    if let (Some(cert), Some(key)) = (cert, key) {
        return load(cert, key, false);
    }
    let dir = data_dir.join("tls");
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    if cert_path.exists() && key_path.exists() {
        return load(&cert_path, &key_path, false);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
    let generated = rcgen::generate_simple_self_signed(names).context("generating a self-signed certificate")?;
    write_private(&key_path, generated.signing_key.serialize_pem().as_bytes())?;
    std::fs::write(&cert_path, generated.cert.pem()).with_context(|| format!("writing {}", cert_path.display()))?;
    let mut id = load(&cert_path, &key_path, true)?;
    id.generated = true;
    Ok(id)
}

fn load(cert: &Path, key: &Path, generated: bool) -> anyhow::Result<Identity> {
    let pem = std::fs::read(cert).with_context(|| format!("reading certificate {}", cert.display()))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing certificate {}", cert.display()))?;
    if chain.is_empty() {
        bail!("no certificate found in {}", cert.display());
    }
    let key_pem = std::fs::read(key).with_context(|| format!("reading key {}", key.display()))?;
    let key =
        PrivateKeyDer::from_pem_slice(&key_pem).with_context(|| format!("parsing private key {}", key.display()))?;
    Ok(Identity { chain, key, cert_path: cert.to_path_buf(), generated })
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path).with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The ring crypto provider: the only one in the dependency tree.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// TLS 1.3 server settings with ALPN `confab/1`.
pub fn server_config(id: &Identity) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3 with ring")?
        .with_no_client_auth()
        .with_single_cert(id.chain.clone(), id.key.clone_key())
        .context("certificate and key do not match")?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    // QUIC needs 0-RTT off or bounded; we never accept early data.
    config.max_early_data_size = 0;
    Ok(Arc::new(config))
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
}
