//! The chat core's state: the services a request is served with, and what
//! happens when a session starts and ends. Built once by `server` and
//! shared by every connection task; the layers above reach the store and
//! the live sessions only through it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use confab_protocol::{Limits, Now};
use tokio_util::task::TaskTracker;

use crate::accounts::{GrowthThrottle, LoginThrottle, SignupThrottle};
use crate::delivery::Delivery;
use crate::hub::{Hub, Kill, Registration};
use crate::link::Transport;
use crate::metrics::Metrics;
use crate::passwords::PasswordPool;
use crate::presence::Presence;
use crate::push::Push;
use crate::store::{Store, UserRef};

/// What guards the password-based requests (signup, login).
pub struct Credentials {
    /// Login budgets (failures, and logins whatever their outcome).
    pub logins: LoginThrottle,
    /// Signups per address.
    pub signups: SignupThrottle,
    /// Groups, members and direct conversations per user and address.
    pub growth: GrowthThrottle,
    /// Password hashing: a fixed pool of threads behind a bounded queue.
    pub passwords: PasswordPool,
}

/// The chat core: the services every request may use.
pub struct Core {
    /// Limits enforced (and advertised).
    pub limits: Limits,
    /// Everything durable.
    pub store: Arc<dyn Store>,
    /// Where live events go.
    pub delivery: Arc<dyn Delivery>,
    /// This node's live sessions.
    pub hub: Arc<Hub>,
    /// Who is online, and who wants to know.
    pub presence: Arc<Presence>,
    /// Push notifications; `None` when disabled.
    pub push: Option<Arc<Push>>,
    /// Throttles and the password pool.
    pub credentials: Credentials,
    /// Counters for /metrics.
    pub metrics: Arc<Metrics>,
    /// How long receivers show a typing indicator, in milliseconds.
    pub typing_expiry_ms: u32,
    /// Background work (for shutdown to wait on).
    pub tracker: TaskTracker,
}

/// A live, authenticated session, as the core knows it.
#[derive(Debug, Clone)]
pub struct Auth {
    /// The user.
    pub user: UserRef,
    /// The device.
    pub device_id: u64,
}

/// How a session is reached: everything [`Core::session_started`] needs.
pub struct SessionLink {
    /// The peer's address.
    pub peer: SocketAddr,
    /// Which transport.
    pub transport: Transport,
    /// How to end it from outside.
    pub kill: Arc<Kill>,
    /// Where typing may go as datagrams (QUIC sessions that negotiated
    /// them).
    pub datagrams: Option<quinn::Connection>,
}

impl Core {
    /// A session authenticated: it joins the session table and presence.
    /// Returns its registration (its queue of live events).
    pub fn session_started(&self, auth: &Auth, link: SessionLink) -> Registration {
        let user = auth.user.user_id;
        let reg = self.hub.register(user, auth.device_id, link.kill, link.peer, link.transport, link.datagrams);
        self.presence.session_up(user, &auth.user.username, auth.device_id, reg.session, Instant::now());
        reg
    }

    /// A session ended (or logged out): it leaves the table and presence,
    /// and its device's last-seen time is recorded (best effort: a full
    /// writer queue skips it).
    pub fn session_ended(&self, auth: &Auth, session: u64) {
        let user = auth.user.user_id;
        self.hub.unregister(user, session);
        let now = Now::system().unix_ms;
        self.presence.session_down(user, session, Instant::now(), now);
        let touched = self.store.touch_device(auth.device_id, now);
        self.tracker.spawn(async move {
            let _ = touched.await;
        });
    }
}
