//! Credentials: Argon2id password hashes, device tokens (only their SHA-256
//! is stored), and throttling of failed logins per username and per source
//! address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine as _;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Hashes a password with Argon2id (default parameters: 19 MiB, t=2, p=1).
/// CPU-heavy: call from a blocking thread.
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let mut raw = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut raw);
    let salt = SaltString::encode_b64(&raw)?;
    Ok(Argon2::default().hash_password(password.as_bytes(), &salt)?.to_string())
}

/// Checks a password against a stored hash; `None` (unknown user) checks
/// against a fixed dummy hash so that both cases take the same time.
/// CPU-heavy: call from a blocking thread.
pub fn verify_password(stored: Option<&str>, password: &str) -> bool {
    static DUMMY: OnceLock<String> = OnceLock::new();
    let dummy = DUMMY.get_or_init(|| hash_password("not a real password").unwrap_or_default());
    let known = stored.is_some();
    let Ok(parsed) = PasswordHash::new(stored.unwrap_or(dummy)) else { return false };
    Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok() && known
}

/// A new device token (43 characters, base64url of 32 random bytes) and
/// the hash that is stored.
pub fn new_token() -> (String, Vec<u8>) {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let hash = token_hash(&token);
    (token, hash)
}

/// What the store keeps of a token.
pub fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Failed-login throttle: at most N failures per key per window.
pub struct LoginThrottle {
    per_user: u32,
    per_address: u32,
    window: Duration,
    failures: Mutex<HashMap<Key, (Instant, u32)>>,
    updates: std::sync::atomic::AtomicUsize,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    User(String),
    Address(IpAddr),
}

/// Entries kept before stale ones are pruned.
const PRUNE_AT: usize = 100_000;
/// Once over `PRUNE_AT`, prune on every this-many-th update (not on each:
/// a scan of the whole map under the lock is O(n)).
const PRUNE_EVERY: usize = 1024;

/// Whether this update should prune: only when the map is large, and then
/// only every `PRUNE_EVERY` updates.
fn due_for_pruning(len: usize, updates: &std::sync::atomic::AtomicUsize) -> bool {
    len >= PRUNE_AT && updates.fetch_add(1, std::sync::atomic::Ordering::Relaxed).is_multiple_of(PRUNE_EVERY)
}

