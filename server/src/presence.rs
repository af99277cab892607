//! Presence: who is online, from the live sessions in memory.
//!
//! A user is ONLINE with at least one live session (AWAY when every live
//! session set AWAY), and turns OFFLINE only after the last session has been
//! gone for a grace period, so a quick reconnect does not flap. Updates go
//! only to sessions that subscribed to the user, at most one per user per
//! coalescing window per subscriber (the latest state wins). Never to
//! everyone in every group: that is what makes presence expensive
//! elsewhere.
//!
//! In a cluster every node keeps this table for its own sessions and
//! announces its view of each user (online, away, offline once the grace
//! period is over) to the others (see `cluster/presence.rs`), which record
//! it as the user's *remote* sessions: a user is online while any node
//! holds a live session.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use confab_protocol::framing::frame_bytes;
use confab_protocol::pb::{self, PresenceState};

use crate::delivery::Delivery;

/// How often pending offline transitions and coalesced updates are flushed.
pub const TICK: Duration = Duration::from_millis(100);

/// One live session of this node.
struct Session {
    away: bool,
    device: u64,
}

/// What this node says about one of its users to the other nodes of a
/// cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Announcement {
    /// Numbered in the order announced, from 1.
    pub seq: u64,
    /// Who.
    pub user: u64,
    /// Their name.
    pub username: String,
    /// Online or away while they have sessions here; offline once the last
    /// one has been gone for the grace period.
    pub state: PresenceState,
    /// When the last session here ended (offline only).
    pub last_seen_ms: i64,
    /// The devices with sessions here.
    pub devices: Vec<u64>,
}

struct UserState {
    username: String,
    /// Live sessions on this node.
    sessions: HashMap<u64, Session>,
    /// Other nodes with live sessions of the user, and whether the user is
    /// away there.
    remote: HashMap<Arc<str>, bool>,
    /// What this node last announced about the user (cluster mode).
    announced: PresenceState,
    /// What subscribers were last told (or would be).
    published: PresenceState,
    /// Set when the last session ended: go offline at this instant.
    offline_at: Option<Instant>,
    last_seen_ms: i64,
}

impl UserState {
    fn new(username: &str) -> UserState {
        UserState {
            username: username.to_string(),
            sessions: HashMap::new(),
            remote: HashMap::new(),
            announced: PresenceState::Offline,
            published: PresenceState::Offline,
            offline_at: None,
            last_seen_ms: 0,
        }
    }

    /// The user's state over every node (the most available one); during
    /// the grace period with no sessions anywhere, what was published.
    fn live_state(&self) -> PresenceState {
        if self.sessions.is_empty() && self.remote.is_empty() {
            self.published
        } else if self.sessions.values().all(|s| s.away) && self.remote.values().all(|away| *away) {
            PresenceState::Away
        } else {
            PresenceState::Online
        }
    }

    /// The user's state from this node's sessions alone (offline during
    /// the grace period is decided by the caller).
    fn local_state(&self) -> PresenceState {
        if self.sessions.is_empty() {
            PresenceState::Offline
        } else if self.sessions.values().all(|s| s.away) {
            PresenceState::Away
        } else {
            PresenceState::Online
        }
    }
}

struct Watch {
    /// The subscribing session's user (to address its session).
    owner: u64,
    last_sent: Option<Instant>,
    dirty: bool,
}

#[derive(Default)]
struct State {
    users: HashMap<u64, UserState>,
    /// watched user → subscribing session → delivery bookkeeping.
    watchers: HashMap<u64, HashMap<u64, Watch>>,
    /// subscribing session → watched users.
    subscriptions: HashMap<u64, HashSet<u64>>,
    /// Last-seen times (and usernames, for the updates still coalescing
    /// when they go) of users who went offline while this server ran.
    last_seen: HashMap<u64, (String, i64)>,
    /// Announcements made (cluster mode).
    announced: u64,
}

/// The presence table.
pub struct Presence {
    state: Mutex<State>,
    delivery: Arc<dyn Delivery>,
    grace: Duration,
    coalesce: Duration,
    /// Where announcements go (cluster mode): called with the table locked,
    /// so announcements leave in the order they were numbered.
    announce: OnceLock<Box<dyn Fn(Announcement) + Send + Sync>>,
}

