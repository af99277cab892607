//! Push notifications for devices that are away (PROTOCOL.md §10).
//!
//! A device registers one target: a browser's Web Push subscription
//! (RFC 8030 delivery, RFC 8291 encryption, RFC 8292 VAPID) or a webhook
//! URL that gets a signed JSON POST (operators bridge it to FCM/APNs;
//! UnifiedPush distributors take it as is).
//!
//! How a message becomes a notification:
//! 1. `send` queues a job per (device with a target, conversation) of every
//!    recipient but the sender, in the message's own store batch
//!    (`store::push`): durable exactly when the message is, nothing else on
//!    the message path. A second message extends the pending job instead of
//!    adding one: that is the coalescing.
//! 2. The [`worker`] looks at each job when it is due (the configured delay
//!    after the first message) and decides from committed data: the device
//!    acked the messages in time (it is here) → nothing; the user read the
//!    conversation elsewhere → nothing; otherwise it sends one notification
//!    with the latest seq and unread count, and the next one for that
//!    device and conversation waits for the coalescing window.
//! 3. Delivery runs in its own tasks with a deadline, retries with
//!    exponential backoff and jitter (honouring `Retry-After`), and drops a
//!    target the push service says is gone (404/410); the device learns it
//!    from `AuthOk.push_dropped`. Nothing here ever waits on the message
//!    path: a hanging receiver costs one task and one permit.
//!
//! ## Layout
//! - [`payload`]: the JSON payload (no message text unless the operator
//!   enables previews).
//! - [`webpush`]: aes128gcm encryption and VAPID, with ring.
//! - [`webhook`]: the HMAC signature header.
//! - [`http`]: the HTTP client (pooled HTTP/1.1, rustls, address policy).
//! - [`worker`]: the outbox worker.

pub mod http;
pub mod payload;
pub mod webhook;
pub mod webpush;
pub mod worker;

use std::path::Path;

use confab_protocol::pb;
use ring::rand::{SecureRandom, SystemRandom};
use tokio::sync::Notify;

use crate::config::PushConfig;
use crate::store::{PushEndpoint, PushTarget, PushTiming, WebhookEndpoint};

/// Why a RegisterPush was refused (mapped to wire codes in `api`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushRefusal {
    /// The server does not offer this kind of target (or push at all).
    #[error("{0}")]
    Unavailable(&'static str),
    /// The target is malformed or not allowed here.
    #[error("{0}")]
    Invalid(&'static str),
}

/// The push service: settings, keys, the HTTP client, and the worker's
/// wake-up.
pub struct Push {
    config: PushConfig,
    vapid: Option<webpush::Vapid>,
    http: http::PushHttp,
    rng: SystemRandom,
    /// Poked when the message path queued a job.
    pub(crate) wake: Notify,
    /// Poked when jobs may be due at once (a partition taken over).
    pub(crate) rescan: Notify,
}

impl std::fmt::Debug for Push {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Push").field("vapid", &self.vapid).finish_non_exhaustive()
    }
}

/// Where the VAPID key pair lives when `--vapid-key` does not say.
pub fn default_vapid_path(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("push").join("vapid.pem")
}

impl Push {
    /// Sets up push from the settings (loading or generating the VAPID key
    /// in `data_dir`), or `None` when push is disabled.
    pub fn new(config: &PushConfig, data_dir: &Path) -> Result<Option<Push>, crate::setup::SetupError> {
        if !config.enabled || !(config.web_push || config.webhook) {
            return Ok(None);
        }
        let rng = SystemRandom::new();
        let vapid = if config.web_push {
            let path = config.vapid_key.clone().unwrap_or_else(|| default_vapid_path(data_dir));
            Some(webpush::Vapid::load_or_generate(&path, &config.vapid_subject, &rng)?)
        } else {
            None
        };
        if vapid.is_some() && config.vapid_subject.is_empty() {
            tracing::info!("push.vapid_subject is not set; some push services (Apple's) require a contact");
        }
        let http = http::PushHttp::new(config)?;
        Ok(Some(Push { config: config.clone(), vapid, http, rng, wake: Notify::new(), rescan: Notify::new() }))
    }

    /// The settings in force.
    pub fn config(&self) -> &PushConfig {
        &self.config
    }

    /// How the message path schedules jobs.
    pub fn timing(&self) -> PushTiming {
        PushTiming { delay_ms: self.config.delay_ms as i64, coalesce_ms: self.config.coalesce_ms as i64 }
    }

    /// `Welcome.vapid_public_key`: empty when Web Push is off.
    pub fn vapid_public_key(&self) -> String {
        self.vapid.as_ref().map(|v| v.public_key().to_string()).unwrap_or_default()
    }

    /// Checks a RegisterPush target against what this server offers and
    /// builds its record (a webhook gets a new secret).
    pub fn target(&self, request: pb::RegisterPushRequest, now_ms: i64) -> Result<PushTarget, PushRefusal> {
        use pb::register_push_request::Target;
        let target = match request.target {
            Some(Target::WebPush(w)) => {
                if self.vapid.is_none() {
                    return Err(PushRefusal::Unavailable("this server does not offer Web Push"));
                }
                let uri: hyper::Uri =
                    w.endpoint.parse().map_err(|_| PushRefusal::Invalid("endpoint is not a valid URL"))?;
                if uri.scheme_str() != Some("https") || uri.host().is_none() {
                    return Err(PushRefusal::Invalid("endpoint must be an https URL"));
                }
                if w.auth.len() != 16 {
                    return Err(PushRefusal::Invalid("auth must be 16 bytes"));
                }
                webpush::check_subscription_key(&w.p256dh, &self.rng)
                    .map_err(|_| PushRefusal::Invalid("p256dh is not a P-256 public key"))?;
                PushEndpoint::WebPush(w)
            }
            Some(Target::Webhook(h)) => {
                if !self.config.webhook {
                    return Err(PushRefusal::Unavailable("this server does not offer webhook push"));
                }
                let uri: hyper::Uri = h.url.parse().map_err(|_| PushRefusal::Invalid("url is not a valid URL"))?;
                match uri.scheme_str() {
                    Some("https") => {}
                    Some("http") if self.config.allow_http => {}
                    Some("http") => {
                        return Err(PushRefusal::Invalid("this server accepts only https webhook URLs"));
                    }
                    _ => return Err(PushRefusal::Invalid("url must be an https URL")),
                }
                if uri.host().is_none() {
                    return Err(PushRefusal::Invalid("url has no host"));
                }
                let mut secret = [0u8; 32];
                self.rng.fill(&mut secret).map_err(|_| PushRefusal::Unavailable("no randomness for a secret"))?;
                PushEndpoint::Webhook(WebhookEndpoint { url: h.url, secret: secret.to_vec().into() })
            }
            None => return Err(PushRefusal::Invalid("target must be set")),
        };
        Ok(PushTarget { target: Some(target), registered_at_ms: now_ms })
    }
}
