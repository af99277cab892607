//! How users, conversations and usernames map onto partitions.
//!
//! An id carries its partition: `id = n × count + partition`, with `n` from
//! the partition's own counter (1, 2, 3 …). So ids never collide across
//! partitions and the partition of any id is `id mod count`, with no
//! lookup. A username belongs to `hash(username) mod count` (its user is
//! created there), a direct conversation to the partition of its pair. On
//! one node there is one partition, and ids are 1, 2, 3 … as always.

/// The partitioning of a store (fixed for its life).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partitioning {
    count: u32,
}

impl Partitioning {
    /// One partition: a single node.
    pub const SINGLE: Partitioning = Partitioning { count: 1 };

    /// `count` partitions (at least 1).
    pub fn new(count: u32) -> Partitioning {
        Partitioning { count: count.max(1) }
    }

    /// How many.
    pub fn count(self) -> u32 {
        self.count
    }

    /// The partition of a user, device or conversation id.
    pub fn of_id(self, id: u64) -> u32 {
        (id % u64::from(self.count)) as u32
    }

    /// The partition of a username (where its user is created).
    pub fn of_username(self, username: &str) -> u32 {
        (fnv1a(username.as_bytes()) % u64::from(self.count)) as u32
    }

    /// The partition of the direct conversation of two users.
    pub fn of_pair(self, a: u64, b: u64) -> u32 {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&a.min(b).to_be_bytes());
        bytes[8..].copy_from_slice(&a.max(b).to_be_bytes());
        (fnv1a(&bytes) % u64::from(self.count)) as u32
    }

    /// The `n`th id (from 1) of `partition`.
    pub fn id(self, n: u64, partition: u32) -> u64 {
        n.saturating_mul(u64::from(self.count)).saturating_add(u64::from(partition))
    }
}

/// FNV-1a, 64 bit: stable across builds and platforms (the partition of a
/// username must never change).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_carry_their_partition_and_one_partition_changes_nothing() {
        let p = Partitioning::new(16);
        for partition in [0, 5, 15] {
            for n in [1, 2, 1000] {
                assert_eq!(p.of_id(p.id(n, partition)), partition);
            }
        }
        assert_ne!(p.id(1, 3), p.id(1, 4));
        assert_eq!(Partitioning::SINGLE.id(7, 0), 7, "one node: ids as before");
        assert_eq!(Partitioning::SINGLE.of_username("anyone"), 0);
        assert_eq!(p.of_pair(3, 9), p.of_pair(9, 3));
        // Stable: the value for a name is part of the data format.
        assert_eq!(fnv1a(b"alice"), 0x508b_2abb_65a0_3907);
        assert!(p.of_username("alice") < 16);
    }
}
