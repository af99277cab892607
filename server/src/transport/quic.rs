//! The QUIC accept loop: a connection permit before each accept, the
//! Retry policy (address validation only where spoofed Initials could
//! hurt), the handshake deadline and the session stream. Request streams
//! (spec §2.1) are read by the session's own task (`streams`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use confab_protocol::{ErrorCode, framing};
use tokio_util::sync::CancellationToken;

use super::Ingress;
use super::connection;
use super::streams::{StreamLimits, Streams};
use super::tcp::refuse_per_address;
use crate::link::{QuicLink, Transport};

/// Accepts QUIC connections: the first bidirectional stream is the session
/// stream; later ones are request streams.
pub async fn serve(ingress: Arc<Ingress>, endpoint: quinn::Endpoint, shutdown: CancellationToken) {
    let handshakes = Arc::new(AtomicUsize::new(0));
    loop {
        let mut incoming = tokio::select! {
            _ = shutdown.cancelled() => return,
            i = endpoint.accept() => match i { Some(i) => i, None => return },
        };
        let peer = incoming.remote_address();
        // An Initial's source address may be spoofed: once spoofed Initials
        // could do harm (take many permits through their handshakes, or half
        // of a victim address's slots), the peer proves its address first
        // with a Retry round trip.
        let retry = wants_retry(
            handshakes.load(Ordering::Relaxed),
            ingress.per_address.open(peer.ip()),
            ingress.per_address.max(),
        );
        if retry && !incoming.remote_address_validated() && incoming.may_retry() {
            match incoming.retry() {
                Ok(()) => continue,
                Err(e) => incoming = e.into_incoming(),
            }
        }
        let Some(slot) = ingress.per_address.admit(peer.ip()) else {
            refuse_per_address(&ingress, peer);
            incoming.refuse();
            continue;
        };
        // The permit after the accept (as on TCP): the loop takes no more
        // Initials until it comes, and a freed permit goes to a connection
        // that is waiting, not to an idle listener.
        let permit = tokio::select! {
            _ = shutdown.cancelled() => return,
            p = Arc::clone(&ingress.connections).acquire_owned() => match p { Ok(p) => p, Err(_) => return },
        };
        let (ingress, shutdown) = (Arc::clone(&ingress), shutdown.clone());
        let in_handshake = Handshaking::new(&handshakes);
        ingress.tracker.clone().spawn(async move {
            let _permit = (permit, slot);
            let deadline = ingress.handshake_timeout;
            let handshake = tokio::time::timeout(deadline, async { incoming.accept()?.await }).await;
            drop(in_handshake);
            let conn = match handshake {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "QUIC handshake failed"),
                Err(_) => return tracing::debug!(%peer, "QUIC handshake timed out"),
            };
            let (send, recv) = match tokio::time::timeout(deadline, conn.accept_bi()).await {
                Ok(Ok(s)) => s,
                _ => return conn.close(quinn::VarInt::from_u32(ErrorCode::HANDSHAKE_TIMEOUT.0), b"no session stream"),
            };
            let limits = StreamLimits { max_bytes: max_stream_bytes(&ingress), deadline };
            let streams = Streams::new(conn.clone(), limits);
            let link = QuicLink::new(recv, send, conn.clone());
            // Boxed, so that this task's own future is no larger than the
            // handshake's while the session lives.
            let code =
                Box::pin(connection::serve(Arc::clone(&ingress), link, peer, Transport::Quic, Some(streams), shutdown))
                    .await;
            let reason = code.name().unwrap_or("closed");
            // Give the final frames a moment to be acknowledged, then close.
            tokio::time::sleep(Duration::from_millis(50)).await;
            conn.close(quinn::VarInt::from_u32(code.0), reason.as_bytes());
            tracing::debug!(%peer, %code, "QUIC session ended");
        });
    }
}

/// QUIC handshakes in progress from which on every new connection from an
/// address not yet validated gets a Retry first.
const RETRY_FROM_HANDSHAKES: usize = 128;

/// Whether a new QUIC connection from an unvalidated address must prove
/// its address (Retry) first: with `handshakes` in progress server-wide,
/// and `open` of its address's `max` slots taken. Asking always would
/// cost every connection a round trip. It would also slow connects down
/// badly under load: confab-bench's QUIC connects fell from ~600 to ~25
/// per second at 3,000 held sessions. So the Retry comes only where
/// spoofed Initials could hurt: many handshakes at once (each one holds a
/// permit until its deadline), or an address whose slots are half taken
/// (spoofing its address must not lock its owner out).
fn wants_retry(handshakes: usize, open: usize, max: usize) -> bool {
    handshakes >= RETRY_FROM_HANDSHAKES || open.saturating_mul(2) >= max
}

