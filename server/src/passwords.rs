//! Password checks: Argon2id on a fixed pool of threads that reuse their
//! memory.
//!
//! Argon2id is deliberately expensive (m = 19 MiB, t = 2, p = 1: tens of
//! milliseconds and 19 MiB per check). Run on tokio's blocking pool, every
//! check took a fresh 19 MiB from the allocator on whichever of up to 512
//! threads ran it, and a caller that went away (its connection closed)
//! released its place while its check ran on, so a burst of logins that
//! hung up at once ran without bound: memory grew by gigabytes and stayed
//! in the allocator's per-thread arenas (found by an attack with 66
//! concurrent logins per burst).
//!
//! Here a fixed number of threads (`concurrency`) each own one block of
//! Argon2 memory, allocated at the first check and reused for every
//! later one, and given back after [`IDLE_RELEASE`] without work. At most
//! `concurrency × 19 MiB` is ever in use, whatever arrives. A bounded
//! queue sits in front; one source address may hold only a share of the
//! pool (queued plus running), so a flood from one address cannot take
//! every place from everyone else. A check whose caller went away before
//! it started is skipped.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use argon2::password_hash::{Output, ParamsString, PasswordHash, Salt, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use rand::RngCore;
use tokio::sync::oneshot;

use crate::admission::address_key;

/// How long a pool thread keeps its Argon2 memory without work.
pub const IDLE_RELEASE: Duration = Duration::from_secs(5);

/// Why a check did not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Every place in the pool and its queue is taken.
    #[error("too many password checks in progress")]
    Busy,
    /// This source address holds its whole share of the pool.
    #[error("too many password checks in progress from this address")]
    AddressBusy,
    /// The pool has stopped (shutting down).
    #[error("password checks have stopped")]
    Stopped,
}

/// A hash could not be made (never expected with valid parameters).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashFailed(String);

/// The pool's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSettings {
    /// Threads, each running one check at a time.
    pub concurrency: usize,
    /// Checks waiting beyond those.
    pub queue: usize,
    /// Most checks (queued plus running) from one source address.
    pub per_address: usize,
}

/// The password-check pool. Dropping it stops its threads once their
/// current check is done.
pub struct PasswordPool {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for PasswordPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordPool").field("settings", &self.shared.settings).finish_non_exhaustive()
    }
}

struct Shared {
    settings: PoolSettings,
    params: Params,
    state: Mutex<State>,
    work: Condvar,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Job>,
    /// Checks inside the pool (queued or running), per address key.
    per_address: HashMap<IpAddr, usize>,
    /// Checks inside the pool in all.
    inside: usize,
    stopping: bool,
}

enum Work {
    Hash { password: String, reply: oneshot::Sender<Result<String, HashFailed>> },
    Verify { stored: Option<String>, password: String, reply: oneshot::Sender<bool> },
}

impl Work {
    /// Whether the caller stopped waiting (its connection went away).
    fn abandoned(&self) -> bool {
        match self {
            Work::Hash { reply, .. } => reply.is_closed(),
            Work::Verify { reply, .. } => reply.is_closed(),
        }
    }
}

struct Job {
    address: IpAddr,
    work: Work,
}

impl PasswordPool {
    /// Starts `settings.concurrency` threads hashing with Argon2id's
    /// default parameters.
    pub fn start(settings: PoolSettings) -> std::io::Result<PasswordPool> {
        Self::with_params(settings, Params::default())
    }

    /// Starts the pool with other Argon2 parameters (tests use small ones).
    pub fn with_params(settings: PoolSettings, params: Params) -> std::io::Result<PasswordPool> {
        Self::build(settings, params, settings.concurrency.max(1))
    }

    /// The pool with `threads` threads (tests: 0, so that jobs stay queued).
    fn build(settings: PoolSettings, params: Params, threads: usize) -> std::io::Result<PasswordPool> {
        let settings = PoolSettings {
            concurrency: settings.concurrency.max(1),
            queue: settings.queue,
            per_address: settings.per_address.max(1),
        };
        let shared = Arc::new(Shared { settings, params, state: Mutex::new(State::default()), work: Condvar::new() });
        for n in 0..threads {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new().name(format!("confab-password-{n}")).spawn(move || worker(&shared))?;
        }
        Ok(PasswordPool { shared })
    }

    /// The settings in force.
    pub fn settings(&self) -> PoolSettings {
        self.shared.settings
    }

    /// Hashes a new password (for a signup) with a fresh random salt.
    pub async fn hash(&self, from: IpAddr, password: String) -> Result<Result<String, HashFailed>, Refused> {
        let (reply, answer) = oneshot::channel();
        self.submit(from, Work::Hash { password, reply })?;
        answer.await.map_err(|_| Refused::Stopped)
    }

