#![allow(clippy::unwrap_used)]
//! The store on its own, through its seam: commands and their refusals,
//! group commit, the push plan. A real fjall database in a temp dir; live
//! events go to a recording [`Delivery`].

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use confab_protocol::{ErrorCode, pb};

use super::*;
use crate::delivery::Delivery;

#[derive(Default)]
struct Recorded {
    frames: Mutex<Vec<(u64, Bytes)>>,
}

impl Delivery for Recorded {
    fn deliver(&self, frames: Vec<(u64, Bytes)>) {
        self.frames.lock().unwrap().extend(frames);
    }
    fn deliver_to_session(&self, _: u64, _: u64, _: Bytes) {}
    fn deliver_ephemeral(&self, _: &[u64], _: &Bytes, _: &Bytes) {}
    fn end_device_sessions(&self, _: u64, _: u64, _: ErrorCode, _: Option<u64>) {}
}

struct Fixture {
    store: LocalStore,
    delivered: Arc<Recorded>,
    commits: Arc<Mutex<Vec<CommitStats>>>,
    _dir: tempfile::TempDir,
}

fn open(push: Option<PushTiming>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Db::open(&dir.path().join("db"), Durability::Buffered).unwrap());
    let delivered = Arc::new(Recorded::default());
    let commits: Arc<Mutex<Vec<CommitStats>>> = Arc::default();
    let seen = Arc::clone(&commits);
    let hook: CommitHook = Arc::new(move |c| seen.lock().unwrap().push(*c));
    let settings = StoreSettings {
        writer_queue: 4096,
        max_group_members: 3,
        max_devices: 3,
        max_blocked: 3,
        max_reply_bytes: 1 << 20,
        push,
    };
    let store = LocalStore::start(db, delivered.clone(), hook, settings).unwrap();
    Fixture { store, delivered, commits, _dir: dir }
}

async fn signup(store: &LocalStore, name: &str) -> Created {
    let account = NewAccount {
        username: name.into(),
        password_hash: "$argon2id$not-checked-here".into(),
        device_name: "phone".into(),
        now_ms: 1000,
    };
    store.create_user(account).await.unwrap()
}

async fn user(store: &LocalStore, name: &str) -> (UserRef, Device) {
    let c = signup(store, name).await;
    (UserRef { user_id: c.user.user_id, username: c.user.username }, c.device)
}

