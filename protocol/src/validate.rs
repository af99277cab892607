//! Validation of every field a peer controls, with typed errors mapped to
//! wire codes in one place ([`Violation::code`]).
//!
//! [`validate_request`] checks a whole request body against the limits in
//! force; the server calls it before doing any work for the request.

use crate::{ErrorCode, Limits, pb, pb::client_frame::Body};

/// Username length bounds, in bytes (usernames are ASCII).
pub const USERNAME_LEN: std::ops::RangeInclusive<usize> = 3..=32;
/// Search prefix length bounds, in bytes (PROTOCOL.md §6.9): at least two
/// characters, so one request cannot list a 36th of every account.
pub const SEARCH_PREFIX_LEN: std::ops::RangeInclusive<usize> = 2..=32;
/// Password length bounds, in bytes.
pub const PASSWORD_LEN: std::ops::RangeInclusive<usize> = 8..=1024;
/// Device name length bounds, in characters.
pub const DEVICE_NAME_CHARS: std::ops::RangeInclusive<usize> = 1..=64;
/// Group title length bounds, in characters.
pub const TITLE_CHARS: std::ops::RangeInclusive<usize> = 1..=128;
/// `client_msg_id` length bounds, in bytes.
pub const CLIENT_MSG_ID_LEN: std::ops::RangeInclusive<usize> = 1..=64;
/// Longest resume token accepted (tokens are 43 characters today).
pub const MAX_TOKEN_LEN: usize = 256;
/// Longest push endpoint / webhook URL.
pub const MAX_URL_LEN: usize = 2048;

/// A field that breaks the protocol's rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Violation {
    /// A field is outside its documented range or format.
    #[error("invalid {field}: {why}")]
    Invalid {
        /// The field's name in the schema.
        field: &'static str,
        /// What rule it broke.
        why: &'static str,
    },
    /// Message text longer than the limit.
    #[error("message has {chars} characters; the limit is {max}")]
    MessageTooLong {
        /// Characters in the text (counted up to just past the limit).
        chars: usize,
        /// The limit.
        max: u32,
    },
    /// Message text is empty.
    #[error("message text is empty")]
    EmptyMessage,
    /// A resume token that cannot be valid (empty or too long).
    #[error("unknown or malformed token")]
    BadToken,
    /// A list field has too many entries.
    #[error("{field} has {len} entries; the limit is {max}")]
    TooManyItems {
        /// The field's name in the schema.
        field: &'static str,
        /// Entries sent.
        len: usize,
        /// The limit.
        max: u32,
    },
}

impl Violation {
    /// The wire code for this violation: the one place the mapping lives.
    pub fn code(&self) -> ErrorCode {
        match self {
            Violation::Invalid { .. } => ErrorCode::INVALID_ARGUMENT,
            Violation::MessageTooLong { .. } => ErrorCode::MESSAGE_TOO_LONG,
            Violation::EmptyMessage => ErrorCode::EMPTY_MESSAGE,
            Violation::TooManyItems { .. } => ErrorCode::TOO_MANY_ITEMS,
            Violation::BadToken => ErrorCode::INVALID_TOKEN,
        }
    }
}

fn invalid(field: &'static str, why: &'static str) -> Violation {
    Violation::Invalid { field, why }
}

/// Usernames: 3 to 32 of `[a-z0-9_.-]`, first a letter or digit.
pub fn username(name: &str) -> Result<(), Violation> {
    username_shaped("username", name, USERNAME_LEN, "must be 3 to 32 characters")
}

/// Search prefixes: 2 to 32 of `[a-z0-9_.-]`, first a letter or digit
/// (the username rules, shorter).
pub fn search_prefix(prefix: &str) -> Result<(), Violation> {
    username_shaped("prefix", prefix, SEARCH_PREFIX_LEN, "must be 2 to 32 characters")
}

