//! The `dm` and `group` scenarios against Confab, and the row every load
//! scenario (any system) turns its outcome into.
//!
//! - dm: P pairs of users; each sender sends to its own DM, each receiver
//!   on its own session counts and times deliveries.
//! - group: G groups of 100 members, every member online on its own
//!   session; one member of each group sends. Every member's session
//!   (the sender's included) counts deliveries. Afterwards each group's
//!   `last_seq` and each member's inbox head prove that every message was
//!   written once, with exactly one inbox entry per member.
//!
//! Both run against [`Nodes`]: one server, or the nodes of a cluster. On a
//! cluster, dm pair i sends from node i and receives on node i + 1 (mod N),
//! and group member i is on node i (mod N), so messages cross nodes; the
//! latency of those that did is kept apart ([`Outcome::remote_hist`]).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use confab_protocol::pb::{self, client_frame::Body, server_frame::Body as Reply};
use serde_json::json;
use tokio::sync::Semaphore;

use crate::confab::ConfabLink;
use crate::daemon::{Meter, Reading};
use crate::load::{self, AckMode, Cast, Outcome, Role, Shape};
use crate::pipe::{Pipe, Target, run_tag};
use crate::report::{Row, hist_json, lat};
use crate::wire::{Connector, Transport};

/// Sessions set up concurrently (signup hashes a password on the server).
const SETUP_CONCURRENCY: usize = 8;

/// Where sessions connect: one server, or every node of a cluster (each
/// with its own certificate). Session k goes to node k mod N.
#[derive(Clone)]
pub struct Nodes(Arc<Vec<(Arc<Connector>, Target)>>);

impl Nodes {
    /// One server.
    pub fn one(connector: Arc<Connector>, target: Target) -> Nodes {
        Nodes(Arc::new(vec![(connector, target)]))
    }

    /// Several: one connector per target, trusting its fingerprint.
    pub fn many(targets: Vec<Target>) -> anyhow::Result<Nodes> {
        if targets.is_empty() {
            bail!("no nodes");
        }
        let list = targets
            .into_iter()
            .map(|t| Ok((Arc::new(Connector::confab(&t.fingerprint, 16 * 1024)?), t)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Nodes(Arc::new(list)))
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Which node session `k` goes to.
    pub fn of(&self, k: usize) -> usize {
        k % self.len()
    }

    /// Connects to node `k` mod N and signs up `username`.
    async fn user(&self, k: usize, transport: Transport, username: &str) -> anyhow::Result<Pipe> {
        let (connector, target) = &self.0[self.of(k)];
        let mut pipe = Pipe::connect(connector, transport, target.addr(transport)?).await?;
        pipe.signup(username).await?;
        Ok(pipe)
    }
}

/// How long and how hard.
#[derive(Debug, Clone, Copy)]
pub struct LoadParams {
    /// Shape of every sender.
    pub shape: Shape,
    /// Unmeasured time first.
    pub warmup: Duration,
    /// Measured time.
    pub duration: Duration,
}

/// The row of a load run: deliveries per second, latency, CPU, and notes
/// on anything that went wrong.
pub fn load_row(
    scenario: &'static str,
    system: &str,
    config: String,
    unit: &'static str,
    o: Outcome,
    reading: Reading,
    seconds: f64,
) -> Row {
    let mut row = Row::new(scenario, system, config, o.delivered as f64 / seconds, unit);
    if !o.errors.is_empty() {
        row.notes.push(format!("refused sends {:?}", o.errors));
    }
    if o.lost > 0 {
        row.notes.push(format!("{} acknowledged messages never arrived", o.lost));
    }
    if o.checks.seq_anomalies > 0 || o.checks.inbox_gaps > 0 || o.checks.other_events > 0 {
        row.notes.push(format!(
            "integrity: {} seq anomalies, {} inbox gaps, {} non-message events",
            o.checks.seq_anomalies, o.checks.inbox_gaps, o.checks.other_events
        ));
    }
    if o.pushed_back > 0 {
        row.notes.push(format!("{} open-loop sends skipped: the socket was not draining", o.pushed_back));
    }
    if !o.late_hist.is_empty() {
        row.notes.push(format!(
            "open-loop sends left the generator late against their schedule (counted in the latency): p50 {}, p99 {}, max {}",
            lat(o.late_hist.value_at_quantile(0.5)),
            lat(o.late_hist.value_at_quantile(0.99)),
            lat(o.late_hist.max()),
        ));
    }
    // What the server side spent per message delivered, every one of its
    // processes counted.
    let cpu_per_msg_us = reading.srv_cpu_seconds.filter(|_| o.delivered > 0).map(|c| c * 1e6 / o.delivered as f64);
    row.extra = json!({
        "sent_per_sec": o.sent as f64 / seconds,
        "acked_per_sec": o.acked as f64 / seconds,
        "ack_latency_us": hist_json(&o.ack_hist),
        "latency_first_half_us": hist_json(&o.halves[0]),
        "latency_second_half_us": hist_json(&o.halves[1]),
        "receiver_msgs_per_read": o.msgs_per_read,
        "errors": o.errors,
        "lost": o.lost,
        "pushed_back": o.pushed_back,
        "send_lateness_us": hist_json(&o.late_hist),
        "seconds": seconds,
    });
    row.gen_cpu = reading.gen_cpu;
    row.srv_cpu = reading.srv_cpu;
    row.srv_rss_kib = reading.srv_rss_kib;
    row.cpu_per_msg_us = cpu_per_msg_us;
    if !o.remote_hist.is_empty() {
        row.extra["cross_node_latency_us"] = hist_json(&o.remote_hist);
    }
    row.lat = Some(o.deliver_hist);
    row
}

/// Runs `cast` with CPU readings over the measured window, the server
/// being the processes `pids`.
pub async fn measured<L: load::Link>(
    cast: Vec<Cast<L>>,
    params: &LoadParams,
    pids: &[u32],
) -> anyhow::Result<(Outcome, Reading, Vec<(u32, L)>)> {
    let mut meter = None;
    let mut reading = Reading::default();
    let mut profile = None;
    let (outcome, links) = load::run(cast, params.warmup, params.duration, |start| {
        if start {
            meter = Some(Meter::over(pids.to_vec()));
            profile = crate::daemon::Profile::start(pids);
        } else if let Some(m) = &meter {
            reading = m.read();
            if let Some(p) = profile.take() {
                p.stop();
            }
        }
    })
    .await?;
    Ok((outcome, reading, links))
}

/// Runs `f(i)` for i in 0..n with bounded concurrency; results in order.
pub async fn setup_all<T, F, Fut>(n: usize, f: F) -> anyhow::Result<Vec<T>>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(SETUP_CONCURRENCY));
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        let permits = Arc::clone(&permits);
        let fut = f(i);
        set.spawn(async move {
            let _permit = permits.acquire_owned().await?;
            fut.await.map(|t| (i, t)).with_context(|| format!("setting up #{i}"))
        });
    }
    let mut out = Vec::with_capacity(n);
    while let Some(r) = set.join_next().await {
        out.push(r??);
    }
    out.sort_by_key(|(i, _)| *i);
    Ok(out.into_iter().map(|(_, t)| t).collect())
}

