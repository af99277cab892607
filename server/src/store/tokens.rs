//! Device tokens: 32 bytes, base64url without padding (43 characters), of
//! which the first two name the partition of the token's device (so a
//! cluster node knows where to look a token up) and the other 30 are
//! random. Only a token's SHA-256 is stored.

use base64::Engine as _;
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::Partitioning;

/// A new token for a device of `partition`, and the hash that is stored.
pub fn mint(partition: u32) -> (String, Vec<u8>) {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes[2..]);
    bytes[..2].copy_from_slice(&(partition as u16).to_be_bytes());
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let hash = hash(&token);
    (token, hash)
}

/// What the store keeps of a token.
pub fn hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// The partition a token's device is in; `None` for a string that is no
/// token of ours (it resumes nothing).
pub fn partition(token: &str, partitioning: Partitioning) -> Option<u32> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).ok()?;
    let head: [u8; 2] = bytes.get(..2)?.try_into().ok()?;
    Some(u32::from(u16::from_be_bytes(head)) % partitioning.count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_hashed_and_carry_their_partition() {
        let (a, ha) = mint(5);
        let (b, _) = mint(5);
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
        assert_eq!(hash(&a), ha);
        assert_eq!(partition(&a, Partitioning::new(16)), Some(5));
        assert_eq!(partition(&a, Partitioning::SINGLE), Some(0));
        assert_eq!(partition("not base64!", Partitioning::new(16)), None);
    }
}
