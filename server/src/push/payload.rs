//! The notification payload (PROTOCOL.md §10.3): a small JSON object, the
//! same for Web Push (encrypted) and webhooks (signed). 64-bit numbers are
//! decimal strings, as in the proto3 JSON mapping, so JavaScript receivers
//! lose no precision.

use serde::Serialize;

use crate::store::PushNotice;

/// The payload format version.
pub const VERSION: u32 = 1;

#[derive(Serialize)]
struct Payload<'a> {
    v: u32,
    #[serde(rename = "type")]
    kind: &'static str,
    id: String,
    user_id: String,
    device_id: String,
    conversation_id: String,
    seq: String,
    sender_id: String,
    sender_username: &'a str,
    sent_at_ms: String,
    unread_count: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    preview: Option<String>,
}

/// The notification's id: the same for every retry of one notification,
/// different for the next one, so receivers can drop duplicates.
pub fn notification_id(n: &PushNotice) -> String {
    format!("{}-{}-{}", n.device_id, n.conversation_id, n.seq)
}

/// The JSON body for `n`. `preview_chars` is `Some` only when the operator
/// enabled previews; the text is cut to that many characters (an ellipsis
/// marks a cut).
pub fn encode(n: &PushNotice, preview_chars: Option<usize>) -> Vec<u8> {
    let preview = match (preview_chars, &n.text) {
        (Some(max), Some(text)) => Some(cut(text, max)),
        _ => None,
    };
    let payload = Payload {
        v: VERSION,
        kind: "message",
        id: notification_id(n),
        user_id: n.user_id.to_string(),
        device_id: n.device_id.to_string(),
        conversation_id: n.conversation_id.to_string(),
        seq: n.seq.to_string(),
        sender_id: n.sender_id.to_string(),
        sender_username: &n.sender_username,
        sent_at_ms: n.sent_at_ms.to_string(),
        unread_count: n.unread_count.to_string(),
        preview,
    };
    // Serializing plain strings and integers cannot fail.
    serde_json::to_vec(&payload).unwrap_or_default()
}

fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::PushTarget as PushTargetRecord;

    fn notice(text: Option<&str>) -> PushNotice {
        PushNotice {
            user_id: 18,
            device_id: 43,
            conversation_id: 9,
            seq: 12,
            sender_id: 17,
            sender_username: "alice".into(),
            sent_at_ms: 1_767_225_604_210,
            unread_count: 3,
            text: text.map(str::to_string),
            target: PushTargetRecord::default(),
            attempts: 0,
            first_at_ms: 0,
            last_inbox_seq: 0,
        }
    }

    #[test]
    fn carries_no_text_unless_previews_are_on() {
        let body = encode(&notice(Some("secret plans")), None);
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            r#"{"v":1,"type":"message","id":"43-9-12","user_id":"18","device_id":"43","conversation_id":"9","seq":"12","sender_id":"17","sender_username":"alice","sent_at_ms":"1767225604210","unread_count":"3"}"#
        );
        let body: serde_json::Value = serde_json::from_slice(&encode(&notice(Some("héllo wörld")), Some(5))).unwrap();
        assert_eq!(body["preview"], "héllo…");
        let body: serde_json::Value = serde_json::from_slice(&encode(&notice(Some("hi")), Some(5))).unwrap();
        assert_eq!(body["preview"], "hi");
    }
}
