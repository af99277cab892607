//! Server metrics in Prometheus text format. A fixed set of counters and
//! histograms on atomics: cheap on the hot path, no registry to lock.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use confab_protocol::pb::{client_frame::Body, server_frame::Body as Reply};

use crate::link::Transport;

/// What the session table knows now, for [`Metrics::render`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Live {
    /// Authenticated sessions.
    pub sessions: usize,
    /// Users with at least one live session.
    pub users_online: usize,
    /// The outbound backlog in bytes.
    pub queued_bytes: u64,
}

/// A histogram with fixed upper bounds.
pub struct Histogram {
    bounds: &'static [f64],
    buckets: Vec<AtomicU64>,
    sum: AtomicU64,
    count: AtomicU64,
    /// Multiplier from the recorded integer to the exported unit.
    scale: f64,
}

impl Histogram {
    fn new(bounds: &'static [f64], scale: f64) -> Self {
        Histogram {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
            count: AtomicU64::new(0),
            scale,
        }
    }

    /// Records one value (in the histogram's integer unit).
    pub fn record(&self, v: u64) {
        let x = v as f64 * self.scale;
        if let Some(i) = self.bounds.iter().position(|b| x <= *b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.sum.fetch_add(v, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (b, n) in self.bounds.iter().zip(&self.buckets) {
            cumulative += n.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", self.sum.load(Relaxed) as f64 * self.scale);
        let _ = writeln!(out, "{name}_count {count}");
    }
}

const REQUEST_KINDS: &[&str] = &[
    "hello",
    "signup",
    "login",
    "resume",
    "logout",
    "list_devices",
    "revoke_device",
    "open_direct",
    "create_group",
    "add_members",
    "remove_member",
    "leave_group",
    "rename_group",
    "list_conversations",
    "list_members",
    "set_role",
    "get_conversation",
    "send",
    "sync",
    "ack_cursor",
    "history",
    "mark_read",
    "read_receipts",
    "subscribe_presence",
    "unsubscribe_presence",
    "set_status",
    "typing",
    "register_push",
    "unregister_push",
    "ping",
    "revoke_other_devices",
    "change_password",
    "set_blocked",
    "list_blocked",
    "get_privacy",
    "set_privacy",
    "search_users",
];

/// The request kind's name, as in the schema.
pub fn request_kind(body: &Body) -> usize {
    match body {
        Body::Hello(_) => 0,
        Body::Signup(_) => 1,
        Body::Login(_) => 2,
        Body::Resume(_) => 3,
        Body::Logout(_) => 4,
        Body::ListDevices(_) => 5,
        Body::RevokeDevice(_) => 6,
        Body::OpenDirect(_) => 7,
        Body::CreateGroup(_) => 8,
        Body::AddMembers(_) => 9,
        Body::RemoveMember(_) => 10,
        Body::LeaveGroup(_) => 11,
        Body::RenameGroup(_) => 12,
        Body::ListConversations(_) => 13,
        Body::ListMembers(_) => 14,
        Body::SetRole(_) => 15,
        Body::GetConversation(_) => 16,
        Body::Send(_) => 17,
        Body::Sync(_) => 18,
        Body::AckCursor(_) => 19,
        Body::History(_) => 20,
        Body::MarkRead(_) => 21,
        Body::ReadReceipts(_) => 22,
        Body::SubscribePresence(_) => 23,
        Body::UnsubscribePresence(_) => 24,
        Body::SetStatus(_) => 25,
        Body::Typing(_) => 26,
        Body::RegisterPush(_) => 27,
        Body::UnregisterPush(_) => 28,
        Body::Ping(_) => 29,
        Body::RevokeOtherDevices(_) => 30,
        Body::ChangePassword(_) => 31,
        Body::SetBlocked(_) => 32,
        Body::ListBlocked(_) => 33,
        Body::GetPrivacy(_) => 34,
        Body::SetPrivacy(_) => 35,
        Body::SearchUsers(_) => 36,
    }
}

const REPLY_KINDS: &[&str] = &[
    "welcome",
    "error",
    "done",
    "auth_ok",
    "device_list",
    "conversation",
    "conversation_list",
    "member_list",
    "sent",
    "sync_page",
    "history_page",
    "read_state",
    "read_receipt_list",
    "presence_list",
    "push_registered",
    "pong",
    "event",
    "presence",
    "typing",
    "read_receipt",
    "go_away",
    "blocked_list",
    "privacy_settings",
    "user_list",
];

fn reply_kind(reply: &Reply) -> usize {
    match reply {
        Reply::Welcome(_) => 0,
        Reply::Error(_) => 1,
        Reply::Done(_) => 2,
        Reply::AuthOk(_) => 3,
        Reply::DeviceList(_) => 4,
        Reply::Conversation(_) => 5,
        Reply::ConversationList(_) => 6,
        Reply::MemberList(_) => 7,
        Reply::Sent(_) => 8,
        Reply::SyncPage(_) => 9,
        Reply::HistoryPage(_) => 10,
        Reply::ReadState(_) => 11,
        Reply::ReadReceiptList(_) => 12,
        Reply::PresenceList(_) => 13,
        Reply::PushRegistered(_) => 14,
        Reply::Pong(_) => 15,
        Reply::Event(_) => 16,
        Reply::Presence(_) => 17,
        Reply::Typing(_) => 18,
        Reply::ReadReceipt(_) => 19,
        Reply::GoAway(_) => 20,
        Reply::BlockedList(_) => 21,
        Reply::PrivacySettings(_) => 22,
        Reply::UserList(_) => 23,
    }
}

/// Every metric the server exports.
pub struct Metrics {
    /// The cluster machinery's counters (rendered in cluster mode only).
    pub cluster: std::sync::Arc<ClusterStats>,
    connections: [AtomicU64; 3],
    connections_total: [AtomicU64; 3],
    frames_in: Vec<AtomicU64>,
    frames_out: Vec<AtomicU64>,
    /// Live events queued to sessions (fan-out deliveries).
    pub deliveries: AtomicU64,
    /// Sessions cut off because their outbound queue overflowed.
    pub overflow_disconnects: AtomicU64,
    /// Messages (text and membership changes) committed.
    pub messages_stored: AtomicU64,
    /// Failed logins and resumes.
    pub auth_failures: AtomicU64,
    /// Connections refused because their address had too many open.
    pub refused_per_address: AtomicU64,
    /// Signups and logins refused because the password-check queue was full.
    pub password_checks_shed: AtomicU64,
    /// QUIC datagrams received (typing notices).
    pub typing_datagrams_in: AtomicU64,
    /// Typing events sent as QUIC datagrams.
    pub typing_datagrams_out: AtomicU64,
    errors: Mutex<BTreeMap<u32, u64>>,
    /// Group commit latency (µs → seconds).
    pub commit_latency: Histogram,
    /// Commands per group commit.
    pub commit_batch: Histogram,
    /// Microseconds the store's writers paused between groups for its
    /// flushes and merges to catch up.
    pub writer_paused_us: AtomicU64,
    /// Push notifications.
    pub push: PushMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        const LATENCY: &[f64] = &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];
        const BATCH: &[f64] = &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0];
        Metrics {
            cluster: Default::default(),
            connections: Default::default(),
            connections_total: Default::default(),
            frames_in: REQUEST_KINDS.iter().map(|_| AtomicU64::new(0)).collect(),
            frames_out: REPLY_KINDS.iter().map(|_| AtomicU64::new(0)).collect(),
            deliveries: AtomicU64::new(0),
            overflow_disconnects: AtomicU64::new(0),
            messages_stored: AtomicU64::new(0),
            writer_paused_us: AtomicU64::new(0),
            auth_failures: AtomicU64::new(0),
            refused_per_address: AtomicU64::new(0),
            password_checks_shed: AtomicU64::new(0),
            typing_datagrams_in: AtomicU64::new(0),
            typing_datagrams_out: AtomicU64::new(0),
            errors: Mutex::new(BTreeMap::new()),
            commit_latency: Histogram::new(LATENCY, 1e-6),
            commit_batch: Histogram::new(BATCH, 1.0),
            push: PushMetrics::default(),
        }
    }
}

