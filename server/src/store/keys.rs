//! Every key layout of the store, in one place. Integers are big-endian so
//! that byte order is numeric order and prefix scans walk in sequence.
//! Nothing outside `store` builds or parses keys.
//!
//! Each keyspace has its own constructor, taking typed ids ([`UserId`],
//! [`ConversationId`] …), so a key built with its parts swapped does not
//! compile: `member(ConversationId(c), UserId(u))` is the only way to
//! write a `members` key.

/// Keyspace names.
pub const META: &str = "meta";
pub const USERS: &str = "users";
pub const USERNAMES: &str = "usernames";
pub const DEVICES: &str = "devices";
pub const USER_DEVICES: &str = "user_devices";
pub const TOKENS: &str = "tokens";
pub const CONVERSATIONS: &str = "conversations";
pub const DIRECT_PAIRS: &str = "direct_pairs";
pub const MEMBERS: &str = "members";
pub const USER_CONVERSATIONS: &str = "user_conversations";
pub const MESSAGES: &str = "messages";
pub const INBOX: &str = "inbox";
pub const DEDUPE: &str = "dedupe";
pub const PUSH_TARGETS: &str = "push_targets";
pub const PUSH_JOBS: &str = "push_jobs";
pub const PUSH_DUE: &str = "push_due";
pub const FORMER_MEMBERS: &str = "former_members";
pub const BLOCKS: &str = "blocks";

/// meta keys.
pub const FORMAT_VERSION: &[u8] = b"format_version";
/// Meta: the number of the last group commit (u64 big-endian).
pub const COMMIT_SEQ: &[u8] = b"commit_seq";
/// Meta: when the store was last flushed whole (shutdown), ms since the
/// epoch (i64 big-endian). Written last, so its own flush leaves every
/// older journal file deletable.
pub const FLUSHED_AT: &[u8] = b"flushed_at_ms";
pub const NEXT_USER_ID: &[u8] = b"next_user_id";
pub const NEXT_DEVICE_ID: &[u8] = b"next_device_id";
pub const NEXT_CONVERSATION_ID: &[u8] = b"next_conversation_id";

/// A partition's id counter (`next_user_id` …): the bare name for
/// partition 0, so a single node's counters are where they always were.
pub fn counter(name: &[u8], partition: u32) -> Vec<u8> {
    let mut k = name.to_vec();
    if partition != 0 {
        k.extend_from_slice(format!("/{partition}").as_bytes());
    }
    k
}

/// Meta: how far partition `target` has applied the effects of partition
/// `source` (the source stream's sequence, u64 big-endian).
pub fn effects_from(target: u32, source: u32) -> Vec<u8> {
    format!("effects_from/{target}/{source}").into_bytes()
}

/// Meta: the last sequence of this node's partition stream applied to
/// fjall (cluster mode).
pub fn applied(partition: u32) -> Vec<u8> {
    format!("applied/{partition}").into_bytes()
}

/// former_members/(conversation, user).
pub fn former_member(c: ConversationId, u: UserId) -> [u8; 16] {
    two(c.0, u.0)
}

/// A user's id, as a key part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserId(pub u64);
/// A device's id, as a key part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceId(pub u64);
/// A conversation's id, as a key part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConversationId(pub u64);
/// A message's seq in its conversation, as a key part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seq(pub u64);
/// An event's seq in its user's inbox, as a key part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboxSeq(pub u64);

fn one(a: u64) -> [u8; 8] {
    a.to_be_bytes()
}

fn two(a: u64, b: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&a.to_be_bytes());
    k[8..].copy_from_slice(&b.to_be_bytes());
    k
}

/// users/(user).
pub fn user(u: UserId) -> [u8; 8] {
    one(u.0)
}

/// devices/(device).
pub fn device(d: DeviceId) -> [u8; 8] {
    one(d.0)
}

/// conversations/(conversation).
pub fn conversation(c: ConversationId) -> [u8; 8] {
    one(c.0)
}

/// A stored id as a value (usernames → user, tokens → device,
/// direct_pairs → conversation).
pub fn id_value(id: u64) -> Vec<u8> {
    id.to_be_bytes().to_vec()
}

/// user_devices/(user, device).
pub fn user_device(u: UserId, d: DeviceId) -> [u8; 16] {
    two(u.0, d.0)
}

