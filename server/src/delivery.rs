//! The delivery seam: everything that reaches live sessions goes through
//! [`Delivery`]. On one node the session table ([`crate::hub::Hub`])
//! implements it; in a cluster, a router that also reaches the sessions
//! held by other nodes stands in its place. Frames are encoded once
//! (length-prefixed `ServerFrame`s) and the same bytes go to every session.

use bytes::Bytes;
use confab_protocol::ErrorCode;

/// Where live events go.
pub trait Delivery: Send + Sync + 'static {
    /// Queues each frame for every live session of its user (the events of
    /// one stored command, in order). Takes the frames, so that a user's
    /// only session gets the frame itself: cloning a `Bytes` made from a
    /// `Vec` allocates to share it.
    fn deliver(&self, frames: Vec<(u64, Bytes)>);

    /// Queues a frame for one session of a user (a presence update to a
    /// subscriber).
    fn deliver_to_session(&self, user: u64, session: u64, frame: Bytes);

    /// Delivers an ephemeral event (typing) to every live session of each
    /// user: as a QUIC datagram (`datagram`, no length prefix) where the
    /// session negotiated it, else as `frame`. Never stored.
    fn deliver_ephemeral(&self, users: &[u64], frame: &Bytes, datagram: &Bytes);

    /// Ends every live session of a device with `code`, except the session
    /// `keep` (the one that asked, on logout).
    fn end_device_sessions(&self, user: u64, device: u64, code: ErrorCode, keep: Option<u64>);
}