/// dm against Confab: P pairs, pair i sending from node i to node i + 1.
pub async fn confab_dm(
    nodes: &Nodes,
    transport: Transport,
    pairs: usize,
    params: &LoadParams,
    pids: &[u32],
) -> anyhow::Result<(Outcome, Reading)> {
    let tag = run_tag();
    let set = setup_all(pairs, |i| {
        let (nodes, tag) = (nodes.clone(), tag.clone());
        async move {
            let (a, b) = (format!("d{tag}-{i}a"), format!("d{tag}-{i}b"));
            let rx = nodes.user(i + 1, transport, &b).await?;
            let mut tx = nodes.user(i, transport, &a).await?;
            let open = Body::OpenDirect(pb::OpenDirectRequest { username: b.clone() });
            let conversation = match tx.call_settled(open).await? {
                Reply::Conversation(c) => c.conversation_id,
                other => bail!("open_direct {b}: unexpected {other:?}"),
            };
            Ok((tx, rx, conversation))
        }
    })
    .await?;
    check_window(set.first().map(|(tx, _, _)| tx), params)?;
    let mut cast = Vec::with_capacity(pairs * 2);
    for (i, (tx, rx, conversation)) in set.into_iter().enumerate() {
        let (sid, rid) = (2 * i as u32, 2 * i as u32 + 1);
        let remote = if nodes.of(i) != nodes.of(i + 1) { vec![sid] } else { vec![] };
        cast.push(Cast {
            link: ConfabLink::new(tx, conversation, format!("p{i}")),
            role: Role {
                id: sid,
                send: Some((params.shape, AckMode::Response)),
                count: false,
                feeds: None,
                remote: vec![],
            },
            sources: vec![],
        });
        cast.push(Cast {
            link: ConfabLink::new(rx, 0, String::new()),
            role: Role { id: rid, send: None, count: true, feeds: None, remote },
            sources: vec![sid],
        });
    }
    let (outcome, reading, _) = measured(cast, params, pids).await?;
    Ok((outcome, reading))
}

