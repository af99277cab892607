//! Web Push: message encryption (RFC 8291, `aes128gcm` from RFC 8188) and
//! VAPID (RFC 8292), all with ring — the crypto rustls already brings.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use ring::{aead, agreement, hkdf};
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;

use crate::setup::{SetupError, create_private_dir, warn_if_readable_by_others, write_private};

/// The record size the server announces (one record always suffices).
const RECORD_SIZE: u32 = 4096;
/// Plaintext is padded up to a multiple of this, so the ciphertext length
/// says little about what is inside.
const PAD_TO: usize = 128;
/// Most plaintext bytes in one notification: push services take 4096-byte
/// bodies, of which the header takes 86 and the tag and delimiter 17.
pub const MAX_PLAINTEXT: usize = 4096 - 86 - 17;
/// How long a VAPID token is valid (RFC 8292 allows at most 24 h).
const VAPID_LIFETIME_SECS: u64 = 12 * 3600;

/// Encryption failures: a subscription key that is not a P-256 point, or a
/// payload that does not fit.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// `p256dh` is not a valid uncompressed P-256 point.
    #[error("the subscription key is not a valid P-256 point")]
    BadKey,
    /// `auth` is not 16 bytes.
    #[error("the subscription auth secret is not 16 bytes")]
    BadAuth,
    /// The payload is larger than one push message can carry.
    #[error("the payload is too large for Web Push")]
    TooLarge,
    /// The random generator or a primitive failed.
    #[error("crypto failure")]
    Internal,
}

struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

fn hkdf(salt: &[u8], ikm: &[u8], info: &[&[u8]], out: &mut [u8]) -> Result<(), CryptoError> {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(ikm);
    let okm = prk.expand(info, Len(out.len())).map_err(|_| CryptoError::Internal)?;
    okm.fill(out).map_err(|_| CryptoError::Internal)
}

/// Encrypts `plaintext` for a subscription (`ua_public` = `p256dh`,
/// `auth`): the complete `aes128gcm` body (header, one record).
pub fn encrypt(ua_public: &[u8], auth: &[u8], plaintext: &[u8], rng: &SystemRandom) -> Result<Vec<u8>, CryptoError> {
    if auth.len() != 16 {
        return Err(CryptoError::BadAuth);
    }
    if plaintext.len() > MAX_PLAINTEXT {
        return Err(CryptoError::TooLarge);
    }
    // RFC 8291 §3.4: a fresh sender key pair for every message.
    let as_private =
        agreement::EphemeralPrivateKey::generate(&agreement::ECDH_P256, rng).map_err(|_| CryptoError::Internal)?;
    let as_public = as_private.compute_public_key().map_err(|_| CryptoError::Internal)?;
    let peer = agreement::UnparsedPublicKey::new(&agreement::ECDH_P256, ua_public);
    let mut ikm = [0u8; 32];
    agreement::agree_ephemeral(as_private, &peer, |ecdh_secret| {
        // IKM = HKDF(auth, ecdh_secret, "WebPush: info" 0x00 ua_public as_public)
        hkdf(auth, ecdh_secret, &[b"WebPush: info\0", ua_public, as_public.as_ref()], &mut ikm)
    })
    .map_err(|_| CryptoError::BadKey)??;

    let mut salt = [0u8; 16];
    rng.fill(&mut salt).map_err(|_| CryptoError::Internal)?;
    let (mut cek, mut nonce) = ([0u8; 16], [0u8; 12]);
    hkdf(&salt, &ikm, &[b"Content-Encoding: aes128gcm\0"], &mut cek)?;
    hkdf(&salt, &ikm, &[b"Content-Encoding: nonce\0"], &mut nonce)?;

    // One record: plaintext, the last-record delimiter 0x02, zero padding.
    let padded = (plaintext.len() + 1).div_ceil(PAD_TO) * PAD_TO;
    let padded = padded.min(MAX_PLAINTEXT + 1);
    let mut record = Vec::with_capacity(padded + 16);
    record.extend_from_slice(plaintext);
    record.push(2);
    record.resize(padded, 0);
    let key =
        aead::LessSafeKey::new(aead::UnboundKey::new(&aead::AES_128_GCM, &cek).map_err(|_| CryptoError::Internal)?);
    key.seal_in_place_append_tag(aead::Nonce::assume_unique_for_key(nonce), aead::Aad::empty(), &mut record)
        .map_err(|_| CryptoError::Internal)?;

    // Header: salt, record size, key id length, key id (the sender's key).
    let key_id = as_public.as_ref();
    let mut body = Vec::with_capacity(21 + key_id.len() + record.len());
    body.extend_from_slice(&salt);
    body.extend_from_slice(&RECORD_SIZE.to_be_bytes());
    body.push(key_id.len() as u8);
    body.extend_from_slice(key_id);
    body.extend_from_slice(&record);
    Ok(body)
}

/// Checks that `p256dh` is a P-256 point we can agree a key with (so a bad
/// subscription is refused at registration, not at the first message).
pub fn check_subscription_key(ua_public: &[u8], rng: &SystemRandom) -> Result<(), CryptoError> {
    let key =
        agreement::EphemeralPrivateKey::generate(&agreement::ECDH_P256, rng).map_err(|_| CryptoError::Internal)?;
    let peer = agreement::UnparsedPublicKey::new(&agreement::ECDH_P256, ua_public);
    agreement::agree_ephemeral(key, &peer, |_| ()).map_err(|_| CryptoError::BadKey)
}

/// The server's VAPID identity (RFC 8292).
pub struct Vapid {
    key: EcdsaKeyPair,
    public_b64: String,
    subject: String,
    path: PathBuf,
}