    /// Checks `password` against a stored hash. `None` (no such user) is
    /// checked against nothing at the same cost, so both cases take the
    /// same time, and answers `false`.
    pub async fn verify(&self, from: IpAddr, stored: Option<String>, password: String) -> Result<bool, Refused> {
        let (reply, answer) = oneshot::channel();
        self.submit(from, Work::Verify { stored, password, reply })?;
        answer.await.map_err(|_| Refused::Stopped)
    }

    fn submit(&self, from: IpAddr, work: Work) -> Result<(), Refused> {
        let address = address_key(from);
        let s = &self.shared.settings;
        let mut state = self.shared.lock();
        if state.stopping {
            return Err(Refused::Stopped);
        }
        if state.inside >= s.concurrency + s.queue {
            return Err(Refused::Busy);
        }
        let mine = state.per_address.entry(address).or_insert(0);
        if *mine >= s.per_address {
            return Err(Refused::AddressBusy);
        }
        *mine += 1;
        state.inside += 1;
        state.queue.push_back(Job { address, work });
        drop(state);
        self.shared.work.notify_one();
        Ok(())
    }

    /// Checks inside the pool (queued or running) right now.
    pub fn inside(&self) -> usize {
        self.shared.lock().inside
    }
}

impl Drop for PasswordPool {
    fn drop(&mut self) {
        self.shared.lock().stopping = true;
        self.shared.work.notify_all();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section is a few counter updates and one queue
        // operation: a poisoned lock still holds consistent state.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Frees the place a job held.
    fn done(&self, address: IpAddr) {
        let mut state = self.lock();
        state.inside = state.inside.saturating_sub(1);
        if let Some(n) = state.per_address.get_mut(&address) {
            *n -= 1;
            if *n == 0 {
                state.per_address.remove(&address);
            }
        }
    }
}

/// One pool thread: takes jobs in arrival order, runs them in its own
/// Argon2 memory, and gives that memory back when idle.
fn worker(shared: &Shared) {
    let mut memory: Option<Vec<Block>> = None;
    loop {
        let job = {
            let mut state = shared.lock();
            loop {
                if state.stopping {
                    return;
                }
                if let Some(job) = state.queue.pop_front() {
                    break job;
                }
                let (next, waited) = shared.work.wait_timeout(state, IDLE_RELEASE).unwrap_or_else(|p| p.into_inner());
                state = next;
                if waited.timed_out() && state.queue.is_empty() {
                    memory = None;
                }
            }
        };
        if !job.work.abandoned() {
            let blocks = memory.get_or_insert_with(|| vec![Block::default(); shared.params.block_count()]);
            run(&shared.params, blocks, job.work);
        }
        shared.done(job.address);
    }
}

fn run(params: &Params, memory: &mut [Block], work: Work) {
    match work {
        Work::Hash { password, reply } => {
            let _ = reply.send(hash_with(params, memory, &password));
        }
        Work::Verify { stored, password, reply } => {
            let _ = reply.send(verify_with(params, memory, stored.as_deref(), &password));
        }
    }
}

/// A PHC string (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`) for `password`
/// with a fresh 16-byte salt, computed in `memory`.
fn hash_with(params: &Params, memory: &mut [Block], password: &str) -> Result<String, HashFailed> {
    let failed = |e: &dyn std::fmt::Display| HashFailed(e.to_string());
    let mut raw = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut raw);
    let salt = SaltString::encode_b64(&raw).map_err(|e| failed(&e))?;
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    argon.hash_password_into_with_memory(password.as_bytes(), &raw, &mut out, &mut *memory).map_err(|e| failed(&e))?;
    let hash = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(params).map_err(|e| failed(&e))?,
        salt: Some(Salt::from(&salt)),
        hash: Some(Output::new(&out).map_err(|e| failed(&e))?),
    };
    Ok(hash.to_string())
}