/// Counts one QUIC handshake in progress while it lives.
struct Handshaking(Arc<AtomicUsize>);

impl Handshaking {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Handshaking(Arc::clone(count))
    }
}

impl Drop for Handshaking {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Bidirectional streams a client may have open at once: the session
/// stream plus request streams. quinn keeps two hash maps per connection
/// with an entry for every stream the client may open; 28 entries fit
/// maps of 32 buckets, where 32 needed 64: 1.1 KiB less for every idle
/// session (issue 16), for four fewer concurrent request streams.
pub const MAX_BIDI_STREAMS: u32 = 28;

/// The most a request stream may carry: one frame of `max_frame_bytes`
/// and its length prefix.
fn max_stream_bytes(ingress: &Ingress) -> usize {
    ingress.core.limits.max_frame_bytes as usize + framing::MAX_VARINT_LEN
}

/// The UDP receive buffer asked for (the kernel caps it at
/// `net.core.rmem_max` and doubles it for its own bookkeeping).
const RECEIVE_BUFFER_BYTES: usize = 4 << 20;

/// Gives the endpoint's socket a larger receive buffer than the default
/// (208 KiB on Linux). One endpoint task reads every connection's
/// datagrams; while it is busy, a burst of Initials (each padded to 1,200
/// bytes) fills the default buffer, and each datagram dropped there costs
/// its handshake a retransmission timeout, 1 s at first. With 64 clients
/// connecting at once (confab-bench hold, 3,000 sessions) the socket
/// dropped over 2,000 datagrams and the connect p99 was 1 s. The buffer
/// bounds the queue; it is not allocated up front.
pub fn size_receive_buffer(socket: &std::net::UdpSocket) {
    let socket = socket2::SockRef::from(socket);
    if let Err(e) = socket.set_recv_buffer_size(RECEIVE_BUFFER_BYTES) {
        return tracing::warn!(error = %e, "could not enlarge the QUIC socket's receive buffer");
    }
    // Linux reports twice what it grants (its bookkeeping share).
    let granted = socket.recv_buffer_size().map(|got| if cfg!(target_os = "linux") { got / 2 } else { got });
    match granted {
        Ok(got) if got < RECEIVE_BUFFER_BYTES => tracing::info!(
            bytes = got,
            wanted = RECEIVE_BUFFER_BYTES,
            "the QUIC socket's receive buffer is smaller than asked: raise net.core.rmem_max for fewer lost \
             handshake packets under load"
        ),
        _ => {}
    }
}

/// The file in the data dir holding the endpoint's stateless-reset key
/// and connection-ID key.
pub const RESET_KEY_FILE: &str = "quic-reset.key";
/// 32 bytes of HMAC key for reset tokens, then 8 of connection-ID key.
const RESET_KEY_LEN: usize = 40;

/// The endpoint's keys, kept in the data dir so they survive restarts: a
/// restarted server recognises the connection IDs it handed out before
/// (the ID generator's key) and answers their packets with a stateless
/// reset whose token the client already holds (the reset key), so a QUIC
/// client of a server that died learns it within one round trip of the
/// restart instead of waiting out its idle timeout (spec §2.1).
pub fn endpoint_config(data_dir: &std::path::Path) -> Result<quinn::EndpointConfig, crate::setup::SetupError> {
    use crate::setup::SetupError;
    let path = data_dir.join(RESET_KEY_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut fresh = [0u8; RESET_KEY_LEN];
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut fresh)
                .map_err(|_| SetupError::Invalid("no randomness for the QUIC reset key".into()))?;
            crate::setup::write_private(&path, &fresh)?;
            fresh.to_vec()
        }
        Err(e) => return Err(SetupError::file("reading", &path)(e)),
    };
    crate::setup::warn_if_readable_by_others(&path, "the QUIC reset key");
    let Ok(keys) = <[u8; RESET_KEY_LEN]>::try_from(bytes.as_slice()) else {
        return Err(SetupError::Invalid(format!(
            "{} holds {} bytes, not {RESET_KEY_LEN}: remove it and a new one is made (clients of the last run then \
             wait for their idle timeout once)",
            path.display(),
            bytes.len()
        )));
    };
    let (reset, cid) = keys.split_at(32);
    let reset_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, reset);
    let mut cid_key = [0u8; 8];
    cid_key.copy_from_slice(cid);
    let cid_key = u64::from_le_bytes(cid_key);
    let mut config = quinn::EndpointConfig::new(Arc::new(reset_key));
    config.cid_generator(move || Box::new(ConnectionIds::from_key(cid_key)));
    Ok(config)
}

