//! Wire error codes: an open `ErrorCode(u32)` whose named constants are
//! generated from the table in `spec/errors.md`. Codes this build does not
//! know still round-trip and can be classified by their range.

use std::fmt;

/// A Confab error code as carried in `Error.code` and `GoAway.code`.
///
/// Open on purpose (like h2's `Reason`): a peer may send a code that is newer
/// than this crate, and it must survive decoding, logging and re-encoding.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ErrorCode(pub u32);

include!(concat!(env!("OUT_DIR"), "/error_codes.rs"));

/// What a client should do about an error, derived from the code's range as
/// `spec/errors.md` defines it. Lets clients handle codes they do not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// 1xx: the client broke the protocol.
    Protocol,
    /// 2xx: authentication.
    Auth,
    /// 3xx: the request itself is wrong; do not resend it unchanged.
    Request,
    /// 4xx: a limit was hit; wait and retry.
    Limit,
    /// 5xx: server trouble; retry with backoff.
    Server,
    /// Outside every defined range.
    Unknown,
}

impl ErrorCode {
    /// The table name (`"RATE_LIMITED"`), or `None` for a code this build
    /// does not know.
    pub fn name(self) -> Option<&'static str> {
        ALL.iter().find(|(c, _, _)| *c == self).map(|(_, n, _)| *n)
    }

    /// Whether the table says the server ends the session with this code.
    /// Unknown codes: `false` (the frame's `fatal` flag is authoritative).
    pub fn ends_session(self) -> bool {
        ALL.iter().find(|(c, _, _)| *c == self).is_some_and(|(_, _, f)| *f)
    }

    /// The code's class, from its range.
    pub fn class(self) -> ErrorClass {
        match self.0 / 100 {
            1 => ErrorClass::Protocol,
            2 => ErrorClass::Auth,
            3 => ErrorClass::Request,
            4 => ErrorClass::Limit,
            5 => ErrorClass::Server,
            _ => ErrorClass::Unknown,
        }
    }

    /// Whether the same request may succeed if sent again later.
    pub fn is_retryable(self) -> bool {
        matches!(self.class(), ErrorClass::Limit | ErrorClass::Server)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name} ({})", self.0),
            None => write!(f, "error {}", self.0),
        }
    }
}

impl fmt::Debug for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl From<u32> for ErrorCode {
    fn from(code: u32) -> Self {
        ErrorCode(code)
    }
}

impl From<ErrorCode> for u32 {
    fn from(code: ErrorCode) -> u32 {
        code.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_generated_and_consistent() {
        assert!(ALL.len() >= 30, "errors.md table parsed to {} rows", ALL.len());
        assert_eq!(ErrorCode::RATE_LIMITED.name(), Some("RATE_LIMITED"));
        assert!(ErrorCode::FRAME_TOO_LARGE.ends_session());
        assert!(!ErrorCode::MALFORMED_FRAME.ends_session());
        assert_eq!(ErrorCode::RESYNC_REQUIRED.class(), ErrorClass::Server);
        for (code, name, _) in ALL {
            assert_ne!(code.class(), ErrorClass::Unknown, "{name} is outside every range");
        }
    }

    #[test]
    fn unknown_codes_survive_and_classify() {
        let code = ErrorCode::from(451u32);
        assert_eq!(code.name(), None);
        assert_eq!(u32::from(code), 451);
        assert_eq!(code.class(), ErrorClass::Limit);
        assert!(code.is_retryable());
        assert_eq!(code.to_string(), "error 451");
        assert_eq!(ErrorCode(7).class(), ErrorClass::Unknown);
    }
}
