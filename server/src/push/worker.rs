//! The outbox worker: one task that wakes when the earliest job is due,
//! hands due jobs to delivery tasks (at most `push.concurrency` at once),
//! and records each outcome through the store writer.
//!
//! The worker never touches the message path: it reads committed data and
//! writes small settle commands. Jobs being delivered are kept in memory
//! (`busy`) so a scan does not start them twice; if the server stops
//! mid-delivery, the job is still due in the store and is delivered after
//! the restart (at least once: receivers dedupe by the payload's `id`).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hyper::Uri;
use hyper::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, USER_AGENT};
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Push, http, payload, webhook, webpush};
use crate::metrics::Metrics;
use crate::store::{
    CommandError, DueJob, PushEndpoint as Target, PushNotice, PushOutbox, PushPlan, PushSettle, SkipReason, StoreError,
};

/// Most due jobs taken per scan.
const SCAN_BATCH: usize = 256;
/// Longest sleep with nothing due (a safety net; wake-ups are explicit).
const IDLE: Duration = Duration::from_secs(30);
/// Longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

fn unix_ms() -> i64 {
    confab_protocol::Now::system().unix_ms
}

/// What the worker works with.
#[derive(Clone)]
pub struct Handles {
    /// The durable outbox.
    pub outbox: Arc<dyn PushOutbox>,
    /// Counters for /metrics.
    pub metrics: Arc<Metrics>,
    /// Where delivery tasks are tracked (shutdown waits for them).
    pub tracker: TaskTracker,
}

