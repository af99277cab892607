//! `admin export USER`: everything the server holds about one user, as
//! JSON lines (one record per line), written to the socket as the store
//! reads it from one snapshot: a history of any length goes through a
//! bounded queue, never whole into memory.
//!
//! The records, in order: `export` (what this is), `account`, each
//! `device`, each `blocked` user, then each `conversation` followed by its
//! `message`s, and last `end` with the counts (a file without it is not a
//! whole export). What the user could not see through the protocol is not
//! there (a group's members after they left it, its history after that),
//! nor any secret: no password hash, no token hash, no push keys or
//! webhook secret, and of a push endpoint only its origin (the whole URL is
//! a capability to notify the device).

use confab_protocol::{Now, pb};
use serde_json::{Value, json};
use tokio::io::AsyncWrite;

use super::{Ctx, failure, send, single_node};
use crate::store::{ExportItem, ExportedConversation, PushEndpoint, PushTarget};

/// The version of the record layout.
pub const FORMAT: u32 = 1;

/// Streams the export of the user the request names.
pub(super) async fn stream(ctx: &Ctx, request: &Value, out: &mut (impl AsyncWrite + Unpin)) {
    let core = &ctx.core;
    let store = match single_node(core, "export") {
        Ok(s) => s,
        Err(refused) => {
            send(out, &refused).await;
            return;
        }
    };
    let Some(username) = request.get("username").and_then(Value::as_str) else {
        send(out, &failure("the request names no username".into())).await;
        return;
    };
    let user = match core.store.user_by_name(username.to_string()).await {
        Ok(Some(u)) => u,
        Ok(None) => {
            send(out, &failure(format!("no such user: {username}"))).await;
            return;
        }
        Err(e) => {
            send(out, &failure(format!("the store: {e}"))).await;
            return;
        }
    };
    let header = json!({
        "type": "export",
        "format": FORMAT,
        "server": concat!("confabd/", env!("CARGO_PKG_VERSION")),
        "exported_at_ms": Now::system().unix_ms,
        "user_id": user.user_id,
        "username": user.username,
    });
    if !send(out, &json!({"ok": true})).await || !send(out, &header).await {
        return;
    }
    tracing::info!(user = user.user_id, "export by the operator");
    let mut items = store.export(user.user_id);
    let mut counts = Counts::default();
    loop {
        let next = tokio::select! {
            () = ctx.stop.cancelled() => {
                send(out, &json!({"type": "error", "error": "the server is shutting down"})).await;
                return;
            }
            next = items.recv() => next,
        };
        let record = match next {
            Some(Ok(item)) => counts.record(item),
            Some(Err(e)) => {
                tracing::warn!(user = user.user_id, error = %e, "export failed");
                send(out, &json!({"type": "error", "error": format!("the store: {e}")})).await;
                return;
            }
            None => break,
        };
        // A reader gone: dropping `items` stops the store's read.
        if !send(out, &record).await {
            return;
        }
    }
    if counts.accounts == 0 {
        send(out, &json!({"type": "error", "error": format!("no such user: {username}")})).await;
        return;
    }
    send(
        out,
        &json!({
            "type": "end",
            "devices": counts.devices,
            "blocked": counts.blocked,
            "conversations": counts.conversations,
            "messages": counts.messages,
        }),
    )
    .await;
}

/// What went out so far.
#[derive(Debug, Default)]
struct Counts {
    accounts: u64,
    devices: u64,
    blocked: u64,
    conversations: u64,
    messages: u64,
}

impl Counts {
    /// The record of one item, counted.
    fn record(&mut self, item: ExportItem) -> Value {
        match item {
            ExportItem::Account { user, privacy } => {
                self.accounts += 1;
                json!({
                    "type": "account",
                    "user_id": user.user_id,
                    "username": user.username,
                    "created_at_ms": user.created_at_ms,
                    "last_seen_ms": user.last_seen_ms,
                    "disabled": user.disabled,
                    "disabled_at_ms": user.disabled_at_ms,
                    "privacy": {
                        "direct_messages": name(privacy.direct_messages().as_str_name(), "AUDIENCE_"),
                        "group_invites": name(privacy.group_invites().as_str_name(), "AUDIENCE_"),
                    },
                })
            }
            ExportItem::Device { device, push } => {
                self.devices += 1;
                json!({
                    "type": "device",
                    "device_id": device.device_id,
                    "name": device.name,
                    "created_at_ms": device.created_at_ms,
                    "last_seen_ms": device.last_seen_ms,
                    "inbox_cursor": device.cursor,
                    "push": push.as_ref().map(push_json),
                    "push_dropped": device.push_dropped.map(|d| json!({
                        "dropped_at_ms": d.dropped_at_ms,
                        "http_status": d.http_status,
                    })),
                })
            }
            ExportItem::Blocked(b) => {
                self.blocked += 1;
                json!({
                    "type": "blocked",
                    "user_id": b.user_id,
                    "username": b.username,
                    "blocked_at_ms": b.blocked_at_ms,
                })
            }
            ExportItem::Conversation(c) => {
                self.conversations += 1;
                conversation_json(c)
            }
            ExportItem::Message(m) => {
                self.messages += 1;
                message_json(m)
            }
        }
    }
}