impl std::fmt::Debug for Vapid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vapid").field("public_key", &self.public_b64).field("path", &self.path).finish()
    }
}

impl Vapid {
    /// Loads the PKCS#8 PEM key pair at `path`, generating it (mode 0600)
    /// if the file does not exist. `subject` is the `sub` claim (empty:
    /// none).
    pub fn load_or_generate(path: &Path, subject: &str, rng: &SystemRandom) -> Result<Vapid, SetupError> {
        if !path.exists() {
            if let Some(dir) = path.parent() {
                create_private_dir(dir)?;
            }
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, rng)
                .map_err(|_| SetupError::Invalid("generating the VAPID key pair failed".into()))?;
            write_private(path, pem("PRIVATE KEY", pkcs8.as_ref()).as_bytes())?;
            tracing::info!(path = %path.display(), "generated a VAPID key pair");
        }
        warn_if_readable_by_others(path, "the VAPID private key");
        let pem = std::fs::read(path).map_err(SetupError::file("reading the VAPID key", path))?;
        let invalid = |why: String| SetupError::Invalid(format!("{}: {why}", path.display()));
        let der = match PrivateKeyDer::from_pem_slice(&pem) {
            Ok(PrivateKeyDer::Pkcs8(der)) => der,
            Ok(_) => return Err(invalid("the VAPID key must be PKCS#8 (BEGIN PRIVATE KEY)".into())),
            Err(e) => return Err(invalid(format!("not a PEM private key: {e}"))),
        };
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der.secret_pkcs8_der(), rng)
            .map_err(|e| invalid(format!("not a P-256 key pair: {e}")))?;
        let public_b64 = URL_SAFE_NO_PAD.encode(key.public_key().as_ref());
        Ok(Vapid { key, public_b64, subject: subject.to_string(), path: path.to_path_buf() })
    }

    /// The public key as sent in `Welcome.vapid_public_key` and `k=`:
    /// the uncompressed point, base64url without padding.
    pub fn public_key(&self) -> &str {
        &self.public_b64
    }

    /// The `Authorization` header value for a request to `origin`
    /// (`scheme://host[:port]` of the push endpoint) at `now_secs`.
    pub fn authorization(&self, origin: &str, now_secs: u64, rng: &SystemRandom) -> Result<String, CryptoError> {
        let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ES256"}"#);
        let mut claims = serde_json::json!({ "aud": origin, "exp": now_secs + VAPID_LIFETIME_SECS });
        if !self.subject.is_empty() {
            claims["sub"] = serde_json::Value::String(self.subject.clone());
        }
        let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signing_input = format!("{header}.{claims}");
        // ES256 in JWS is the fixed-size r || s form, which ring produces.
        let signature = self.key.sign(rng, signing_input.as_bytes()).map_err(|_| CryptoError::Internal)?;
        let jwt = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()));
        Ok(format!("vapid t={jwt}, k={}", self.public_b64))
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};

    #[test]
    fn vapid_key_is_generated_once_private_and_signs_verifiable_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("push/vapid.pem");
        let rng = SystemRandom::new();
        let a = Vapid::load_or_generate(&path, "mailto:ops@example.com", &rng).unwrap();
        let b = Vapid::load_or_generate(&path, "", &rng).unwrap();
        assert_eq!(a.public_key(), b.public_key());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let auth = a.authorization("https://push.example.net", 1_000_000, &rng).unwrap();
        let rest = auth.strip_prefix("vapid t=").unwrap();
        let (jwt, k) = rest.split_once(", k=").unwrap();
        assert_eq!(k, a.public_key());
        let (input, sig) = jwt.rsplit_once('.').unwrap();
        let public = URL_SAFE_NO_PAD.decode(k).unwrap();
        assert_eq!(public.len(), 65);
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &public)
            .verify(input.as_bytes(), &URL_SAFE_NO_PAD.decode(sig).unwrap())
            .unwrap();
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(input.split_once('.').unwrap().1).unwrap()).unwrap();
        assert_eq!(claims["aud"], "https://push.example.net");
        assert_eq!(claims["exp"], 1_000_000 + VAPID_LIFETIME_SECS);
        assert_eq!(claims["sub"], "mailto:ops@example.com");
    }

    #[test]
    fn encrypts_for_a_subscription_that_decrypts_it() {
        // The receiving side from an independent implementation.
        use web_push_native::p256::elliptic_curve::sec1::ToEncodedPoint;
        let ua = web_push_native::p256::SecretKey::random(&mut rand::rngs::OsRng);
        let ua_public = ua.public_key().to_encoded_point(false);
        let auth = [7u8; 16];
        let rng = SystemRandom::new();
        let body = encrypt(ua_public.as_bytes(), &auth, b"{\"v\":1}", &rng).unwrap();
        assert_eq!(&body[16..20], &RECORD_SIZE.to_be_bytes());
        assert_eq!(body[20], 65);
        // Padded: 8 bytes of plaintext + delimiter become one 128-byte block.
        assert_eq!(body.len(), 21 + 65 + PAD_TO + 16);
        let plain = web_push_native::decrypt(body, &ua, web_push_native::Auth::from_slice(&auth)).expect("decrypts");
        assert_eq!(plain, b"{\"v\":1}");
        assert!(matches!(encrypt(&[4u8; 65], &auth, b"x", &rng), Err(CryptoError::BadKey)));
        assert!(matches!(check_subscription_key(&[4u8; 65], &rng), Err(CryptoError::BadKey)));
        assert!(check_subscription_key(ua_public.as_bytes(), &rng).is_ok());
        assert!(matches!(
            encrypt(ua_public.as_bytes(), &auth, &[b'x'; MAX_PLAINTEXT + 1], &rng),
            Err(CryptoError::TooLarge)
        ));
    }
}