fn transport_index(t: Transport) -> usize {
    match t {
        Transport::Quic => 0,
        Transport::Tcp => 1,
        Transport::WebSocket => 2,
    }
}

const TRANSPORTS: [&str; 3] = ["quic", "tcp", "ws"];

impl Metrics {
    /// A connection opened.
    pub fn connection_opened(&self, t: Transport) {
        self.connections[transport_index(t)].fetch_add(1, Relaxed);
        self.connections_total[transport_index(t)].fetch_add(1, Relaxed);
    }

    /// A connection closed.
    pub fn connection_closed(&self, t: Transport) {
        self.connections[transport_index(t)].fetch_sub(1, Relaxed);
    }

    /// A request or notification arrived.
    pub fn frame_in(&self, body: &Body) {
        self.frames_in[request_kind(body)].fetch_add(1, Relaxed);
    }

    /// A response went out; errors are also counted by code.
    pub fn frame_out(&self, reply: &Reply) {
        self.frames_out[reply_kind(reply)].fetch_add(1, Relaxed);
        if let Reply::Error(e) = reply {
            self.error(e.code);
        }
    }

    /// An error code was sent.
    pub fn error(&self, code: u32) {
        *self.errors.lock().unwrap_or_else(|p| p.into_inner()).entry(code).or_default() += 1;
    }