/// Random bytes at the start of each connection ID.
const CID_NONCE_LEN: usize = 8;
/// Bytes of keyed hash after them, by which a restarted server knows its
/// own connection IDs.
const CID_TAG_LEN: usize = 4;

/// The endpoint's connection IDs: 8 random bytes, then 4 bytes of an HMAC
/// of them under the endpoint's connection-ID key, so that a restarted
/// server still recognises the IDs it handed out (and answers them with a
/// stateless reset) while other packets are dropped unanswered.
///
/// quinn's `HashedConnectionIdGenerator` does the same with 3 random bytes.
/// That is too few for a server holding many connections: the ID a Retry
/// packet gives the client is drawn without checking it against the IDs of
/// established connections, and quinn's endpoint looks up a packet's
/// destination ID among those first, Initial packets included. With 3,000
/// connections holding 8 IDs each, one Retry in about 700 handed out an ID
/// already in use; the client's next Initial then went to that connection,
/// which dropped it, and the handshake stalled until the client gave up.
/// With 8 random bytes that takes billions of connections.
struct ConnectionIds {
    key: ring::hmac::Key,
}

impl ConnectionIds {
    fn from_key(key: u64) -> Self {
        ConnectionIds { key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key.to_le_bytes()) }
    }

    fn tag(&self, nonce: &[u8]) -> [u8; CID_TAG_LEN] {
        let mut tag = [0u8; CID_TAG_LEN];
        tag.copy_from_slice(&ring::hmac::sign(&self.key, nonce).as_ref()[..CID_TAG_LEN]);
        tag
    }
}

impl quinn_proto::ConnectionIdGenerator for ConnectionIds {
    fn generate_cid(&mut self) -> quinn_proto::ConnectionId {
        let mut bytes = [0u8; CID_NONCE_LEN + CID_TAG_LEN];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut bytes[..CID_NONCE_LEN]);
        let tag = self.tag(&bytes[..CID_NONCE_LEN]);
        bytes[CID_NONCE_LEN..].copy_from_slice(&tag);
        quinn_proto::ConnectionId::new(&bytes)
    }

    fn validate(&self, cid: &quinn_proto::ConnectionId) -> Result<(), quinn_proto::InvalidCid> {
        if cid.len() != CID_NONCE_LEN + CID_TAG_LEN {
            return Err(quinn_proto::InvalidCid);
        }
        let (nonce, tag) = cid.split_at(CID_NONCE_LEN);
        // Every byte compared, whatever differs first: how long a check
        // takes tells an attacker nothing about the tag.
        let differ = self.tag(nonce).iter().zip(tag).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if differ == 0 { Ok(()) } else { Err(quinn_proto::InvalidCid) }
    }

    fn cid_len(&self) -> usize {
        CID_NONCE_LEN + CID_TAG_LEN
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_only_where_spoofed_initials_could_hurt() {
        assert!(!wants_retry(0, 0, 16), "a quiet server with a fresh address: no round trip");
        assert!(!wants_retry(RETRY_FROM_HANDSHAKES - 1, 7, 16));
        assert!(wants_retry(RETRY_FROM_HANDSHAKES, 0, 16), "many handshakes at once");
        assert!(wants_retry(0, 8, 16), "half of the address's slots taken");
        assert!(wants_retry(0, 1, 1), "a one-slot address that has it taken");
        assert!(wants_retry(0, 0, 0), "no slots at all: validate before refusing");
    }

    #[test]
    fn connection_ids_carry_the_key_tag() {
        use quinn_proto::ConnectionIdGenerator;
        let mut ids = ConnectionIds::from_key(7);
        let a = ids.generate_cid();
        let b = ids.generate_cid();
        assert_eq!(a.len(), ids.cid_len());
        assert_ne!(a, b, "random, not derived from a counter");
        assert!(ids.validate(&a).is_ok());
        assert!(ConnectionIds::from_key(7).validate(&b).is_ok(), "a restart with the same key knows them");
        assert!(ConnectionIds::from_key(8).validate(&a).is_err(), "another key does not");
        let mut forged = a.to_vec();
        forged[0] ^= 1;
        assert!(ids.validate(&quinn_proto::ConnectionId::new(&forged)).is_err());
        assert!(ids.validate(&quinn_proto::ConnectionId::new(&forged[..8])).is_err(), "wrong length");
    }

    #[test]
    fn handshakes_are_counted_while_they_last() {
        let count = Arc::new(AtomicUsize::new(0));
        let a = Handshaking::new(&count);
        let b = Handshaking::new(&count);
        assert_eq!(count.load(Ordering::Relaxed), 2);
        drop(a);
        assert_eq!(count.load(Ordering::Relaxed), 1);
        drop(b);
        assert_eq!(count.load(Ordering::Relaxed), 0);
    }
}