/// Too many subscriptions for one session.
#[derive(Debug)]
pub struct TooMany {
    /// The limit.
    pub max: u32,
}

impl Presence {
    /// A table delivering through `delivery`.
    pub fn new(delivery: Arc<dyn Delivery>, grace: Duration, coalesce: Duration) -> Self {
        Presence { state: Mutex::new(State::default()), delivery, grace, coalesce, announce: OnceLock::new() }
    }

    /// Announces this node's view of its users through `to` from now on
    /// (cluster mode; set once).
    pub fn announce_to(&self, to: Box<dyn Fn(Announcement) + Send + Sync>) {
        let _ = self.announce.set(to);
    }

    /// The grace period after a user's last session.
    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// Announces `user`'s local state if it changed (`offline`: the grace
    /// period is over).
    fn announce_local(&self, st: &mut State, user: u64, offline: bool) {
        let Some(announce) = self.announce.get() else { return };
        let Some(u) = st.users.get_mut(&user) else { return };
        let state = if offline { PresenceState::Offline } else { u.local_state() };
        if state == PresenceState::Offline && !offline {
            // In the grace period: keep what was announced.
            return;
        }
        if state == u.announced {
            return;
        }
        u.announced = state;
        st.announced += 1;
        let u = &st.users[&user];
        announce(Announcement {
            seq: st.announced,
            user,
            username: u.username.clone(),
            state,
            last_seen_ms: if state == PresenceState::Offline { u.last_seen_ms } else { 0 },
            devices: u.sessions.values().map(|s| s.device).collect(),
        });
    }

    /// Everything this node would announce now, and the number of the last
    /// announcement it has made (a snapshot for a node that asks).
    pub fn local_snapshot(&self) -> (u64, Vec<Announcement>) {
        let st = self.state();
        let seq = st.announced;
        let users = st
            .users
            .iter()
            .filter(|(_, u)| u.announced != PresenceState::Offline)
            .map(|(id, u)| Announcement {
                seq,
                user: *id,
                username: u.username.clone(),
                state: u.announced,
                last_seen_ms: 0,
                devices: u.sessions.values().map(|s| s.device).collect(),
            })
            .collect();
        (seq, users)
    }

    /// Another node's view of `user` changed: `state` there (offline:
    /// the user has no session left on `node`, since `last_seen_ms`).
    pub fn remote_update(
        &self,
        node: &Arc<str>,
        user: u64,
        username: &str,
        state: PresenceState,
        last_seen_ms: i64,
        now: Instant,
    ) {
        let mut st = self.state();
        if state == PresenceState::Offline {
            let Some(u) = st.users.get_mut(&user) else {
                // Not online anywhere this node knows of: only the time.
                let newer = st.last_seen.get(&user).is_none_or(|(_, t)| *t < last_seen_ms);
                if newer {
                    st.last_seen.insert(user, (username.to_string(), last_seen_ms));
                }
                return;
            };
            if u.remote.remove(node).is_none() {
                return;
            }
            u.last_seen_ms = u.last_seen_ms.max(last_seen_ms);
            self.settle(&mut st, user, now);
        } else {
            let u = st.users.entry(user).or_insert_with(|| UserState::new(username));
            u.remote.insert(Arc::clone(node), state == PresenceState::Away);
            self.publish(&mut st, user, now);
        }
    }

    /// `node` is gone (it died, or lost its link to the cluster): its users
    /// have no sessions there any more, as of `now_ms`. Returns the users
    /// whose presence it held.
    pub fn remote_node_gone(&self, node: &str, now: Instant, now_ms: i64) -> usize {
        let mut st = self.state();
        let users: Vec<u64> = st.users.iter().filter(|(_, u)| u.remote.contains_key(node)).map(|(id, _)| *id).collect();
        for user in &users {
            if let Some(u) = st.users.get_mut(user) {
                u.remote.remove(node);
                u.last_seen_ms = u.last_seen_ms.max(now_ms);
            }
            self.settle(&mut st, *user, now);
        }
        users.len()
    }