/// The prefix of a user's user_devices, push_targets, user_conversations
/// and inbox keys.
pub fn of_user(u: UserId) -> [u8; 8] {
    one(u.0)
}

/// members/(conversation, user).
pub fn member(c: ConversationId, u: UserId) -> [u8; 16] {
    two(c.0, u.0)
}

/// The prefix of a conversation's members and messages keys.
pub fn of_conversation(c: ConversationId) -> [u8; 8] {
    one(c.0)
}

/// user_conversations/(user, conversation).
pub fn user_conversation(u: UserId, c: ConversationId) -> [u8; 16] {
    two(u.0, c.0)
}

/// messages/(conversation, seq).
pub fn message(c: ConversationId, s: Seq) -> [u8; 16] {
    two(c.0, s.0)
}

/// inbox/(user, inbox_seq).
pub fn inbox(u: UserId, s: InboxSeq) -> [u8; 16] {
    two(u.0, s.0)
}

/// direct_pairs/(lower user, higher user): the same whichever comes first.
pub fn direct_pair(a: UserId, b: UserId) -> [u8; 16] {
    two(a.0.min(b.0), a.0.max(b.0))
}

/// push_targets/(user, device).
pub fn push_target(u: UserId, d: DeviceId) -> [u8; 16] {
    two(u.0, d.0)
}

/// push_jobs/(device, conversation).
pub fn push_job(d: DeviceId, c: ConversationId) -> [u8; 16] {
    two(d.0, c.0)
}

/// The prefix of a device's push_jobs keys.
pub fn of_device(d: DeviceId) -> [u8; 8] {
    one(d.0)
}

/// blocks/(blocker, blocked).
pub fn block(blocker: UserId, blocked: UserId) -> [u8; 16] {
    two(blocker.0, blocked.0)
}

/// dedupe/(sender, client_msg_id bytes).
pub fn dedupe(sender: UserId, client_msg_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + client_msg_id.len());
    k.extend_from_slice(&sender.0.to_be_bytes());
    k.extend_from_slice(client_msg_id.as_bytes());
    k
}

/// push_due/(due_ms, device, conversation) → 24 bytes, in due order. Times
/// before the epoch sort as 0.
pub fn push_due(due_ms: i64, d: DeviceId, c: ConversationId) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..8].copy_from_slice(&(due_ms.max(0) as u64).to_be_bytes());
    k[8..16].copy_from_slice(&d.0.to_be_bytes());
    k[16..].copy_from_slice(&c.0.to_be_bytes());
    k
}

/// The parts of a push_due key.
pub fn parse_push_due(key: &[u8]) -> Option<(i64, u64, u64)> {
    if key.len() != 24 {
        return None;
    }
    let due = i64::try_from(read_u64(key, 0)?).ok()?;
    Some((due, read_u64(key, 8)?, read_u64(key, 16)?))
}

/// Reads a big-endian u64 at `at` in `bytes`; `None` when too short.
pub fn read_u64(bytes: &[u8], at: usize) -> Option<u64> {
    let b: [u8; 8] = bytes.get(at..at + 8)?.try_into().ok()?;
    Some(u64::from_be_bytes(b))
}

/// The second id of a two-id key (the device of user_devices, the user
/// of members, the conversation of user_conversations, the seq of
/// messages …).
pub fn second(key: &[u8]) -> Option<u64> {
    read_u64(key, 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_numerically() {
        let (c1, c2) = (ConversationId(1), ConversationId(2));
        assert!(message(c1, Seq(255)) < message(c1, Seq(256)));
        assert!(message(c1, Seq(u64::MAX)) < message(c2, Seq(0)));
        assert_eq!(second(&member(ConversationId(7), UserId(9))), Some(9));
        assert_eq!(direct_pair(UserId(5), UserId(3)), direct_pair(UserId(3), UserId(5)));
        assert_eq!(read_u64(&[0; 4], 0), None);
        assert!(push_due(999, DeviceId(9), c2) < push_due(1000, DeviceId(1), c1));
        assert_eq!(parse_push_due(&push_due(1234, DeviceId(5), ConversationId(6))), Some((1234, 5, 6)));
        assert_eq!(parse_push_due(&push_due(-5, DeviceId(5), ConversationId(6))), Some((0, 5, 6)));
        assert_eq!(parse_push_due(&[0; 16]), None);
        assert!(inbox(UserId(1), InboxSeq(2)).starts_with(&of_user(UserId(1))));
    }
}