fn check_window(pipe: Option<&Pipe>, params: &LoadParams) -> anyhow::Result<()> {
    if let (Some(p), Shape::Closed { window }) = (pipe, params.shape) {
        let max = p.limits().max_in_flight;
        if window as u64 >= u64::from(max) {
            bail!("window {window} must be below the server's max_in_flight ({max}): heartbeats need a slot");
        }
    }
    Ok(())
}

/// Members per group.
pub const GROUP_SIZE: usize = 100;

/// The inbox head of the session's user.
async fn inbox_head(pipe: &mut Pipe) -> anyhow::Result<u64> {
    match pipe.call_settled(Body::Sync(pb::SyncRequest { after: u64::MAX, limit: 1 })).await? {
        Reply::SyncPage(p) => Ok(p.inbox_head),
        other => bail!("sync: unexpected {other:?}"),
    }
}

/// group against Confab: G groups of 100 members over one pool of 100
/// users (every user is in every group, online on one session, member i
/// on node i); member g sends to group g.
pub async fn confab_group(
    nodes: &Nodes,
    transport: Transport,
    groups: usize,
    params: &LoadParams,
    pids: &[u32],
) -> anyhow::Result<(Outcome, Reading, bool)> {
    if groups == 0 || groups > GROUP_SIZE {
        bail!("--groups must be 1..={GROUP_SIZE}");
    }
    let tag = run_tag();
    let names: Vec<String> = (0..GROUP_SIZE).map(|i| format!("g{tag}-{i}")).collect();
    let mut pipes = setup_all(GROUP_SIZE, |i| {
        let (nodes, name) = (nodes.clone(), names[i].clone());
        async move { nodes.user(i, transport, &name).await }
    })
    .await?;
    let mut conversations = Vec::with_capacity(groups);
    for (g, owner) in pipes.iter_mut().take(groups).enumerate() {
        let others: Vec<String> = names.iter().enumerate().filter(|(i, _)| *i != g).map(|(_, n)| n.clone()).collect();
        let body = Body::CreateGroup(pb::CreateGroupRequest { title: format!("bench {g}"), usernames: others });
        match owner.call_settled(body).await.context("create_group")? {
            Reply::Conversation(c) => conversations.push(c.conversation_id),
            other => bail!("create_group: unexpected {other:?}"),
        }
    }
    // Let every member drain the setup events, and note its inbox head
    // once the heads stop moving: on a cluster the joins of groups created
    // in other partitions reach a member's inbox a little later.
    let mut heads: Vec<u64> = Vec::with_capacity(GROUP_SIZE);
    let settle_by = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut now = Vec::with_capacity(GROUP_SIZE);
        for p in &mut pipes {
            now.push(inbox_head(p).await?);
        }
        if now == heads || std::time::Instant::now() > settle_by {
            break;
        }
        heads = now;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    check_window(pipes.first(), params)?;
    let senders: Vec<u32> = (0..groups as u32).collect();
    let cast = pipes
        .into_iter()
        .enumerate()
        .map(|(i, pipe)| {
            let conversation = conversations.get(i).copied().unwrap_or(0);
            Cast {
                link: ConfabLink::new(pipe, conversation, format!("m{i}")),
                role: Role {
                    id: i as u32,
                    send: (i < groups).then_some((params.shape, AckMode::Response)),
                    count: true,
                    feeds: None,
                    remote: senders.iter().copied().filter(|g| nodes.of(*g as usize) != nodes.of(i)).collect(),
                },
                sources: senders.clone(),
            }
        })
        .collect();
    let (outcome, reading, mut links) = measured(cast, params, pids).await?;
    // One message write per send: each group's last seq is its CREATED
    // message plus one per send. One inbox entry per member per message:
    // each member's inbox grew by exactly the messages of all groups.
    let mut exact = outcome.checks.inbox_gaps == 0 && outcome.checks.seq_anomalies == 0;
    let mut total_sent = 0;
    for (g, conversation) in conversations.iter().enumerate() {
        let Some((_, link)) = links.get_mut(g) else { continue };
        let last_seq = match link
            .pipe
            .call_settled(Body::GetConversation(pb::GetConversationRequest { conversation_id: *conversation }))
            .await?
        {
            Reply::Conversation(c) => c.last_seq,
            other => bail!("get_conversation: unexpected {other:?}"),
        };
        let sent = link.acked();
        total_sent += sent;
        if last_seq != sent + 1 {
            eprintln!("group {g}: last_seq {last_seq}, but {sent} sends were made (+1 CREATED)");
            exact = false;
        }
    }
    for (i, (_, link)) in links.iter_mut().enumerate() {
        let head = inbox_head(&mut link.pipe).await?;
        let before = heads.get(i).copied().unwrap_or(0);
        if head - before != total_sent {
            eprintln!("member {i}: inbox grew by {}, expected {total_sent}", head - before);
            exact = false;
        }
    }
    Ok((outcome, reading, exact))
}
