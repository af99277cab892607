//! Every key layout of the store, in one place. Integers are big-endian so
//! that byte order is numeric order and prefix scans walk in sequence.
//! Nothing outside `store` builds or parses keys.

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

/// meta keys.
pub const FORMAT_VERSION: &[u8] = b"format_version";
/// Meta: the number of the last group commit (u64 big-endian).
pub const COMMIT_SEQ: &[u8] = b"commit_seq";
pub const NEXT_USER_ID: &[u8] = b"next_user_id";
pub const NEXT_DEVICE_ID: &[u8] = b"next_device_id";
pub const NEXT_CONVERSATION_ID: &[u8] = b"next_conversation_id";

/// `id` → 8 bytes.
pub fn id(id: u64) -> [u8; 8] {
    id.to_be_bytes()
}

/// `(a, b)` → 16 bytes: (user, device), (conversation, user), (conversation,
/// seq), (user, conversation), (user, inbox_seq), (low user, high user).
pub fn pair(a: u64, b: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&a.to_be_bytes());
    k[8..].copy_from_slice(&b.to_be_bytes());
    k
}

/// A direct pair's key, the same whichever user comes first.
pub fn direct_pair(a: u64, b: u64) -> [u8; 16] {
    pair(a.min(b), a.max(b))
}

/// dedupe/(sender, client_msg_id bytes).
pub fn dedupe(sender: u64, client_msg_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + client_msg_id.len());
    k.extend_from_slice(&sender.to_be_bytes());
    k.extend_from_slice(client_msg_id.as_bytes());
    k
}

/// push_due/(due_ms, device, conversation) → 24 bytes, in due order. Times
/// before the epoch sort as 0.
pub fn push_due(due_ms: i64, device: u64, conversation: u64) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..8].copy_from_slice(&(due_ms.max(0) as u64).to_be_bytes());
    k[8..16].copy_from_slice(&device.to_be_bytes());
    k[16..].copy_from_slice(&conversation.to_be_bytes());
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

/// The second half of a pair key.
pub fn pair_second(key: &[u8]) -> Option<u64> {
    read_u64(key, 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_sort_numerically() {
        assert!(pair(1, 255) < pair(1, 256));
        assert!(pair(1, u64::MAX) < pair(2, 0));
        assert_eq!(pair_second(&pair(7, 9)), Some(9));
        assert_eq!(direct_pair(5, 3), direct_pair(3, 5));
        assert_eq!(read_u64(&[0; 4], 0), None);
        assert!(push_due(999, 9, 9) < push_due(1000, 1, 1));
        assert_eq!(parse_push_due(&push_due(1234, 5, 6)), Some((1234, 5, 6)));
        assert_eq!(parse_push_due(&push_due(-5, 5, 6)), Some((0, 5, 6)));
        assert_eq!(parse_push_due(&[0; 16]), None);
    }
}
