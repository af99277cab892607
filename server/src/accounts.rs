//! The abuse controls of accounts: the budgets that limit logins and
//! signups per username and per source address, and what one user (or
//! address) may make conversations grow by. Password hashing is in
//! [`crate::passwords`], device tokens in [`crate::store::tokens`].

use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::admission::address_key;
use crate::quota::Window;

/// What one username or one source address may do per window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginLimits {
    /// Failed logins per username per minute.
    pub failures_per_user: u32,
    /// Failed logins (and failed resumes) per address per minute.
    pub failures_per_address: u32,
    /// Logins per username per minute, whatever their outcome.
    pub logins_per_user: u32,
    /// Logins per address per minute, whatever their outcome.
    pub logins_per_address: u32,
}

/// The login throttle. Every login takes its share of two budgets before
/// its password is checked: the login rate (any outcome) and, in advance,
/// the failure budget, which a login that succeeds gives back. So
/// concurrent guesses cannot all pass a check that would only count them
/// afterwards, and one account (or one address) logging in as fast as it
/// can is limited like anyone guessing.
#[derive(Debug)]
pub struct LoginThrottle {
    limits: LoginLimits,
    failures: Window<Key>,
    logins: Window<Key>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    User(String),
    Address(IpAddr),
}

impl LoginThrottle {
    /// A throttle with these per-minute budgets.
    pub fn new(limits: LoginLimits) -> Self {
        let minute = Duration::from_secs(60);
        LoginThrottle { limits, failures: Window::new(minute), logins: Window::new(minute) }
    }

    /// The budgets in force.
    pub fn limits(&self) -> LoginLimits {
        self.limits
    }

    fn keys(username: &str, addr: IpAddr) -> [Key; 2] {
        [Key::User(username.to_string()), Key::Address(address_key(addr))]
    }

    /// Reserves one login attempt for `username` from `addr`, before its
    /// password is checked; `Err(wait)` when a budget is used up (nothing
    /// is taken then). A wrong password needs nothing more: its failure
    /// is already counted. A right one calls [`Self::succeeded`], an
    /// unchecked one [`Self::not_checked`].
    pub fn begin(&self, username: &str, addr: IpAddr, now: Instant) -> Result<(), Duration> {
        let [user, address] = Self::keys(username, addr);
        let l = self.limits;
        self.logins.take(&[(user.clone(), l.logins_per_user), (address.clone(), l.logins_per_address)], 1, now)?;
        if let Err(wait) = self.failures.take(
            &[(user.clone(), l.failures_per_user), (address.clone(), l.failures_per_address)],
            1,
            now,
        ) {
            self.logins.give_back(&[user, address], 1, now);
            return Err(wait);
        }
        Ok(())
    }

    /// The password was right: the reserved failure is given back, and
    /// the username's earlier failures are forgotten.
    pub fn succeeded(&self, username: &str, addr: IpAddr, now: Instant) {
        let [user, address] = Self::keys(username, addr);
        self.failures.give_back(&[address], 1, now);
        self.failures.forget(&user);
    }

    /// The password was never checked (the server was busy): everything
    /// reserved is given back.
    pub fn not_checked(&self, username: &str, addr: IpAddr, now: Instant) {
        let keys = Self::keys(username, addr);
        self.failures.give_back(&keys, 1, now);
        self.logins.give_back(&keys, 1, now);
    }

    /// `Err(wait)` when the address has used up its failures (resumes,
    /// which name no username and check no password).
    pub fn check_address(&self, addr: IpAddr, now: Instant) -> Result<(), Duration> {
        let address = Key::Address(address_key(addr));
        self.failures.check(&[(address, self.limits.failures_per_address)], 1, now)
    }

    /// Counts a failed resume (an address failure only).
    pub fn failed_address(&self, addr: IpAddr, now: Instant) {
        // Over budget already: the resume was refused before this.
        let _ = self.failures.take(&[(Key::Address(address_key(addr)), u32::MAX)], 1, now);
    }
}

/// Signups per source address per hour: each signup costs a password
/// hash and a stored account, so an address may only make so many. The
/// signup is counted before its password is hashed.
#[derive(Debug)]
pub struct SignupThrottle {
    per_address: u32,
    signups: Window<IpAddr>,
}

impl SignupThrottle {
    /// At most `per_address` signups an hour from one address.
    pub fn new(per_address: u32) -> Self {
        SignupThrottle { per_address, signups: Window::new(Duration::from_secs(3600)) }
    }

    /// The budget per address per hour.
    pub fn per_address(&self) -> u32 {
        self.per_address
    }

    /// Counts a signup attempt from `addr`; `Err(wait)` when the address
    /// has used up its hour (the attempt is then not counted).
    pub fn attempt(&self, addr: IpAddr, now: Instant) -> Result<(), Duration> {
        self.signups.take(&[(address_key(addr), self.per_address)], 1, now)
    }