    /// A group commit finished, `paused` after the one before it.
    pub fn committed(&self, commands: usize, messages: u64, elapsed: Duration, paused: Duration) {
        self.commit_latency.record(elapsed.as_micros() as u64);
        self.commit_batch.record(commands as u64);
        self.messages_stored.fetch_add(messages, Relaxed);
        if !paused.is_zero() {
            let us = u64::try_from(paused.as_micros()).unwrap_or(u64::MAX);
            self.writer_paused_us.fetch_add(us, Relaxed);
        }
    }

    /// Renders the Prometheus text exposition.
    pub fn render(&self, live: Live) -> String {
        let Live { sessions, users_online, queued_bytes } = live;
        let mut o = String::with_capacity(8 * 1024);
        let gauge = |o: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        let counter = |o: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        let _ =
            writeln!(o, "# HELP confab_connections Open connections by transport.\n# TYPE confab_connections gauge");
        for (i, t) in TRANSPORTS.iter().enumerate() {
            let _ = writeln!(o, "confab_connections{{transport=\"{t}\"}} {}", self.connections[i].load(Relaxed));
        }
        let _ = writeln!(
            o,
            "# HELP confab_connections_total Connections accepted by transport.\n# TYPE confab_connections_total counter"
        );
        for (i, t) in TRANSPORTS.iter().enumerate() {
            let _ = writeln!(
                o,
                "confab_connections_total{{transport=\"{t}\"}} {}",
                self.connections_total[i].load(Relaxed)
            );
        }
        gauge(&mut o, "confab_sessions", "Authenticated sessions.", sessions as u64);
        gauge(&mut o, "confab_users_online", "Users with at least one live session.", users_online as u64);
        gauge(
            &mut o,
            "confab_outbound_queued_bytes",
            "Bytes delivered to sessions and not yet written to their connections (the outbound backlog).",
            queued_bytes,
        );
        let _ = writeln!(
            o,
            "# HELP confab_frames_in_total Frames received by type.\n# TYPE confab_frames_in_total counter"
        );
        for (kind, n) in REQUEST_KINDS.iter().zip(&self.frames_in) {
            let _ = writeln!(o, "confab_frames_in_total{{type=\"{kind}\"}} {}", n.load(Relaxed));
        }
        let _ = writeln!(
            o,
            "# HELP confab_frames_out_total Responses sent by type (events: confab_deliveries_total).\n# TYPE confab_frames_out_total counter"
        );
        for (kind, n) in REPLY_KINDS.iter().zip(&self.frames_out) {
            let _ = writeln!(o, "confab_frames_out_total{{type=\"{kind}\"}} {}", n.load(Relaxed));
        }
        counter(
            &mut o,
            "confab_messages_stored_total",
            "Messages committed (text and membership changes).",
            self.messages_stored.load(Relaxed),
        );
        counter(
            &mut o,
            "confab_deliveries_total",
            "Live events queued to sessions (fan-out).",
            self.deliveries.load(Relaxed),
        );
        counter(
            &mut o,
            "confab_overflow_disconnects_total",
            "Sessions cut off because their outbound queue overflowed.",
            self.overflow_disconnects.load(Relaxed),
        );
        counter(&mut o, "confab_auth_failures_total", "Failed logins and resumes.", self.auth_failures.load(Relaxed));
        counter(
            &mut o,
            "confab_connections_refused_per_address_total",
            "Connections refused: their source address had max_connections_per_address open.",
            self.refused_per_address.load(Relaxed),
        );
        counter(
            &mut o,
            "confab_password_checks_shed_total",
            "Signups and logins answered SERVER_BUSY because the password-check queue was full.",
            self.password_checks_shed.load(Relaxed),
        );
        counter(
            &mut o,
            "confab_typing_datagrams_in_total",
            "QUIC datagrams received (typing notices).",
            self.typing_datagrams_in.load(Relaxed),
        );
        counter(
            &mut o,
            "confab_typing_datagrams_out_total",
            "Typing events sent as QUIC datagrams instead of on the session stream.",
            self.typing_datagrams_out.load(Relaxed),
        );
        let _ =
            writeln!(o, "# HELP confab_errors_total Error frames sent by code.\n# TYPE confab_errors_total counter");
        for (code, n) in self.errors.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let name = confab_protocol::ErrorCode(*code).name().unwrap_or("UNKNOWN");
            let _ = writeln!(o, "confab_errors_total{{code=\"{code}\",name=\"{name}\"}} {n}");
        }
        self.commit_latency.render(&mut o, "confab_store_commit_seconds", "Group commit latency (write + sync).");
        self.commit_batch.render(&mut o, "confab_store_commit_batch_size", "Commands per group commit.");
        let _ = writeln!(
            o,
            "# HELP confab_store_writer_paused_seconds_total Time the store's writers paused between groups for its flushes and merges to catch up.\n# TYPE confab_store_writer_paused_seconds_total counter\nconfab_store_writer_paused_seconds_total {}",
            self.writer_paused_us.load(Relaxed) as f64 / 1e6
        );
        self.push.render(&mut o);
        self.cluster.render(&mut o);
        o
    }
}