/// A protobuf enum value's name without its prefix, lowercased
/// (`MEMBER_ROLE_OWNER` → `owner`).
fn name(full: &str, prefix: &str) -> String {
    full.strip_prefix(prefix).unwrap_or(full).to_ascii_lowercase()
}

fn role(raw: i32) -> String {
    name(pb::MemberRole::try_from(raw).unwrap_or(pb::MemberRole::Unspecified).as_str_name(), "MEMBER_ROLE_")
}

/// A push registration: its kind, the origin it goes to, when.
fn push_json(target: &PushTarget) -> Value {
    let (kind, url) = match &target.target {
        Some(PushEndpoint::WebPush(w)) => ("web_push", w.endpoint.as_str()),
        Some(PushEndpoint::Webhook(w)) => ("webhook", w.url.as_str()),
        None => ("none", ""),
    };
    json!({"kind": kind, "origin": origin(url), "registered_at_ms": target.registered_at_ms})
}

/// `scheme://host[:port]` of a URL: no user info, path or query (where
/// push services and webhook receivers put their capabilities).
fn origin(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return String::new() };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    format!("{scheme}://{host}")
}

fn conversation_json(c: ExportedConversation) -> Value {
    let mut v = json!({
        "type": "conversation",
        "conversation_id": c.conversation_id,
        "kind": name(c.kind.as_str_name(), "CONVERSATION_KIND_"),
        "title": c.title,
        "created_at_ms": c.created_at_ms,
        "member": c.member,
        "joined_seq": c.joined_seq,
        "left_seq": c.left_seq,
        "read_seq": c.read_seq,
        "last_seq": c.last_seq,
    });
    if let Some(members) = c.members {
        let members: Vec<Value> = members
            .into_iter()
            .map(|m| {
                json!({
                    "user_id": m.user_id,
                    "username": m.username,
                    "role": role(m.role),
                    "joined_at_ms": m.joined_at_ms,
                })
            })
            .collect();
        v["members"] = Value::Array(members);
    }
    v
}

fn message_json(m: pb::Message) -> Value {
    let mut v = json!({
        "type": "message",
        "conversation_id": m.conversation_id,
        "seq": m.seq,
        "sender_id": m.sender_id,
        "sender_username": m.sender_username,
        "sent_at_ms": m.sent_at_ms,
    });
    match m.content {
        Some(pb::message::Content::Text(text)) => v["text"] = Value::String(text),
        Some(pb::message::Content::Membership(change)) => {
            let users: Vec<Value> =
                change.users.iter().map(|u| json!({"user_id": u.user_id, "username": u.username})).collect();
            let action = pb::MembershipAction::try_from(change.action).unwrap_or(pb::MembershipAction::Unspecified);
            let mut e = json!({"action": name(action.as_str_name(), "MEMBERSHIP_ACTION_"), "users": users});
            if !change.title.is_empty() {
                e["title"] = Value::String(change.title);
            }
            if change.role != 0 {
                e["role"] = Value::String(role(change.role));
            }
            v["membership"] = e;
        }
        None => {}
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_origin_keeps_no_capability() {
        assert_eq!(origin("https://fcm.googleapis.com/fcm/send/abc?x=1"), "https://fcm.googleapis.com");
        assert_eq!(origin("https://user:secret@hooks.example:8443/t/xyz"), "https://hooks.example:8443");
        assert_eq!(origin("http://10.0.0.1#frag"), "http://10.0.0.1");
        assert_eq!(origin("not a url"), "");
    }

    #[test]
    fn enum_names_lose_their_prefix() {
        assert_eq!(role(pb::MemberRole::Owner as i32), "owner");
        assert_eq!(role(99), "unspecified");
        assert_eq!(name(pb::ConversationKind::Direct.as_str_name(), "CONVERSATION_KIND_"), "direct");
    }
}
