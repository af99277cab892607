//! Limits: the defaults of protocol v1 and their wire form (`Limits` in
//! `Welcome`). The server enforces them; clients read them from `Welcome`.

use crate::pb;

/// Default largest frame: room for a 100,000-character message of 4-byte
/// characters (400,000 bytes) plus the envelope.
pub const DEFAULT_MAX_FRAME_BYTES: u32 = 512 * 1024;
/// Default largest message, in Unicode scalar values.
pub const DEFAULT_MAX_MESSAGE_CHARS: u32 = 100_000;
/// Default largest group, owner included.
pub const DEFAULT_MAX_GROUP_MEMBERS: u32 = 100;
/// Default `max_devices`: non-revoked devices per account.
pub const DEFAULT_MAX_DEVICES: u32 = 100;
/// Default `max_blocked`: users one account may block.
pub const DEFAULT_MAX_BLOCKED: u32 = 1000;
/// Default and largest page for sync, history and conversation lists.
pub const DEFAULT_MAX_PAGE_SIZE: u32 = 100;
/// Default heartbeat interval.
pub const DEFAULT_HEARTBEAT_INTERVAL_MS: u32 = 20_000;
/// A session silent for this many heartbeat intervals is dead.
pub const HEARTBEAT_GRACE_FACTOR: f64 = 2.5;
/// Default deadline for a complete `Hello` after the connection opens.
pub const DEFAULT_HANDSHAKE_TIMEOUT_MS: u32 = 10_000;
/// Default deadline for authenticating after the Welcome.
pub const DEFAULT_AUTH_TIMEOUT_MS: u32 = 30_000;
/// Consecutive malformed frames after which the session ends.
pub const MAX_CONSECUTIVE_MALFORMED: u32 = 8;
/// Consecutive frames refused before admission (no body, request id 0 or
/// in flight, not allowed in the state) after which the session ends.
pub const MAX_CONSECUTIVE_REFUSED: u32 = 64;
/// Consecutive rate-limited requests after which the session ends.
pub const MAX_CONSECUTIVE_REJECTED: u32 = 64;
/// The protocol versions this crate speaks.
pub const SUPPORTED_VERSIONS: &[u32] = &[1];

/// The limits a server enforces and advertises.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize), serde(default, deny_unknown_fields))]
pub struct Limits {
    /// Largest encoded frame in bytes (length prefix excluded).
    pub max_frame_bytes: u32,
    /// Largest message body in Unicode scalar values.
    pub max_message_chars: u32,
    /// Largest group, owner included.
    pub max_group_members: u32,
    /// Largest page for sync, history and conversation lists.
    pub max_page_size: u32,
    /// Most unanswered requests per session.
    pub max_in_flight: u32,
    /// Sustained sends per second per session.
    pub send_rate_per_sec: u32,
    /// Send burst per session.
    pub send_burst: u32,
    /// Sustained requests per second per session.
    pub request_rate_per_sec: u32,
    /// Request burst per session.
    pub request_burst: u32,
    /// Most presence subscriptions per session.
    pub max_presence_subscriptions: u32,
    /// Most entries in one list field of a request.
    pub max_list_items: u32,
    /// Most (non-revoked) devices per account.
    pub max_devices: u32,
    /// Most users one account may block.
    pub max_blocked: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            max_message_chars: DEFAULT_MAX_MESSAGE_CHARS,
            max_group_members: DEFAULT_MAX_GROUP_MEMBERS,
            max_page_size: DEFAULT_MAX_PAGE_SIZE,
            max_in_flight: 128,
            send_rate_per_sec: 50,
            send_burst: 100,
            request_rate_per_sec: 200,
            request_burst: 400,
            max_presence_subscriptions: 1000,
            max_list_items: 100,
            max_devices: DEFAULT_MAX_DEVICES,
            max_blocked: DEFAULT_MAX_BLOCKED,
        }
    }
}

impl Limits {
    /// The page size to use for a request's `limit` field: 0 means the
    /// maximum, anything above the maximum is clamped to it.
    pub fn page_size(&self, requested: u32) -> u32 {
        if requested == 0 { self.max_page_size } else { requested.min(self.max_page_size) }
    }
}

impl From<&Limits> for pb::Limits {
    fn from(l: &Limits) -> Self {
        pb::Limits {
            max_frame_bytes: l.max_frame_bytes,
            max_message_chars: l.max_message_chars,
            max_group_members: l.max_group_members,
            max_page_size: l.max_page_size,
            max_in_flight: l.max_in_flight,
            send_rate_per_sec: l.send_rate_per_sec,
            send_burst: l.send_burst,
            request_rate_per_sec: l.request_rate_per_sec,
            request_burst: l.request_burst,
            max_presence_subscriptions: l.max_presence_subscriptions,
            max_list_items: l.max_list_items,
            max_devices: l.max_devices,
            max_blocked: l.max_blocked,
        }
    }
}

impl From<&pb::Limits> for Limits {
    /// Reads advertised limits; a zero (absent) field falls back to the v1
    /// default so an older server's Welcome still gives usable limits.
    fn from(l: &pb::Limits) -> Self {
        let d = Limits::default();
        let or = |v: u32, default: u32| if v == 0 { default } else { v };
        Limits {
            max_frame_bytes: or(l.max_frame_bytes, d.max_frame_bytes),
            max_message_chars: or(l.max_message_chars, d.max_message_chars),
            max_group_members: or(l.max_group_members, d.max_group_members),
            max_page_size: or(l.max_page_size, d.max_page_size),
            max_in_flight: or(l.max_in_flight, d.max_in_flight),
            send_rate_per_sec: or(l.send_rate_per_sec, d.send_rate_per_sec),
            send_burst: or(l.send_burst, d.send_burst),
            request_rate_per_sec: or(l.request_rate_per_sec, d.request_rate_per_sec),
            request_burst: or(l.request_burst, d.request_burst),
            max_presence_subscriptions: or(l.max_presence_subscriptions, d.max_presence_subscriptions),
            max_list_items: or(l.max_list_items, d.max_list_items),
            max_devices: or(l.max_devices, d.max_devices),
            max_blocked: or(l.max_blocked, d.max_blocked),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_size_defaults_and_clamps() {
        let l = Limits::default();
        assert_eq!(l.page_size(0), 100);
        assert_eq!(l.page_size(7), 7);
        assert_eq!(l.page_size(10_000), 100);
    }

    #[test]
    fn wire_round_trip_and_zero_fallback() {
        let l = Limits { max_group_members: 7, ..Limits::default() };
        assert_eq!(Limits::from(&pb::Limits::from(&l)), l);
        assert_eq!(Limits::from(&pb::Limits::default()), Limits::default());
    }

    #[test]
    fn max_frame_fits_the_largest_message() {
        // 100,000 four-byte characters plus generous envelope overhead.
        assert!(DEFAULT_MAX_FRAME_BYTES as usize >= DEFAULT_MAX_MESSAGE_CHARS as usize * 4 + 1024);
    }
}