/// `value` (field `field`) is `len` bytes of `[a-z0-9_.-]`, the first a
/// letter or digit; `too_long_or_short` says the length rule.
fn username_shaped(
    field: &'static str,
    value: &str,
    len: std::ops::RangeInclusive<usize>,
    too_long_or_short: &'static str,
) -> Result<(), Violation> {
    if !len.contains(&value.len()) {
        return Err(invalid(field, too_long_or_short));
    }
    if !value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')) {
        return Err(invalid(field, "may only contain a-z, 0-9, '_', '.' and '-'"));
    }
    if !value.as_bytes()[0].is_ascii_alphanumeric() {
        return Err(invalid(field, "must start with a letter or digit"));
    }
    Ok(())
}

/// Passwords: 8 to 1024 bytes.
pub fn password(pw: &str) -> Result<(), Violation> {
    if !PASSWORD_LEN.contains(&pw.len()) {
        return Err(invalid("password", "must be 8 to 1024 bytes"));
    }
    Ok(())
}

/// Passwords of 8 bytes or more that lead every published list of leaked
/// passwords: refused at signup whatever their case.
const COMMON_PASSWORDS: &[&str] = &[
    "password",
    "password1",
    "password12",
    "password123",
    "passw0rd",
    "12345678",
    "123456789",
    "1234567890",
    "0123456789",
    "87654321",
    "987654321",
    "11111111",
    "00000000",
    "qwertyui",
    "qwertyuiop",
    "qwerty123",
    "qwerty12",
    "1q2w3e4r",
    "1q2w3e4r5t",
    "1qaz2wsx",
    "zaq12wsx",
    "asdfghjkl",
    "asdfasdf",
    "iloveyou",
    "sunshine",
    "princess",
    "football",
    "baseball",
    "superman",
    "starwars",
    "whatever",
    "trustno1",
    "letmein1",
    "welcome1",
    "abc12345",
    "abcd1234",
    "aa123456",
    "12341234",
    "11223344",
    "q1w2e3r4",
    "changeme",
    "computer",
    "internet",
    "master12",
    "michael1",
    "jennifer",
    "shadow12",
    "monkey12",
    "dragon12",
    "charlie1",
    "1234qwer",
    "qazwsxedc",
    "zxcvbnm1",
    "zxcvbnm123",
    "passpass",
];

/// The signup password rules beyond the length (PROTOCOL.md §6.1): not the
/// username, not one character repeated, not a run like `12345678` or
/// `abcdefgh`, not one of the most common leaked passwords.
pub fn new_password(username: &str, pw: &str) -> Result<(), Violation> {
    password(pw)?;
    let lower = pw.to_lowercase();
    if lower == username.to_lowercase() {
        return Err(invalid("password", "must not be the username"));
    }
    let mut chars = pw.chars();
    let first = chars.next();
    if chars.all(|c| Some(c) == first) {
        return Err(invalid("password", "must not be one character repeated"));
    }
    let bytes = lower.as_bytes();
    let run = |step: i16| bytes.windows(2).all(|w| i16::from(w[1]) - i16::from(w[0]) == step);
    if bytes.is_ascii() && (run(1) || run(-1)) {
        return Err(invalid("password", "must not be a run of consecutive characters"));
    }
    if COMMON_PASSWORDS.contains(&lower.as_str()) {
        return Err(invalid("password", "is one of the most common passwords; choose another"));
    }
    Ok(())
}

fn short_text(field: &'static str, s: &str, chars: std::ops::RangeInclusive<usize>) -> Result<(), Violation> {
    // Bound the work by the byte length before counting characters.
    if s.len() > chars.end() * 4 || !chars.contains(&s.chars().count()) {
        return Err(invalid(field, "length out of range"));
    }
    if s.chars().any(char::is_control) {
        return Err(invalid(field, "must not contain control characters"));
    }
    if s.trim().is_empty() {
        return Err(invalid(field, "must not be blank"));
    }
    Ok(())
}

/// Device names: 1 to 64 characters, no control characters.
pub fn device_name(name: &str) -> Result<(), Violation> {
    short_text("device_name", name, DEVICE_NAME_CHARS)
}