    /// Gives an attempt back (its password was never hashed: the server
    /// was busy).
    pub fn not_checked(&self, addr: IpAddr, now: Instant) {
        self.signups.give_back(&[address_key(addr)], 1, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(failures_per_user: u32, failures_per_address: u32) -> LoginLimits {
        LoginLimits { failures_per_user, failures_per_address, logins_per_user: 100, logins_per_address: 100 }
    }

    #[test]
    fn failures_per_user_and_address() {
        let t = LoginThrottle::new(limits(2, 3));
        let now = Instant::now();
        let ip: IpAddr = [127, 0, 0, 1].into();
        for _ in 0..2 {
            t.begin("bob", ip, now).unwrap();
        }
        assert!(t.begin("bob", ip, now).is_err());
        t.begin("alice", ip, now).unwrap();
        assert!(t.begin("carol", ip, now).is_err(), "address limit reached");
        assert!(t.begin("bob", ip, now + Duration::from_secs(61)).is_ok());
    }

    #[test]
    fn concurrent_attempts_are_reserved_before_the_check() {
        // 40 attempts begun before any finishes: only the budget passes.
        let t = LoginThrottle::new(limits(5, 30));
        let now = Instant::now();
        let ip: IpAddr = [10, 0, 0, 9].into();
        let admitted = (0..40).filter(|_| t.begin("bob", ip, now).is_ok()).count();
        assert_eq!(admitted, 5);
    }

    #[test]
    fn a_success_gives_its_failure_back_and_busy_gives_everything_back() {
        let t = LoginThrottle::new(LoginLimits {
            failures_per_user: 1,
            failures_per_address: 1,
            logins_per_user: 3,
            logins_per_address: 100,
        });
        let now = Instant::now();
        let ip: IpAddr = [10, 0, 0, 8].into();
        t.begin("bob", ip, now).unwrap();
        t.succeeded("bob", ip, now);
        t.begin("bob", ip, now).unwrap();
        t.not_checked("bob", ip, now);
        t.begin("bob", ip, now).unwrap();
        t.succeeded("bob", ip, now);
        t.begin("bob", ip, now).unwrap();
        t.succeeded("bob", ip, now);
        // Three logins counted (the busy one was given back): the fourth
        // waits, right password or not.
        assert!(t.begin("bob", ip, now).is_err(), "logins per user, whatever the outcome");
        assert!(t.begin("alice", ip, now).is_ok());
    }

    #[test]
    fn failed_resumes_count_against_the_address() {
        let t = LoginThrottle::new(limits(5, 2));
        let now = Instant::now();
        let ip: IpAddr = [10, 9, 9, 9].into();
        t.failed_address(ip, now);
        assert!(t.check_address(ip, now).is_ok());
        t.failed_address(ip, now);
        assert!(t.check_address(ip, now).is_err());
        assert!(t.begin("anyone", ip, now).is_err(), "logins from the address wait too");
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
        t.not_checked(ip, now);
        assert!(t.attempt(ip, now).is_ok(), "a busy attempt was given back");
        assert!(t.attempt([10, 1, 1, 2].into(), now).is_ok());
        assert!(t.attempt(ip, now + Duration::from_secs(3600)).is_ok(), "a new window");
    }
}

/// What one user and one source address may create per hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrowthLimits {
    /// Groups per user.
    pub groups_per_user: u32,
    /// Groups per address.
    pub groups_per_address: u32,
    /// Members added per user (creating a group included).
    pub members_per_user: u32,
    /// Members added per address.
    pub members_per_address: u32,
    /// Direct conversations opened per user.
    pub directs_per_user: u32,
    /// Direct conversations opened per address.
    pub directs_per_address: u32,
}

/// Budgets for what makes conversations grow: groups created, members
/// added and direct conversations opened, per user and per source
/// address, per hour, taken before the store sees the request (a user
/// with 8 sessions created 100-member groups at 500–750/s, and the
/// per-session request rate multiplies by every session of every
/// address).
#[derive(Debug)]
pub struct GrowthThrottle {
    limits: GrowthLimits,
    groups: Window<Owner>,
    members: Window<Owner>,
    directs: Window<Owner>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Owner {
    User(u64),
    Address(IpAddr),
}

impl GrowthThrottle {
    /// Hourly budgets of `limits`.
    pub fn new(limits: GrowthLimits) -> Self {
        let hour = Duration::from_secs(3600);
        GrowthThrottle { limits, groups: Window::new(hour), members: Window::new(hour), directs: Window::new(hour) }
    }

    /// The limits in force.
    pub fn limits(&self) -> GrowthLimits {
        self.limits
    }

    fn keys(user: u64, addr: IpAddr, per_user: u32, per_address: u32) -> [(Owner, u32); 2] {
        [(Owner::User(user), per_user), (Owner::Address(address_key(addr)), per_address)]
    }

    /// A group with `members` others: one group and that many members, or
    /// `Err(wait)` and nothing taken.
    pub fn create_group(&self, user: u64, addr: IpAddr, members: u32, now: Instant) -> Result<(), Duration> {
        let l = self.limits;
        let groups = Self::keys(user, addr, l.groups_per_user, l.groups_per_address);
        self.groups.take(&groups, 1, now)?;
        if let Err(wait) = self.add_members(user, addr, members, now) {
            let keys: Vec<Owner> = groups.into_iter().map(|(k, _)| k).collect();
            self.groups.give_back(&keys, 1, now);
            return Err(wait);
        }
        Ok(())
    }

    /// `members` added to a group, or `Err(wait)` and nothing taken.
    pub fn add_members(&self, user: u64, addr: IpAddr, members: u32, now: Instant) -> Result<(), Duration> {
        let l = self.limits;
        self.members.take(&Self::keys(user, addr, l.members_per_user, l.members_per_address), members, now)
    }

    /// A direct conversation opened (or found), or `Err(wait)`.
    pub fn open_direct(&self, user: u64, addr: IpAddr, now: Instant) -> Result<(), Duration> {
        let l = self.limits;
        self.directs.take(&Self::keys(user, addr, l.directs_per_user, l.directs_per_address), 1, now)
    }
}