/// Runs the worker until `stop` is cancelled.
pub async fn run(sh: Handles, push: Arc<Push>, stop: CancellationToken) {
    let busy: Arc<Mutex<HashSet<(u64, u64)>>> = Arc::default();
    let permits = Arc::new(Semaphore::new(push.config.concurrency));
    let finished = Arc::new(Notify::new());
    let delay = Duration::from_millis(push.config.delay_ms);
    match sh.outbox.push_target_count().await {
        Ok(n) => tracing::info!(targets = n, "push worker started"),
        Err(e) => tracing::warn!(error = %e, "push worker started; cannot count targets"),
    }
    loop {
        let now = unix_ms();
        let snapshot = lock(&busy).clone();
        let (due, next) = match sh.outbox.push_due(now, SCAN_BATCH, snapshot).await {
            Ok(scan) => scan,
            Err(e) => {
                tracing::warn!(error = %e, "push outbox scan failed");
                (Vec::new(), Some(now + 1000))
            }
        };
        for job in due {
            let permit = tokio::select! {
                p = Arc::clone(&permits).acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return,
                },
                _ = stop.cancelled() => return,
            };
            lock(&busy).insert((job.device, job.conversation));
            let (sh, push, busy, finished, stop) =
                (sh.clone(), Arc::clone(&push), Arc::clone(&busy), Arc::clone(&finished), stop.clone());
            let tracker = sh.tracker.clone();
            tracker.spawn(async move {
                attempt(&sh, &push, job, &stop).await;
                lock(&busy).remove(&(job.device, job.conversation));
                drop(permit);
                finished.notify_one();
            });
        }
        let mut deadline = match next {
            Some(at) => Instant::now() + Duration::from_millis(at.saturating_sub(unix_ms()).max(0) as u64),
            None => Instant::now() + IDLE,
        };
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep_until(deadline) => break,
                // A new job is due no earlier than `delay` from now: no need
                // to read the store to know when to look.
                _ = push.wake.notified() => deadline = deadline.min(Instant::now() + delay),
                // An attempt's outcome may have made something due.
                _ = finished.notified() => break,
                // Jobs appeared that may be due now (a partition taken over).
                _ = push.rescan.notified() => break,
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Each critical section is a single insert, remove or clone.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Looks at one due job, delivers it if it should go out, records the
/// outcome.
async fn attempt(sh: &Handles, push: &Push, job: DueJob, stop: &CancellationToken) {
    let cfg = &push.config;
    let now = unix_ms();
    let (delay_ms, with_text) = (cfg.delay_ms as i64, cfg.preview);
    let plan = sh.outbox.push_plan(job, now, delay_ms, with_text).await;
    let (settle, attempted) = match plan {
        Err(e) => {
            tracing::warn!(error = %e, device = job.device, "reading a push job failed");
            (PushSettle::Later { due_ms: now + 1000 }, 0)
        }
        Ok(PushPlan::Stale) => (PushSettle::Stale, 0),
        Ok(PushPlan::CooledDown) => (PushSettle::CooledDown, 0),
        Ok(PushPlan::Discard(why)) => {
            tracing::debug!(device = job.device, conversation = job.conversation, why, "push job discarded");
            (PushSettle::Discard, 0)
        }
        Ok(PushPlan::Skip { reason, last_inbox_seq }) => {
            sh.metrics.push.skipped(reason == SkipReason::Read);
            (PushSettle::Skipped { delay_ms }, last_inbox_seq)
        }
        Ok(PushPlan::Later(due_ms)) => (PushSettle::Later { due_ms }, 0),
        Ok(PushPlan::Send(notice)) => {
            let settle = tokio::select! {
                s = deliver(sh, push, &notice) => s,
                // Shutting down: leave the job due; it goes out after the
                // restart.
                _ = stop.cancelled() => return,
            };
            (settle, notice.last_inbox_seq)
        }
    };
    settle_with_retries(sh, job, attempted, settle).await;
}

/// Records an outcome; a full writer queue is retried briefly (the job
/// would otherwise be looked at again, and maybe sent twice).
async fn settle_with_retries(sh: &Handles, job: DueJob, attempted: u64, settle: PushSettle) {
    let mut wait = Duration::from_millis(20);
    for _ in 0..8 {
        let now = unix_ms();
        match sh.outbox.settle_push(job, attempted, settle, now).await {
            Ok(()) => return,
            Err(CommandError::Busy) => {
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            Err(CommandError::Store(StoreError::Closed)) => return,
            Err(e) => {
                tracing::warn!(error = %e, device = job.device, "recording a push outcome failed");
                return;
            }
        }
    }
    tracing::warn!(device = job.device, "recording a push outcome failed: the store stayed busy");
}

/// A request ready to go.
struct Outgoing {
    kind: Kind,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
}

/// Target kinds, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Web Push.
    WebPush,
    /// Webhook.
    Webhook,
}

fn header(value: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(value).ok()
}

/// Builds the request for `n`: payload, encryption or signature, headers.
fn build(push: &Push, n: &PushNotice) -> Result<Outgoing, &'static str> {
    let cfg = &push.config;
    let json = payload::encode(n, cfg.preview.then_some(cfg.preview_chars));
    let mut headers = HeaderMap::new();
    let agent = concat!("confabd/", env!("CARGO_PKG_VERSION"));
    headers.insert(USER_AGENT, HeaderValue::from_static(agent));
    headers.insert(HeaderName::from_static("ttl"), HeaderValue::from(cfg.ttl_secs));
    // RFC 8030 §5.3: "high" is for incoming chat messages.
    headers.insert(HeaderName::from_static("urgency"), HeaderValue::from_static("high"));
    // RFC 8030 §5.4: a newer notification about the conversation replaces
    // an undelivered older one at the push service.
    headers.insert(HeaderName::from_static("topic"), header(&format!("c{:x}", n.conversation_id)).ok_or("topic")?);
    match &n.target.target {
        Some(Target::WebPush(w)) => {
            let vapid = push.vapid.as_ref().ok_or("Web Push is off")?;
            let uri: Uri = w.endpoint.parse().map_err(|_| "bad endpoint")?;
            let body = webpush::encrypt(&w.p256dh, &w.auth, &json, &push.rng).map_err(|_| "encryption failed")?;
            let now_secs = (unix_ms() / 1000).max(0) as u64;
            let auth = vapid.authorization(&origin(&uri).ok_or("bad endpoint")?, now_secs, &push.rng);
            let auth = auth.map_err(|_| "signing failed")?;
            headers.insert(hyper::header::AUTHORIZATION, header(&auth).ok_or("authorization")?);
            headers.insert(CONTENT_ENCODING, HeaderValue::from_static("aes128gcm"));
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
            Ok(Outgoing { kind: Kind::WebPush, uri, headers, body: body.into() })
        }
        Some(Target::Webhook(h)) => {
            let uri: Uri = h.url.parse().map_err(|_| "bad url")?;
            let t = (unix_ms() / 1000).max(0) as u64;
            let signature = webhook::signature(&h.secret, t, &json);
            headers.insert(HeaderName::from_static(webhook::SIGNATURE_HEADER), header(&signature).ok_or("sig")?);
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            Ok(Outgoing { kind: Kind::Webhook, uri, headers, body: json.into() })
        }
        None => Err("empty target"),
    }
}

/// The VAPID audience: the endpoint's origin, default port omitted.
fn origin(uri: &Uri) -> Option<String> {
    let scheme = uri.scheme_str()?;
    let host = uri.host()?;
    Some(match uri.port_u16() {
        Some(p) if !(scheme == "https" && p == 443 || scheme == "http" && p == 80) => format!("{scheme}://{host}:{p}"),
        _ => format!("{scheme}://{host}"),
    })
}

