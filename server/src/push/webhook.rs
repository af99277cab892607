//! Webhook signatures (PROTOCOL.md §10.5): `Confab-Signature: t=<unix
//! seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.

use ring::hmac;

/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "confab-signature";

/// How far a receiver should accept `t` from its own clock, in seconds.
pub const REPLAY_WINDOW_SECS: u64 = 300;

/// The `Confab-Signature` value for `body` sent at `t` (unix seconds).
pub fn signature(secret: &[u8], t: u64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(t.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    format!("t={t},v1={}", hex::encode(ctx.sign().as_ref()))
}

/// Checks a `Confab-Signature` value the way a receiver should: `t` within
/// [`REPLAY_WINDOW_SECS`] of `now`, and one `v1` that matches (compared in
/// constant time). Used by tests and as the reference for receivers.
pub fn verify(secret: &[u8], header: &str, body: &[u8], now: u64) -> bool {
    let mut t = None;
    let mut sigs = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<u64>().ok(),
            Some(("v1", v)) => sigs.extend(hex::decode(v).ok()),
            _ => {}
        }
    }
    let Some(t) = t else { return false };
    if t.abs_diff(now) > REPLAY_WINDOW_SECS {
        return false;
    }
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut message = t.to_string().into_bytes();
    message.push(b'.');
    message.extend_from_slice(body);
    sigs.iter().any(|sig| hmac::verify(&key, &message, sig).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_and_verifies_with_a_replay_window() {
        let secret = [9u8; 32];
        let body = br#"{"v":1}"#;
        let h = signature(&secret, 1_767_225_600, body);
        assert!(h.starts_with("t=1767225600,v1="));
        assert_eq!(h.len(), "t=1767225600,v1=".len() + 64);
        assert!(verify(&secret, &h, body, 1_767_225_600 + 10));
        assert!(!verify(&secret, &h, body, 1_767_225_600 + REPLAY_WINDOW_SECS + 1));
        assert!(!verify(&secret, &h, b"{\"v\":2}", 1_767_225_600));
        assert!(!verify(&[8u8; 32], &h, body, 1_767_225_600));
        assert!(!verify(&secret, "v1=00", body, 1_767_225_600));
        // The known answer of PROTOCOL.md §10.5.
        let secret: Vec<u8> = (0u8..32).collect();
        let body = br#"{"v":1,"type":"message","id":"43-9-12","user_id":"18","device_id":"43","conversation_id":"9","seq":"12","sender_id":"17","sender_username":"alice","sent_at_ms":"1767225604210","unread_count":"3"}"#;
        assert_eq!(body.len(), 195);
        assert_eq!(
            signature(&secret, 1_767_225_607, body),
            "t=1767225607,v1=4f0e2ba9f05d64eaf7b389d07ed75173102763cf8733428149690f242da4314f"
        );
    }
}