impl LoginThrottle {
    /// A throttle allowing `per_user` and `per_address` failures a minute.
    pub fn new(per_user: u32, per_address: u32) -> Self {
        LoginThrottle {
            per_user,
            per_address,
            window: Duration::from_secs(60),
            failures: Mutex::new(HashMap::new()),
            updates: Default::default(),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<Key, (Instant, u32)>> {
        // Every critical section is one lookup/update: a poisoned lock holds
        // consistent data.
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `Err(wait)` when either the username or the address has used up its
    /// failures in the current window.
    pub fn check(&self, username: &str, addr: IpAddr, now: Instant) -> Result<(), Duration> {
        let map = self.map();
        for (key, max) in [
            (Key::User(username.to_string()), self.per_user),
            (Key::Address(crate::admission::address_key(addr)), self.per_address),
        ] {
            if let Some(&(start, count)) = map.get(&key) {
                let elapsed = now.saturating_duration_since(start);
                if elapsed < self.window && count >= max {
                    return Err(self.window - elapsed);
                }
            }
        }
        Ok(())
    }

    /// `Err(wait)` when the address has used up its failures (resumes,
    /// which name no username).
    pub fn check_address(&self, addr: IpAddr, now: Instant) -> Result<(), Duration> {
        let map = self.map();
        if let Some(&(start, count)) = map.get(&Key::Address(crate::admission::address_key(addr))) {
            let elapsed = now.saturating_duration_since(start);
            if elapsed < self.window && count >= self.per_address {
                return Err(self.window - elapsed);
            }
        }
        Ok(())
    }

    /// Counts a failed attempt.
    pub fn failed(&self, username: &str, addr: IpAddr, now: Instant) {
        self.count(&[Key::User(username.to_string()), Key::Address(crate::admission::address_key(addr))], now);
    }

    /// Counts a failed resume (an address failure only).
    pub fn failed_address(&self, addr: IpAddr, now: Instant) {
        self.count(&[Key::Address(crate::admission::address_key(addr))], now);
    }

    fn count(&self, keys: &[Key], now: Instant) {
        let mut map = self.map();
        if due_for_pruning(map.len(), &self.updates) {
            let window = self.window;
            map.retain(|_, (start, _)| now.saturating_duration_since(*start) < window);
        }
        for key in keys.iter().cloned() {
            let entry = map.entry(key).or_insert((now, 0));
            if now.saturating_duration_since(entry.0) >= self.window {
                *entry = (now, 0);
            }
            entry.1 += 1;
        }
    }

    /// Clears a username's failures after a successful login.
    pub fn succeeded(&self, username: &str) {
        self.map().remove(&Key::User(username.to_string()));
    }
}

/// Signups per source address per hour: each signup costs a password
/// hash and a stored account, so an address may only make so many.
pub struct SignupThrottle {
    per_address: u32,
    window: Duration,
    counts: Mutex<HashMap<IpAddr, (Instant, u32)>>,
    updates: std::sync::atomic::AtomicUsize,
}

impl SignupThrottle {
    /// At most `per_address` signups an hour from one address.
    pub fn new(per_address: u32) -> Self {
        SignupThrottle {
            per_address,
            window: Duration::from_secs(3600),
            counts: Mutex::new(HashMap::new()),
            updates: Default::default(),
        }
    }

    /// `Err(wait)` when `addr` has used up this hour's signups.
    pub fn check(&self, addr: IpAddr, now: Instant) -> Result<(), Duration> {
        let map = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(&crate::admission::address_key(addr)) {
            Some(&(start, n)) if now.saturating_duration_since(start) < self.window && n >= self.per_address => {
                Err(self.window.saturating_sub(now.saturating_duration_since(start)))
            }
            _ => Ok(()),
        }
    }

    /// Counts a signup attempt from `addr`; `Err(wait)` when the address
    /// has used up its window (the attempt is then not counted).
    pub fn attempt(&self, addr: IpAddr, now: Instant) -> Result<(), Duration> {
        // One lookup and update per critical section: a poisoned lock still
        // holds consistent counts.
        let mut map = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if due_for_pruning(map.len(), &self.updates) {
            let window = self.window;
            map.retain(|_, (start, _)| now.saturating_duration_since(*start) < window);
        }
        let entry = map.entry(crate::admission::address_key(addr)).or_insert((now, 0));
        if now.saturating_duration_since(entry.0) >= self.window {
            *entry = (now, 0);
        }
        if entry.1 >= self.per_address {
            return Err(self.window.saturating_sub(now.saturating_duration_since(entry.0)));
        }
        entry.1 += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_and_verify() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password(Some(&h), "correct horse"));
        assert!(!verify_password(Some(&h), "wrong horse"));
        assert!(!verify_password(None, "not a real password"));
    }

    #[test]
    fn tokens_are_random_and_hashed() {
        let (a, ha) = new_token();
        let (b, _) = new_token();
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
        assert_eq!(token_hash(&a), ha);
    }

    #[test]
    fn throttle_per_user_and_address() {
        let t = LoginThrottle::new(2, 3);
        let now = Instant::now();
        let ip: IpAddr = [127, 0, 0, 1].into();
        assert!(t.check("bob", ip, now).is_ok());
        t.failed("bob", ip, now);
        t.failed("bob", ip, now);
        assert!(t.check("bob", ip, now).is_err());
        assert!(t.check("alice", ip, now).is_ok());
        t.failed("alice", ip, now);
        assert!(t.check("carol", ip, now).is_err(), "address limit reached");
        assert!(t.check("bob", ip, now + Duration::from_secs(61)).is_ok());
        t.succeeded("bob");
    }

    #[test]
    fn failed_resumes_count_against_the_address() {
        let t = LoginThrottle::new(5, 2);
        let now = Instant::now();
        let ip: IpAddr = [10, 9, 9, 9].into();
        t.failed_address(ip, now);
        assert!(t.check_address(ip, now).is_ok());
        t.failed_address(ip, now);
        assert!(t.check_address(ip, now).is_err());
        assert!(t.check("anyone", ip, now).is_err(), "logins from the address wait too");
        assert!(t.check_address([10, 9, 9, 8].into(), now).is_ok());
    }

    #[test]
    fn signups_per_address_per_hour() {
        let t = SignupThrottle::new(2);
        let now = Instant::now();
        let ip: IpAddr = [10, 1, 1, 1].into();
        assert!(t.attempt(ip, now).is_ok());
        assert!(t.attempt(ip, now).is_ok());
        let wait = t.attempt(ip, now + Duration::from_secs(600)).unwrap_err();
        assert_eq!(wait, Duration::from_secs(3000));
        assert!(t.attempt([10, 1, 1, 2].into(), now).is_ok());
        assert!(t.attempt(ip, now + Duration::from_secs(3600)).is_ok(), "a new window");
    }
}