/// Whether `password` matches `stored`, computed in `memory`. An unknown
/// user (`None`), an unreadable hash, or one whose parameters need more
/// memory than the pool has all answer `false`; the first at full cost.
fn verify_with(params: &Params, memory: &mut [Block], stored: Option<&str>, password: &str) -> bool {
    let Some(stored) = stored else {
        // The same work as a real check, against nothing.
        let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
        let _ = argon.hash_password_into_with_memory(password.as_bytes(), b"no such user....", &mut out, memory);
        return false;
    };
    let Ok(parsed) = PasswordHash::new(stored) else {
        tracing::error!("a stored password hash does not parse");
        return false;
    };
    let (Ok(algorithm), Ok(their), Some(expected), Some(salt)) =
        (Algorithm::try_from(parsed.algorithm), Params::try_from(&parsed), parsed.hash, parsed.salt)
    else {
        tracing::error!("a stored password hash lacks its algorithm, parameters, salt or hash");
        return false;
    };
    if their.block_count() > memory.len() {
        tracing::error!(m_cost = their.m_cost(), "a stored password hash needs more memory than the pool has");
        return false;
    }
    let version = parsed.version.and_then(|v| Version::try_from(v).ok()).unwrap_or_default();
    let mut salt_bytes = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else { return false };
    let mut out = vec![0u8; expected.len()];
    let argon = Argon2::new(algorithm, version, their);
    if argon.hash_password_into_with_memory(password.as_bytes(), salt, &mut out, memory).is_err() {
        return false;
    }
    // Output's equality is constant-time.
    Output::new(&out).is_ok_and(|o| o == expected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::{PasswordHasher, PasswordVerifier};

    fn small() -> Params {
        Params::new(64, 1, 1, None).unwrap()
    }

    fn pool(concurrency: usize, queue: usize, per_address: usize) -> PasswordPool {
        PasswordPool::with_params(PoolSettings { concurrency, queue, per_address }, small()).unwrap()
    }

    const HOME: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));

    #[tokio::test]
    async fn hashes_verify_here_and_with_the_reference_implementation() {
        let pool = PasswordPool::start(PoolSettings { concurrency: 1, queue: 4, per_address: 4 }).unwrap();
        let h = pool.hash(HOME, "correct horse".into()).await.unwrap().unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(pool.verify(HOME, Some(h.clone()), "correct horse".into()).await.unwrap());
        assert!(!pool.verify(HOME, Some(h.clone()), "wrong horse".into()).await.unwrap());
        assert!(!pool.verify(HOME, None, "correct horse".into()).await.unwrap());
        assert!(!pool.verify(HOME, Some("$argon2id$garbage".into()), "x".into()).await.unwrap());
        // Hashes made by argon2's own API (older accounts) verify here,
        // and ours verify there.
        let theirs = Argon2::default()
            .hash_password(b"old password", &SaltString::encode_b64(&[7u8; 16]).unwrap())
            .unwrap()
            .to_string();
        assert!(pool.verify(HOME, Some(theirs), "old password".into()).await.unwrap());
        assert!(Argon2::default().verify_password(b"correct horse", &PasswordHash::new(&h).unwrap()).is_ok());
    }

    #[tokio::test]
    async fn a_hash_needing_more_memory_than_the_pool_has_is_refused() {
        let pool = pool(1, 1, 1);
        let big = Argon2::from(Params::new(128, 1, 1, None).unwrap())
            .hash_password(b"pw", &SaltString::encode_b64(&[1u8; 16]).unwrap())
            .unwrap()
            .to_string();
        assert!(!pool.verify(HOME, Some(big), "pw".into()).await.unwrap());
    }

    #[test]
    fn the_queue_and_each_address_share_are_bounded() {
        // No threads: whatever is submitted stays queued. Three places in
        // all (1 running + 2 waiting), two per address.
        let pool = PasswordPool::build(PoolSettings { concurrency: 1, queue: 2, per_address: 2 }, small(), 0).unwrap();
        let mut answers = Vec::new();
        let mut verify = |from: IpAddr| {
            let (reply, answer) = oneshot::channel();
            answers.push(answer);
            pool.submit(from, Work::Verify { stored: None, password: "x".into(), reply })
        };
        assert_eq!(verify(HOME), Ok(()));
        assert_eq!(verify(HOME), Ok(()));
        assert_eq!(verify(HOME), Err(Refused::AddressBusy), "the address has its share");
        assert_eq!(verify([10, 0, 0, 2].into()), Ok(()), "others still get in");
        assert_eq!(verify([10, 0, 0, 3].into()), Err(Refused::Busy), "the pool is full");
        assert_eq!(pool.inside(), 3);
    }

    #[tokio::test]
    async fn places_are_given_back_and_abandoned_checks_skipped() {
        let pool = pool(2, 8, 8);
        for _ in 0..20 {
            let h = pool.hash(HOME, "pw".into()).await.unwrap().unwrap();
            assert!(pool.verify(HOME, Some(h), "pw".into()).await.unwrap());
        }
        // Callers that go away: their places come back all the same.
        for _ in 0..6 {
            let (reply, answer) = oneshot::channel();
            pool.submit(HOME, Work::Verify { stored: None, password: "x".into(), reply }).unwrap();
            drop(answer);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while pool.inside() > 0 {
            assert!(std::time::Instant::now() < deadline, "places not given back");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(pool.shared.lock().per_address.is_empty());
    }
}