/// Only the host: push URLs carry capability tokens, so they are secrets.
fn host_of(uri: &Uri) -> &str {
    uri.host().unwrap_or("?")
}

async fn deliver(sh: &Handles, push: &Push, n: &PushNotice) -> PushSettle {
    let cfg = &push.config;
    let coalesce_ms = cfg.coalesce_ms as i64;
    let out = match build(push, n) {
        Ok(out) => out,
        Err(why) => {
            tracing::warn!(device = n.device_id, why, "cannot build a push notification; dropped");
            sh.metrics.push.failed("build");
            return PushSettle::Delivered { coalesce_ms };
        }
    };
    let (kind, host) = (out.kind, host_of(&out.uri).to_string());
    let result = push.http.post(out.uri, out.headers, out.body).await;
    let now = unix_ms();
    match result {
        Ok(a) if (200..300).contains(&a.status) => {
            sh.metrics.push.sent(kind == Kind::WebPush, (now - n.first_at_ms).max(0) as u64);
            tracing::debug!(device = n.device_id, conversation = n.conversation_id, seq = n.seq, %host, "push sent");
            PushSettle::Delivered { coalesce_ms }
        }
        Ok(a) if a.status == 404 || a.status == 410 => {
            sh.metrics.push.failed("gone");
            tracing::info!(device = n.device_id, status = a.status, %host, "push target gone; removing it");
            PushSettle::TargetGone {
                user_id: n.user_id,
                registered_at_ms: n.target.registered_at_ms,
                http_status: u32::from(a.status),
            }
        }
        Ok(a) if a.status == 429 || a.status == 408 || a.status >= 500 => {
            let reason = if a.status == 429 { "http_429" } else { "http_5xx" };
            retry(sh, push, n, now, reason, a.retry_after, &host)
        }
        Ok(a) => {
            // 400, 401, 403, 413 …: this notification will not be taken.
            sh.metrics.push.failed("rejected");
            tracing::warn!(device = n.device_id, status = a.status, %host, "push service rejected a notification");
            PushSettle::Delivered { coalesce_ms }
        }
        Err(http::SendError::Blocked(why)) => {
            // Retrying cannot help: the operator does not allow this
            // destination.
            sh.metrics.push.failed("blocked");
            tracing::warn!(device = n.device_id, why, %host, "push destination not allowed; notification dropped");
            PushSettle::Delivered { coalesce_ms }
        }
        Err(e) => retry(sh, push, n, now, e.reason(), None, &host),
    }
}

fn retry(
    sh: &Handles,
    push: &Push,
    n: &PushNotice,
    now: i64,
    reason: &'static str,
    retry_after: Option<Duration>,
    host: &str,
) -> PushSettle {
    let cfg = &push.config;
    sh.metrics.push.failed(reason);
    if n.attempts + 1 >= cfg.max_attempts {
        sh.metrics.push.gave_up.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(device = n.device_id, reason, %host, attempts = n.attempts + 1, "push notification given up");
        return PushSettle::Delivered { coalesce_ms: cfg.coalesce_ms as i64 };
    }
    let wait = backoff(cfg.retry_base_ms, cfg.retry_max_ms, n.attempts, &mut rand::thread_rng());
    let wait = wait.max(retry_after.unwrap_or_default().min(MAX_RETRY_AFTER));
    tracing::debug!(device = n.device_id, reason, %host, wait_ms = wait.as_millis() as u64, "push will be retried");
    PushSettle::Retry { at_ms: now + wait.as_millis() as i64 }
}

/// Exponential backoff with jitter: attempt `k` (0-based) waits between
/// half and all of `base · 2^k`, capped at `max`.
pub fn backoff(base_ms: u64, max_ms: u64, attempts: u32, rng: &mut impl rand::Rng) -> Duration {
    let full = base_ms.saturating_mul(1u64 << attempts.min(30)).min(max_ms);
    Duration::from_millis(full / 2 + rng.gen_range(0..=full / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let mut rng = rand::thread_rng();
        for k in 0..20 {
            let d = backoff(1000, 60_000, k, &mut rng).as_millis() as u64;
            let full = (1000u64 << k).min(60_000);
            assert!(d >= full / 2 && d <= full, "attempt {k}: {d} ms");
        }
    }

    #[test]
    fn origin_drops_default_ports_and_paths() {
        assert_eq!(
            origin(&"https://fcm.googleapis.com/fcm/send/x".parse().unwrap()).unwrap(),
            "https://fcm.googleapis.com"
        );
        assert_eq!(origin(&"https://h:443/p".parse().unwrap()).unwrap(), "https://h");
        assert_eq!(origin(&"https://127.0.0.1:8443/p".parse().unwrap()).unwrap(), "https://127.0.0.1:8443");
    }
}