    /// After a remote session went: offline now if the user has sessions
    /// nowhere (the other node applied the grace period already), else
    /// the state over what is left.
    fn settle(&self, st: &mut State, user: u64, now: Instant) {
        let Some(u) = st.users.get_mut(&user) else { return };
        if u.sessions.is_empty() && u.remote.is_empty() {
            if u.offline_at.is_none() {
                u.offline_at = Some(now);
            }
        } else {
            self.publish(st, user, now);
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Each critical section leaves the maps consistent before any call
        // that could panic, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A session of `user` became live.
    pub fn session_up(&self, user: u64, username: &str, device: u64, session: u64, now: Instant) {
        let mut st = self.state();
        let entry = st.users.entry(user).or_insert_with(|| UserState::new(username));
        entry.sessions.insert(session, Session { away: false, device });
        entry.offline_at = None;
        self.announce_local(&mut st, user, false);
        self.publish(&mut st, user, now);
    }

    /// A session of `user` ended (or logged out): ends its subscriptions and,
    /// if it was the user's last, starts the grace period.
    pub fn session_down(&self, user: u64, session: u64, now: Instant, now_ms: i64) {
        let mut st = self.state();
        if let Some(watched) = st.subscriptions.remove(&session) {
            for w in watched {
                if let Some(ws) = st.watchers.get_mut(&w) {
                    ws.remove(&session);
                    if ws.is_empty() {
                        st.watchers.remove(&w);
                    }
                }
            }
        }
        let Some(entry) = st.users.get_mut(&user) else { return };
        entry.sessions.remove(&session);
        if entry.sessions.is_empty() {
            entry.offline_at = Some(now + self.grace);
            entry.last_seen_ms = now_ms;
        } else {
            self.announce_local(&mut st, user, false);
            self.publish(&mut st, user, now);
        }
    }

    /// Sets one session's away flag.
    pub fn set_away(&self, user: u64, session: u64, away: bool, now: Instant) {
        let mut st = self.state();
        if let Some(s) = st.users.get_mut(&user).and_then(|u| u.sessions.get_mut(&session)) {
            s.away = away;
        }
        self.announce_local(&mut st, user, false);
        self.publish(&mut st, user, now);
    }

    /// Subscribes `session` (of user `owner`) to `users` (id, username,
    /// stored last-seen), returning their current presence.
    pub fn subscribe(
        &self,
        owner: u64,
        session: u64,
        users: &[(u64, String, i64)],
        max: u32,
        now: Instant,
    ) -> Result<Vec<pb::Presence>, TooMany> {
        let mut st = self.state();
        let existing = st.subscriptions.get(&session).map_or(0, HashSet::len);
        let new =
            users.iter().filter(|(u, _, _)| !st.subscriptions.get(&session).is_some_and(|s| s.contains(u))).count();
        if existing + new > max as usize {
            return Err(TooMany { max });
        }
        let mut out = Vec::with_capacity(users.len());
        for (user, username, stored_last_seen) in users {
            st.subscriptions.entry(session).or_default().insert(*user);
            // The reply carries the current state, so the window starts now.
            st.watchers.entry(*user).or_default().insert(session, Watch { owner, last_sent: Some(now), dirty: false });
            out.push(Self::current(&st, *user, username, *stored_last_seen));
        }
        Ok(out)
    }

    /// Ends subscriptions.
    pub fn unsubscribe(&self, session: u64, users: &[u64]) {
        let mut st = self.state();
        for user in users {
            if let Some(s) = st.subscriptions.get_mut(&session) {
                s.remove(user);
            }
            if let Some(ws) = st.watchers.get_mut(user) {
                ws.remove(&session);
            }
        }
    }

    fn current(st: &State, user: u64, username: &str, stored_last_seen: i64) -> pb::Presence {
        match st.users.get(&user) {
            Some(u) if u.published != PresenceState::Offline || !u.sessions.is_empty() || !u.remote.is_empty() => {
                pb::Presence {
                    user_id: user,
                    username: username.to_string(),
                    state: u.live_state() as i32,
                    last_seen_ms: 0,
                }
            }
            _ => pb::Presence {
                user_id: user,
                username: username.to_string(),
                state: PresenceState::Offline as i32,
                last_seen_ms: st.last_seen.get(&user).map_or(stored_last_seen, |(_, t)| *t),
            },
        }
    }

    /// Recomputes a user's state and tells subscribers if it changed.
    fn publish(&self, st: &mut State, user: u64, now: Instant) {
        let Some(entry) = st.users.get_mut(&user) else { return };
        let state = entry.live_state();
        if state == entry.published {
            return;
        }
        entry.published = state;
        self.notify(st, user, now);
    }

    fn notify(&self, st: &mut State, user: u64, now: Instant) {
        let Some(frame) = Self::frame(st, user) else { return };
        if let Some(watchers) = st.watchers.get_mut(&user) {
            for (session, w) in watchers.iter_mut() {
                match w.last_sent {
                    Some(t) if now.saturating_duration_since(t) < self.coalesce => w.dirty = true,
                    _ => {
                        w.last_sent = Some(now);
                        w.dirty = false;
                        self.delivery.deliver_to_session(w.owner, *session, frame.clone());
                    }
                }
            }
        }
    }

    fn frame(st: &State, user: u64) -> Option<bytes::Bytes> {
        let u = st.users.get(&user)?;
        let offline = u.published == PresenceState::Offline;
        let p = pb::Presence {
            user_id: user,
            username: u.username.clone(),
            state: u.published as i32,
            last_seen_ms: if offline { u.last_seen_ms } else { 0 },
        };
        Some(frame_bytes(&pb::ServerFrame { request_id: 0, body: Some(pb::server_frame::Body::Presence(p)) }))
    }

    /// Applies grace periods that ended and sends coalesced updates whose
    /// window has passed. Called every [`TICK`].
    pub fn tick(&self, now: Instant) {
        let mut st = self.state();
        let expired: Vec<u64> = st
            .users
            .iter()
            .filter(|(_, u)| u.sessions.is_empty() && u.offline_at.is_some_and(|t| t <= now))
            .map(|(id, _)| *id)
            .collect();
        for user in expired {
            self.announce_local(&mut st, user, true);
            if let Some(u) = st.users.get_mut(&user)
                && !u.remote.is_empty()
            {
                // Still online on another node.
                u.offline_at = None;
                self.publish(&mut st, user, now);
                continue;
            }
            if let Some(u) = st.users.get_mut(&user) {
                u.offline_at = None;
                u.published = PresenceState::Offline;
                let seen = (u.username.clone(), u.last_seen_ms);
                st.last_seen.insert(user, seen);
            }
            self.notify(&mut st, user, now);
            st.users.remove(&user);
        }
        let due: Vec<(u64, u64, u64)> = st
            .watchers
            .iter()
            .flat_map(|(user, ws)| {
                ws.iter()
                    .filter(|(_, w)| {
                        w.dirty && w.last_sent.is_none_or(|t| now.saturating_duration_since(t) >= self.coalesce)
                    })
                    .map(move |(session, w)| (*user, *session, w.owner))
            })
            .collect();
        for (user, session, owner) in due {
            let frame = match st.users.get(&user) {
                Some(_) => Self::frame(&st, user),
                None => {
                    // Gone offline while this watcher's window was open: the
                    // user's entry is gone, its last-seen record is not.
                    let (username, last_seen_ms) = st.last_seen.get(&user).cloned().unwrap_or_default();
                    let p =
                        pb::Presence { user_id: user, username, state: PresenceState::Offline as i32, last_seen_ms };
                    Some(frame_bytes(&pb::ServerFrame {
                        request_id: 0,
                        body: Some(pb::server_frame::Body::Presence(p)),
                    }))
                }
            };
            if let Some(w) = st.watchers.get_mut(&user).and_then(|ws| ws.get_mut(&session)) {
                w.dirty = false;
                w.last_sent = Some(now);
            }
            if let Some(frame) = frame {
                self.delivery.deliver_to_session(owner, session, frame);
            }
        }
    }

    /// Users online now (at least one live session).
    pub fn online(&self) -> usize {
        self.state().users.values().filter(|u| !u.sessions.is_empty()).count()
    }
}