/// Group titles: 1 to 128 characters, no control characters.
pub fn title(title: &str) -> Result<(), Violation> {
    short_text("title", title, TITLE_CHARS)
}

/// `client_msg_id`: 1 to 64 bytes of printable ASCII.
pub fn client_msg_id(id: &str) -> Result<(), Violation> {
    if !CLIENT_MSG_ID_LEN.contains(&id.len()) || !id.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(invalid("client_msg_id", "must be 1 to 64 bytes of printable ASCII"));
    }
    Ok(())
}

/// Message text: 1 to `max_chars` Unicode scalar values.
pub fn message_text(text: &str, max_chars: u32) -> Result<(), Violation> {
    if text.is_empty() {
        return Err(Violation::EmptyMessage);
    }
    let max = max_chars as usize;
    // Every char is at least one byte: short texts need no counting.
    if text.len() > max {
        let chars = text.chars().take(max + 1).count();
        if chars > max {
            return Err(Violation::MessageTooLong { chars: text.chars().count(), max: max_chars });
        }
    }
    Ok(())
}

/// An identifier that must be present (non-zero).
pub fn id(field: &'static str, id: u64) -> Result<(), Violation> {
    if id == 0 {
        return Err(invalid(field, "must be non-zero"));
    }
    Ok(())
}

fn list<T>(field: &'static str, items: &[T], limits: &Limits) -> Result<(), Violation> {
    if items.len() > limits.max_list_items as usize {
        return Err(Violation::TooManyItems { field, len: items.len(), max: limits.max_list_items });
    }
    Ok(())
}

fn usernames(names: &[String], limits: &Limits) -> Result<(), Violation> {
    list("usernames", names, limits)?;
    names.iter().try_for_each(|n| username(n))
}