fn refused<T: std::fmt::Debug>(r: Result<T, CommandError>) -> Refusal {
    match r {
        Err(CommandError::Refused(why)) => why,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn accounts_are_unique_and_tokens_resume() {
    let f = open(None);
    let alice = signup(&f.store, "alice").await;
    let again = f.store.create_user(NewAccount {
        username: "alice".into(),
        password_hash: String::new(),
        device_name: "x".into(),
        now_ms: 2,
    });
    assert_eq!(refused(again.await), Refusal::UsernameTaken);
    let resumed = f.store.resume(alice.token.clone()).await.unwrap().unwrap();
    assert_eq!((resumed.user.user_id, resumed.device.device_id), (alice.user.user_id, alice.device.device_id));
    f.store.revoke_device(alice.user.user_id, alice.device.device_id).await.unwrap();
    assert!(f.store.resume(alice.token).await.unwrap().is_none(), "a revoked token resumes nothing");
    assert_eq!(
        refused(f.store.users_by_name(vec!["alice".into(), "nobody".into()]).await),
        Refusal::UserNotFound("nobody".into())
    );
}

#[tokio::test]
async fn sends_are_sequenced_deduplicated_and_only_for_members() {
    let f = open(None);
    let (alice, _) = user(&f.store, "alice").await;
    let (bob, _) = user(&f.store, "bob").await;
    let (carol, _) = user(&f.store, "carol").await;
    let dm = f.store.open_direct(alice.clone(), "bob".into(), 1).await.unwrap().conversation_id;
    let again = f.store.open_direct(bob.clone(), "alice".into(), 2).await.unwrap().conversation_id;
    assert_eq!(dm, again, "one direct conversation per pair");
    let mut seqs = Vec::new();
    for i in 0..3 {
        let o = f.store.send(alice.clone(), dm, format!("m{i}"), format!("text {i}"), 10).await.unwrap();
        assert!(!o.duplicate);
        seqs.push(o.message.seq);
    }
    assert_eq!(seqs, [1, 2, 3]);
    let dup = f.store.send(alice.clone(), dm, "m1".into(), "different text".into(), 11).await.unwrap();
    assert!(dup.duplicate);
    assert_eq!(dup.message.seq, 2, "the original message");
    let outsider = f.store.send(carol.clone(), dm, "c1".into(), "hi".into(), 12);
    assert_eq!(refused(outsider.await), Refusal::ConversationNotFound);
    // Both members' inboxes hold every message once; history is in order.
    let bob_inbox = f.store.sync(bob.user_id, 0, 100).await.unwrap();
    let messages = bob_inbox.events.iter().filter(|e| matches!(e.event, Some(pb::inbox_event::Event::Message(_))));
    assert_eq!(messages.count(), 3);
    let range = HistoryRange { before_seq: 0, after_seq: 0, oldest_first: true, limit: 10 };
    let page = f.store.history(alice.user_id, dm, range).await.unwrap();
    assert_eq!(page.messages.iter().map(|m| m.seq).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(refused(f.store.history(carol.user_id, dm, range).await), Refusal::ConversationNotFound);
    // A read marker never passes the last message.
    let state = f.store.mark_read(bob.clone(), dm, 99).await.unwrap();
    assert_eq!((state.read_seq, state.unread_count), (3, 0));
}

#[tokio::test]
async fn groups_keep_their_limit_and_former_members_see_history_up_to_leaving() {
    let f = open(None);
    let (alice, _) = user(&f.store, "alice").await;
    let (bob, _) = user(&f.store, "bob").await;
    user(&f.store, "carol").await;
    user(&f.store, "dave").await;
    let group = f.store.create_group(alice.clone(), "g".into(), vec!["bob".into()], 1).await.unwrap().conversation_id;
    f.store.send(alice.clone(), group, "a1".into(), "before".into(), 2).await.unwrap();
    let full = f.store.add_members(alice.clone(), group, vec!["carol".into(), "dave".into()], 3);
    assert!(matches!(refused(full.await), Refusal::GroupFull { would_have: 4, max: 3 }));
    let denied = f.store.add_members(bob.clone(), group, vec!["carol".into()], 3);
    assert!(matches!(refused(denied.await), Refusal::PermissionDenied(_)));
    f.store.leave_group(bob.clone(), group, 4).await.unwrap();
    f.store.send(alice.clone(), group, "a2".into(), "after".into(), 5).await.unwrap();
    let range = HistoryRange { before_seq: 0, after_seq: 0, oldest_first: true, limit: 10 };
    let seen = f.store.history(bob.user_id, group, range).await.unwrap();
    assert!(seen.messages.iter().all(|m| m.seq < 4), "nothing after leaving: {:?}", seen.messages);
    assert_eq!(refused(f.store.members(bob.user_id, group).await), Refusal::ConversationNotFound);
    assert!(f.store.typing_audience(bob.user_id, group).await.unwrap().is_empty());
    assert_eq!(f.store.typing_audience(alice.user_id, group).await.unwrap(), Vec::<u64>::new());
}

#[tokio::test]
async fn writes_queued_together_share_a_commit_and_keep_their_order() {
    let f = open(None);
    let (alice, _) = user(&f.store, "alice").await;
    user(&f.store, "bob").await;
    let dm = f.store.open_direct(alice.clone(), "bob".into(), 1).await.unwrap().conversation_id;
    let before = f.commits.lock().unwrap().len();
    // Queued one after another without waiting: arrival order is store order.
    let sends: Vec<_> =
        (0..200).map(|i| f.store.send(alice.clone(), dm, format!("m{i}"), format!("{i}"), 10)).collect();
    let mut seqs = Vec::new();
    for s in sends {
        seqs.push(s.await.unwrap().message.seq);
    }
    assert_eq!(seqs, (1..=200).collect::<Vec<u64>>());
    let commits = f.commits.lock().unwrap()[before..].to_vec();
    assert_eq!(commits.iter().map(|c| c.messages).sum::<u64>(), 200);
    assert!(commits.len() < 200, "200 sends in {} commits: no group commit", commits.len());
    // Every message went live to both members, after its commit.
    let delivered = f.delivered.frames.lock().unwrap().len();
    assert!(delivered >= 400, "{delivered} frames delivered");
}

/// `writer_queue` bounds the commands waiting for the writer: one more is
/// refused at once with `Busy` (SERVER_BUSY on the wire), nothing of it
/// stored, and the queued ones still commit.
#[tokio::test]
async fn a_full_writer_queue_is_refused_at_once_with_busy() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Db::open(&dir.path().join("db"), Durability::Buffered).unwrap());
    // The commit hook runs on the writer thread: holding it there keeps the
    // queue from draining.
    let (entered_tx, entered) = std::sync::mpsc::channel::<()>();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let armed = Arc::new(AtomicBool::new(false));
    let gate = Mutex::new((entered_tx, released));
    let arm = Arc::clone(&armed);
    let hook: CommitHook = Arc::new(move |_| {
        if arm.swap(false, Ordering::SeqCst) {
            let gate = gate.lock().unwrap();
            gate.0.send(()).unwrap();
            let _ = gate.1.recv();
        }
    });
    let settings = StoreSettings {
        writer_queue: 2,
        max_group_members: 3,
        max_devices: 3,
        max_blocked: 3,
        max_reply_bytes: 1 << 20,
        push: None,
    };
    let store = LocalStore::start(db, Arc::new(Recorded::default()), hook, settings).unwrap();
    let (alice, _) = user(&store, "alice").await;
    user(&store, "bob").await;
    let dm = store.open_direct(alice.clone(), "bob".into(), 1).await.unwrap().conversation_id;
    armed.store(true, Ordering::SeqCst);
    let held = store.send(alice.clone(), dm, "m0".into(), "0".into(), 10);
    entered.recv_timeout(std::time::Duration::from_secs(10)).expect("the writer never committed the first send");
    let queued: Vec<_> = (1..=2).map(|i| store.send(alice.clone(), dm, format!("m{i}"), format!("{i}"), 10)).collect();
    let shed = store.send(alice.clone(), dm, "m3".into(), "3".into(), 10);
    release.send(()).unwrap();
    assert!(matches!(shed.await, Err(CommandError::Busy)), "a command past writer_queue was not shed");
    let mut seqs = vec![held.await.unwrap().message.seq];
    for q in queued {
        seqs.push(q.await.unwrap().message.seq);
    }
    assert_eq!(seqs, [1, 2, 3]);
    // The shed send stored nothing: sent again, it is new and comes next.
    let again = store.send(alice.clone(), dm, "m3".into(), "3".into(), 10).await.unwrap();
    assert_eq!(again.message.seq, 4);
}

#[tokio::test]
async fn the_push_plan_sends_after_the_delay_unless_the_device_acked() {
    let f = open(Some(PushTiming { delay_ms: 100, coalesce_ms: 1000 }));
    let (alice, _) = user(&f.store, "alice").await;
    let (bob, phone) = user(&f.store, "bob").await;
    let target = PushTarget {
        target: Some(PushEndpoint::Webhook(WebhookEndpoint {
            url: "https://push.example.net/x".into(),
            secret: vec![1; 32].into(),
        })),
        registered_at_ms: 5,
    };
    f.store.register_push(bob.user_id, phone.device_id, target).await.unwrap();
    let dm = f.store.open_direct(alice.clone(), "bob".into(), 1).await.unwrap().conversation_id;
    f.store.send(alice.clone(), dm, "p1".into(), "ping".into(), 1000).await.unwrap();
    assert_eq!(f.commits.lock().unwrap().last().unwrap().pushes_queued, 1, "the hook hears of the queued job");
    // Not due before the delay.
    let (due, next) = f.store.push_due(1050, 10, HashSet::new()).await.unwrap();
    assert!(due.is_empty());
    assert_eq!(next, Some(1100));
    let (due, _) = f.store.push_due(1100, 10, HashSet::new()).await.unwrap();
    assert_eq!(due.len(), 1);
    let job = due[0];
    match f.store.push_plan(job, 1100, 100, true).await.unwrap() {
        PushPlan::Send(n) => {
            assert_eq!(
                (n.user_id, n.device_id, n.seq, n.text.as_deref()),
                (bob.user_id, phone.device_id, 1, Some("ping"))
            );
        }
        other => panic!("expected a notification, got {other:?}"),
    }
    // Once the device has acked the message, nothing is sent.
    let head = f.store.sync(bob.user_id, 0, 100).await.unwrap().inbox_head;
    f.store.ack_cursor(bob.user_id, phone.device_id, head).await.unwrap();
    assert!(matches!(
        f.store.push_plan(job, 1100, 100, true).await.unwrap(),
        PushPlan::Skip { reason: SkipReason::Acked, .. }
    ));
    f.store.settle_push(job, head, PushSettle::Skipped { delay_ms: 100 }, 1101).await.unwrap();
    let (due, next) = f.store.push_due(10_000, 10, HashSet::new()).await.unwrap();
    assert!(due.is_empty() && next.is_none(), "the settled job is gone");
}

/// Past `UNFLUSHED_HARD_LIMIT` a writer's wait between groups lasts until
/// the flushes have caught up, or `FLUSH_WAIT_MAX` at a time, never less;
/// it seals the memtables itself, so the flushes it waits for do start and
/// the store gets back under the limit; with nothing behind it returns at
/// once. (Not covered: that it stops waiting as soon as the flushes have
/// caught up; on a slow machine a flush of 33 MiB can take the full
/// `FLUSH_WAIT_MAX`, so no tighter bound is asserted.)
#[test]
fn a_writer_waits_while_flushes_are_behind_until_they_catch_up() {
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join("db"), Durability::Buffered).unwrap();
    // One keyspace's active memtable filled past the hard limit, with
    // nothing sealing it on the way (writers call `bound_unflushed` after
    // each commit; this does not).
    let meta = db.ks(Ks::Meta).unwrap();
    let value = vec![7u8; 64 * 1024];
    let mut n = 0u32;
    while db.unflushed_bytes() < db::UNFLUSHED_HARD_LIMIT + (1 << 20) {
        meta.insert(format!("bulk-{n:08}").into_bytes(), value.clone()).unwrap();
        n += 1;
        assert!(n < 10_000, "the memtables never reached the hard limit: {} bytes", db.unflushed_bytes());
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let started = Instant::now();
        let waited = db.wait_for_flushes(0);
        let took = started.elapsed();
        assert!(waited <= took && waited >= took / 2, "it says it waited {waited:?} of {took:?}");
        let left = db.unflushed_bytes();
        if left < db::UNFLUSHED_HARD_LIMIT {
            break;
        }
        assert!(took >= db::FLUSH_WAIT_MAX, "it returned after {took:?} with {left} bytes still unflushed");
        assert!(Instant::now() < deadline, "the flushes never caught up: {left} bytes unflushed");
    }
    let started = Instant::now();
    assert_eq!(db.wait_for_flushes(0), Duration::ZERO, "nothing behind, no pause");
    assert!(started.elapsed() < db::FLUSH_WAIT_MAX / 2, "it waited with nothing behind: {:?}", started.elapsed());
    // What was written is all there.
    assert_eq!(meta.get(format!("bulk-{:08}", n - 1)).unwrap().as_deref(), Some(&value[..]));
}