/// Push notification counters (see `push`).
pub struct PushMetrics {
    /// New notification jobs queued with messages.
    pub queued: AtomicU64,
    sent: [AtomicU64; 2],
    skipped: [AtomicU64; 2],
    failed: Mutex<BTreeMap<&'static str, u64>>,
    /// Notifications given up after the last retry.
    pub gave_up: AtomicU64,
    /// Targets removed because the push service said they are gone.
    pub targets_removed: AtomicU64,
    /// From the first message a notification covers to the receiver's 2xx
    /// (ms → seconds). Includes the configured delay.
    pub latency: Histogram,
}

impl Default for PushMetrics {
    fn default() -> Self {
        const LATENCY: &[f64] = &[0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0];
        PushMetrics {
            queued: AtomicU64::new(0),
            sent: Default::default(),
            skipped: Default::default(),
            failed: Mutex::new(BTreeMap::new()),
            gave_up: AtomicU64::new(0),
            targets_removed: AtomicU64::new(0),
            latency: Histogram::new(LATENCY, 1e-3),
        }
    }
}

impl PushMetrics {
    /// A notification was accepted by the receiver, `latency_ms` after its
    /// first message.
    pub fn sent(&self, web_push: bool, latency_ms: u64) {
        self.sent[usize::from(!web_push)].fetch_add(1, Relaxed);
        self.latency.record(latency_ms);
    }

    /// Notifications sent (Web Push, webhook).
    pub fn sent_total(&self) -> u64 {
        self.sent.iter().map(|n| n.load(Relaxed)).sum()
    }

    /// A due notification was not needed: acked in time, or read.
    pub fn skipped(&self, read: bool) {
        self.skipped[usize::from(read)].fetch_add(1, Relaxed);
    }

    /// Skipped notifications: (acked in time, read elsewhere).
    pub fn skipped_total(&self) -> (u64, u64) {
        (self.skipped[0].load(Relaxed), self.skipped[1].load(Relaxed))
    }

    /// A delivery attempt failed.
    pub fn failed(&self, reason: &'static str) {
        if reason == "gone" {
            self.targets_removed.fetch_add(1, Relaxed);
        }
        *self.failed.lock().unwrap_or_else(|p| p.into_inner()).entry(reason).or_default() += 1;
    }

    /// Failed attempts with this reason.
    pub fn failed_count(&self, reason: &str) -> u64 {
        self.failed.lock().unwrap_or_else(|p| p.into_inner()).get(reason).copied().unwrap_or(0)
    }

