//! Admission control that spans sessions: connections per source address
//! (IPv6 counted per /64).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// The key per-address limits count by: an IPv4 address, or an IPv6
/// address's /64 (one subscriber gets a whole /64, so counting single
/// addresses would give them 2^64 budgets); IPv4-mapped IPv6 as IPv4.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Open connections per source address (per /64 for IPv6).
#[derive(Debug)]
pub struct AddressLimits {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One admitted connection; dropping it frees the address's slot.
#[derive(Debug)]
pub struct AddressSlot {
    limits: Arc<AddressLimits>,
    ip: IpAddr,
}

impl AddressLimits {
    /// At most `max` open connections per address.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(AddressLimits { max, open: Mutex::new(HashMap::new()) })
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        // Each critical section is one lookup and update: a poisoned lock
        // still holds consistent counts.
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for a new connection from `ip`, or `None` when the address
    /// already has `max` open.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<AddressSlot> {
        let ip = address_key(ip);
        let mut map = self.map();
        let n = map.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(AddressSlot { limits: Arc::clone(self), ip })
    }

    /// The most open connections per address.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Open connections from `ip`.
    pub fn open(&self, ip: IpAddr) -> usize {
        self.map().get(&address_key(ip)).copied().unwrap_or(0)
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut map = self.limits.map();
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_slots_are_counted_and_freed() {
        let limits = AddressLimits::new(2);
        let ip: IpAddr = [10, 0, 0, 1].into();
        let a = limits.admit(ip).unwrap();
        let _b = limits.admit(ip).unwrap();
        assert!(limits.admit(ip).is_none());
        assert!(limits.admit([10, 0, 0, 2].into()).is_some(), "other addresses are unaffected");
        drop(a);
        assert_eq!(limits.open(ip), 1);
        assert!(limits.admit(ip).is_some());
    }

    #[test]
    fn ipv6_counts_per_64() {
        let limits = AddressLimits::new(1);
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        let _slot = limits.admit(a).unwrap();
        assert!(limits.admit(b).is_none(), "same /64");
        assert!(limits.admit(other).is_some());
        let mapped: IpAddr = "::ffff:10.0.0.7".parse().unwrap();
        assert_eq!(address_key(mapped), "10.0.0.7".parse::<IpAddr>().unwrap());
    }
}