/// fjall's workers (flushes, compactions) run below the writers' priority,
/// so that their bursts take the CPU the writers leave (`WORKER_NICE`).
#[cfg(target_os = "linux")]
#[test]
fn store_workers_run_at_a_lower_priority() {
    let dir = tempfile::tempdir().unwrap();
    let _db = Db::open(&dir.path().join("db"), Durability::Buffered).unwrap();
    // (comm, nice) of every thread of this process; the workers set theirs
    // as they start, so wait for them with a deadline.
    let threads = || -> Vec<(String, i64)> {
        let mut out = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
            let (Ok(comm), Ok(stat)) =
                (std::fs::read_to_string(task.path().join("comm")), std::fs::read_to_string(task.path().join("stat")))
            else {
                continue;
            };
            // Fields after the command name: nice is the 17th from the state.
            let nice = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(16)?.parse().ok());
            if let Some(nice) = nice {
                out.push((comm.trim().to_string(), nice));
            }
        }
        out
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let all = threads();
        let workers: Vec<i64> = all.iter().filter(|(c, _)| c == "fjall:worker").map(|(_, n)| *n).collect();
        if !workers.is_empty() && workers.iter().all(|n| *n == i64::from(db::WORKER_NICE)) {
            // This thread (a test's, like a writer's) keeps its own.
            let me = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
            let mine: i64 = me.rsplit_once(')').unwrap().1.split_whitespace().nth(16).unwrap().parse().unwrap();
            assert_eq!(mine, 0, "the caller's priority changed too: {all:?}");
            return;
        }
        assert!(std::time::Instant::now() < deadline, "fjall's workers never lowered their priority: {all:?}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