/// Checks every peer-controlled field of a request body against the rules
/// and `limits`. Bodies that only the session machine handles (`hello`) and
/// bodies without fields pass.
pub fn validate_request(body: &Body, limits: &Limits) -> Result<(), Violation> {
    match body {
        Body::Hello(h) => {
            if h.versions.len() > 16 || h.capabilities.len() > 32 || h.client_name.len() > 128 {
                return Err(invalid("hello", "too many versions or capabilities, or client_name too long"));
            }
            if h.capabilities.iter().any(|c| c.len() > 64) {
                return Err(invalid("capabilities", "capability names are at most 64 bytes"));
            }
            Ok(())
        }
        Body::Signup(r) => {
            username(&r.username)?;
            new_password(&r.username, &r.password)?;
            device_name(&r.device_name)
        }
        // The format rules are public, so checking them reveals nothing
        // about which accounts exist (PROTOCOL.md §6.1).
        Body::Login(r) => {
            username(&r.username)?;
            if r.password.is_empty() || r.password.len() > *PASSWORD_LEN.end() {
                return Err(invalid("password", "must be 1 to 1024 bytes"));
            }
            device_name(&r.device_name)
        }
        Body::Resume(r) => {
            if r.token.is_empty() || r.token.len() > MAX_TOKEN_LEN {
                return Err(Violation::BadToken);
            }
            Ok(())
        }
        Body::RevokeDevice(r) => id("device_id", r.device_id),
        Body::OpenDirect(r) => username(&r.username),
        Body::CreateGroup(r) => {
            title(&r.title)?;
            usernames(&r.usernames, limits)
        }
        Body::AddMembers(r) => {
            id("conversation_id", r.conversation_id)?;
            if r.usernames.is_empty() {
                return Err(invalid("usernames", "must name at least one user"));
            }
            usernames(&r.usernames, limits)
        }
        Body::RemoveMember(r) => {
            id("conversation_id", r.conversation_id)?;
            username(&r.username)
        }
        Body::LeaveGroup(r) => id("conversation_id", r.conversation_id),
        Body::RenameGroup(r) => {
            id("conversation_id", r.conversation_id)?;
            title(&r.title)
        }
        Body::ListMembers(r) => id("conversation_id", r.conversation_id),
        Body::GetConversation(r) => id("conversation_id", r.conversation_id),
        Body::SetRole(r) => {
            id("conversation_id", r.conversation_id)?;
            username(&r.username)?;
            match pb::MemberRole::try_from(r.role) {
                Ok(pb::MemberRole::Owner | pb::MemberRole::Admin | pb::MemberRole::Member) => Ok(()),
                _ => Err(invalid("role", "must be OWNER, ADMIN or MEMBER")),
            }
        }
        Body::Send(r) => {
            id("conversation_id", r.conversation_id)?;
            client_msg_id(&r.client_msg_id)?;
            message_text(&r.text, limits.max_message_chars)
        }
        Body::History(r) => {
            id("conversation_id", r.conversation_id)?;
            if r.before_seq != 0 && r.after_seq != 0 {
                return Err(invalid("history", "at most one of before_seq and after_seq may be set"));
            }
            Ok(())
        }
        Body::MarkRead(r) => id("conversation_id", r.conversation_id),
        Body::ReadReceipts(r) => id("conversation_id", r.conversation_id),
        Body::SubscribePresence(r) => usernames(&r.usernames, limits),
        Body::UnsubscribePresence(r) => usernames(&r.usernames, limits),
        Body::SetStatus(r) => match pb::PresenceState::try_from(r.status) {
            Ok(pb::PresenceState::Online | pb::PresenceState::Away) => Ok(()),
            _ => Err(invalid("status", "must be ONLINE or AWAY")),
        },
        Body::Typing(r) => id("conversation_id", r.conversation_id),
        Body::RegisterPush(r) => match &r.target {
            None => Err(invalid("target", "must be set")),
            Some(pb::register_push_request::Target::WebPush(w)) => {
                url("endpoint", &w.endpoint, false)?;
                if w.p256dh.len() != 65 || w.p256dh.first() != Some(&4) {
                    return Err(invalid("p256dh", "must be an uncompressed P-256 point (65 bytes)"));
                }
                if w.auth.len() != 16 {
                    return Err(invalid("auth", "must be 16 bytes"));
                }
                Ok(())
            }
            Some(pb::register_push_request::Target::Webhook(w)) => url("url", &w.url, true),
        },
        Body::ChangePassword(r) => {
            if r.current_password.is_empty() || r.current_password.len() > *PASSWORD_LEN.end() {
                return Err(invalid("current_password", "must be 1 to 1024 bytes"));
            }
            // The username is not in the request; the server checks the
            // new password against it too.
            new_password("", &r.new_password)
        }
        Body::SetBlocked(r) => username(&r.username),
        Body::ListBlocked(r) => {
            if !r.after_username.is_empty() {
                username(&r.after_username)?;
            }
            Ok(())
        }
        Body::SetPrivacy(r) => {
            match pb::Audience::try_from(r.direct_messages) {
                Ok(pb::Audience::Unspecified | pb::Audience::Everyone | pb::Audience::Nobody) => {}
                _ => return Err(invalid("direct_messages", "must be EVERYONE or NOBODY (or unset)")),
            }
            match pb::Audience::try_from(r.group_invites) {
                Ok(_) => {}
                Err(_) => return Err(invalid("group_invites", "must be EVERYONE, CONTACTS or NOBODY (or unset)")),
            }
            match pb::Audience::try_from(r.search) {
                Ok(pb::Audience::Unspecified | pb::Audience::Everyone | pb::Audience::Nobody) => Ok(()),
                _ => Err(invalid("search", "must be EVERYONE or NOBODY (or unset)")),
            }
        }
        Body::SearchUsers(r) => search_prefix(&r.prefix),
        Body::Logout(_)
        | Body::GetPrivacy(_)
        | Body::ListDevices(_)
        | Body::RevokeOtherDevices(_)
        | Body::ListConversations(_)
        | Body::Sync(_)
        | Body::AckCursor(_)
        | Body::UnregisterPush(_)
        | Body::Ping(_) => Ok(()),
    }
}