    fn render(&self, o: &mut String) {
        let _ = writeln!(
            o,
            "# HELP confab_push_queued_total Push notification jobs queued with messages.\n# TYPE confab_push_queued_total counter\nconfab_push_queued_total {}",
            self.queued.load(Relaxed)
        );
        let _ = writeln!(
            o,
            "# HELP confab_push_sent_total Push notifications accepted by the receiver, by target kind.\n# TYPE confab_push_sent_total counter"
        );
        for (kind, n) in ["web_push", "webhook"].iter().zip(&self.sent) {
            let _ = writeln!(o, "confab_push_sent_total{{kind=\"{kind}\"}} {}", n.load(Relaxed));
        }
        let _ = writeln!(
            o,
            "# HELP confab_push_skipped_total Due notifications not sent: the device acked in time, or the user read the conversation.\n# TYPE confab_push_skipped_total counter"
        );
        for (reason, n) in ["acked", "read"].iter().zip(&self.skipped) {
            let _ = writeln!(o, "confab_push_skipped_total{{reason=\"{reason}\"}} {}", n.load(Relaxed));
        }
        let _ = writeln!(
            o,
            "# HELP confab_push_failed_total Failed push delivery attempts by reason.\n# TYPE confab_push_failed_total counter"
        );
        for (reason, n) in self.failed.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = writeln!(o, "confab_push_failed_total{{reason=\"{reason}\"}} {n}");
        }
        let _ = writeln!(
            o,
            "# HELP confab_push_gave_up_total Push notifications given up after the last retry.\n# TYPE confab_push_gave_up_total counter\nconfab_push_gave_up_total {}",
            self.gave_up.load(Relaxed)
        );
        let _ = writeln!(
            o,
            "# HELP confab_push_targets_removed_total Push targets removed because the push service answered 404 or 410.\n# TYPE confab_push_targets_removed_total counter\nconfab_push_targets_removed_total {}",
            self.targets_removed.load(Relaxed)
        );
        self.latency.render(
            o,
            "confab_push_latency_seconds",
            "From the first message a push notification covers to the receiver accepting it (includes push.delay_ms).",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.connection_opened(Transport::Tcp);
        m.committed(3, 2, Duration::from_micros(700), Duration::ZERO);
        m.committed(1, 1, Duration::from_micros(700), Duration::from_millis(250));
        m.error(311);
        let text = m.render(Live { sessions: 1, users_online: 1, queued_bytes: 0 });
        assert!(text.contains("confab_connections{transport=\"tcp\"} 1"));
        assert!(text.contains("confab_store_commit_seconds_bucket{le=\"0.001\"} 2"));
        assert!(text.contains("confab_store_commit_batch_size_bucket{le=\"5\"} 2"));
        assert!(text.contains("confab_messages_stored_total 3"));
        assert!(text.contains("confab_store_writer_paused_seconds_total 0.25\n"), "{text}");
        assert!(text.contains("confab_errors_total{code=\"311\",name=\"CONVERSATION_NOT_FOUND\"} 1"));
        m.push.sent(false, 3200);
        m.push.failed("timeout");
        m.push.skipped(true);
        let text = m.render(Live { sessions: 1, users_online: 1, queued_bytes: 0 });
        assert!(text.contains("confab_push_sent_total{kind=\"webhook\"} 1"));
        assert!(text.contains("confab_push_failed_total{reason=\"timeout\"} 1"));
        assert!(text.contains("confab_push_skipped_total{reason=\"read\"} 1"));
        assert!(text.contains("confab_push_latency_seconds_bucket{le=\"5\"} 1"));
    }
}