fn url(field: &'static str, u: &str, allow_http: bool) -> Result<(), Violation> {
    let ok_scheme = u.starts_with("https://") || (allow_http && u.starts_with("http://"));
    if !ok_scheme || u.len() > MAX_URL_LEN || u.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(invalid(field, "must be an https URL of at most 2048 bytes"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weak_passwords_are_refused_at_signup() {
        for weak in [
            "alice-1234",
            "ALICE-1234",
            "        ",
            "\0\0\0\0\0\0\0\0",
            "aaaaaaaaaa",
            "12345678",
            "87654321",
            "abcdefgh",
            "Password1",
            "QWERTYUIOP",
            "iloveyou",
        ] {
            let name = if weak.starts_with("alice") || weak.starts_with("ALICE") { "alice-1234" } else { "bob" };
            assert!(new_password(name, weak).is_err(), "{weak:?} accepted");
        }
        for fine in ["correct horse battery staple", "alice-password", "Tr0ub4dor&3", "12345679", "abcdefgi"] {
            assert!(new_password("alice", fine).is_ok(), "{fine:?} refused");
        }
        // Login keeps the old rule: accounts made before it still log in.
        assert!(password("12345678").is_ok());
    }

    #[test]
    fn usernames() {
        for ok in ["bob", "alice_99", "a.b-c", "0day"] {
            assert_eq!(username(ok), Ok(()), "{ok}");
        }
        for bad in ["", "ab", "Alice", "_bob", "bob!", "émile", &"x".repeat(33)] {
            assert!(username(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn search_prefixes() {
        for ok in ["al", "bob", "a.", "0d", &"x".repeat(32)] {
            assert_eq!(search_prefix(ok), Ok(()), "{ok}");
        }
        for bad in ["", "a", "Al", "_b", "b!", "é", &"x".repeat(33)] {
            assert!(search_prefix(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn message_lengths_count_characters() {
        let max = 100_000;
        assert_eq!(message_text(&"a".repeat(100_000), max), Ok(()));
        // 100,000 four-byte characters are 400,000 bytes but within the limit.
        assert_eq!(message_text(&"😀".repeat(100_000), max), Ok(()));
        let err = message_text(&"a".repeat(100_001), max).unwrap_err();
        assert_eq!(err.code(), ErrorCode::MESSAGE_TOO_LONG);
        assert_eq!(message_text("", max).unwrap_err().code(), ErrorCode::EMPTY_MESSAGE);
    }

    #[test]
    fn client_msg_ids() {
        assert!(client_msg_id("0f8c2a7e-4b1d-4c55-9a6e-2d1b5e6f7a80").is_ok());
        assert!(client_msg_id("").is_err());
        assert!(client_msg_id("has space").is_err());
        assert!(client_msg_id(&"x".repeat(65)).is_err());
    }

    #[test]
    fn requests() {
        let l = Limits::default();
        let send = |text: &str| {
            Body::Send(pb::SendRequest { conversation_id: 1, client_msg_id: "m1".into(), text: text.into() })
        };
        assert!(validate_request(&send("hi"), &l).is_ok());
        assert_eq!(validate_request(&send(""), &l).unwrap_err().code(), ErrorCode::EMPTY_MESSAGE);
        let many = Body::CreateGroup(pb::CreateGroupRequest { title: "t".into(), usernames: vec!["bob".into(); 101] });
        assert_eq!(validate_request(&many, &l).unwrap_err().code(), ErrorCode::TOO_MANY_ITEMS);
        let both =
            Body::History(pb::HistoryRequest { conversation_id: 1, before_seq: 5, after_seq: 2, ..Default::default() });
        assert_eq!(validate_request(&both, &l).unwrap_err().code(), ErrorCode::INVALID_ARGUMENT);
        let status = Body::SetStatus(pb::SetStatusRequest { status: 3 });
        assert!(validate_request(&status, &l).is_err());
        let title = Body::CreateGroup(pb::CreateGroupRequest { title: "a\nb".into(), usernames: vec![] });
        assert!(validate_request(&title, &l).is_err());
    }
}