/// Counters of the cluster machinery on this node.
#[derive(Debug, Default)]
pub struct ClusterStats {
    /// Whether this node runs in a cluster (the lines are rendered then).
    pub enabled: std::sync::atomic::AtomicBool,
    /// Partitions this node owns now.
    pub partitions_owned: AtomicU64,
    /// Partitions this node took over.
    pub takeovers: AtomicU64,
    /// Partitions this node gave back (rebalancing, shutdown).
    pub released: AtomicU64,
    /// Leases this node could not renew (another node took them, or NATS
    /// did not answer).
    pub leases_lost: AtomicU64,
    /// Log appends refused because another node had appended: this node
    /// was fenced out.
    pub fenced: AtomicU64,
    /// Log appends whose outcome was unknown (then resolved from the tail).
    pub unknown: AtomicU64,
    /// Store operations forwarded to another node.
    pub forwarded: AtomicU64,
    /// Effect batches from other partitions applied here.
    pub effects_applied: AtomicU64,
    /// Records replayed from logs during takeovers and resolutions.
    pub replayed: AtomicU64,
    /// Live-event messages published to the other nodes (one per commit
    /// with live frames, typing notice or device ending).
    pub live_published: AtomicU64,
    /// Live-event messages dropped because too many were queued for NATS
    /// (the clients concerned catch up by sync).
    pub live_dropped: AtomicU64,
    /// Live frames received from other nodes (each handed to this node's
    /// sessions of its user, if any).
    pub live_received: AtomicU64,
    /// Effect batches queued to this node's writers and not yet applied.
    pub effects_inflight: AtomicU64,
    /// Effects consumers made anew because they read nothing while their
    /// subject held more (their NATS server died, say).
    pub effects_stalls: AtomicU64,
    /// Effect batches not yet read, by (source, target) partition: how far
    /// this node's partitions are behind the others' effects.
    pub effects_pending: std::sync::Mutex<BTreeMap<(u32, u32), u64>>,
}

impl ClusterStats {
    /// Appends the Prometheus lines (nothing on a single node).
    pub fn render(&self, out: &mut String) {
        if !self.enabled.load(Relaxed) {
            return;
        }
        let rows: [(&str, &str, &str, &AtomicU64); 14] = [
            ("confab_cluster_partitions_owned", "gauge", "Partitions this node owns.", &self.partitions_owned),
            ("confab_cluster_takeovers_total", "counter", "Partitions taken over.", &self.takeovers),
            ("confab_cluster_released_total", "counter", "Partitions given back.", &self.released),
            ("confab_cluster_leases_lost_total", "counter", "Leases that could not be renewed.", &self.leases_lost),
            ("confab_cluster_fenced_total", "counter", "Log appends refused: another node appended.", &self.fenced),
            ("confab_cluster_unknown_total", "counter", "Log appends with an unknown outcome.", &self.unknown),
            ("confab_cluster_forwarded_total", "counter", "Store operations forwarded to owners.", &self.forwarded),
            ("confab_cluster_effects_applied_total", "counter", "Effect batches applied.", &self.effects_applied),
            ("confab_cluster_replayed_total", "counter", "Log records replayed.", &self.replayed),
            (
                "confab_cluster_effects_stalls_total",
                "counter",
                "Effects consumers remade: they read nothing while effects waited.",
                &self.effects_stalls,
            ),
            (
                "confab_cluster_live_published_total",
                "counter",
                "Live-event messages sent to other nodes.",
                &self.live_published,
            ),
            (
                "confab_cluster_live_dropped_total",
                "counter",
                "Live-event messages dropped (queue to NATS full).",
                &self.live_dropped,
            ),
            (
                "confab_cluster_live_received_total",
                "counter",
                "Live frames received from other nodes.",
                &self.live_received,
            ),
            (
                "confab_cluster_effects_inflight",
                "gauge",
                "Effect batches queued to writers, not yet applied.",
                &self.effects_inflight,
            ),
        ];
        for (name, kind, help, v) in rows {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}", v.load(Relaxed));
        }
        let (sum, max) = {
            let pending = self.effects_pending.lock().unwrap_or_else(|e| e.into_inner());
            (pending.values().sum::<u64>(), pending.values().copied().max().unwrap_or(0))
        };
        let _ = writeln!(
            out,
            "# HELP confab_cluster_effects_pending Effect batches from other partitions not yet read by this node's.\n\
             # TYPE confab_cluster_effects_pending gauge\nconfab_cluster_effects_pending {sum}\n\
             # HELP confab_cluster_effects_pending_max The most effect batches one source has waiting for one of this node's partitions.\n\
             # TYPE confab_cluster_effects_pending_max gauge\nconfab_cluster_effects_pending_max {max}"
        );
    }
}

/// CPU time this process has used (user + system), in seconds; `None`
/// where `/proc/self/stat` cannot be read (not Linux).
pub fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start at the
    // state; utime and stime are the 12th and 13th from there.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    let utime: f64 = fields.nth(11)?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    // USER_HZ: 100 on every Linux ABI.
    Some((utime + stime) / 100.0)
}
