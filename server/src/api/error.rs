//! The one place where what went wrong inside the server becomes a wire
//! error code. Handlers return [`ApiError`]s made here, from the store's
//! refusals and failures, the password pool's refusals, push refusals and
//! the few request-level rules the api checks itself.

use std::time::Duration;

use confab_protocol::ErrorCode;

use crate::passwords::Refused;
use crate::push::PushRefusal;
use crate::store::{CommandError, Refusal, StoreError};

/// A request's failure, as the client will see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The wire code.
    pub code: ErrorCode,
    /// Human-readable detail.
    pub message: String,
    /// Retry advice (0: none).
    pub retry_after_ms: u64,
}

impl ApiError {
    pub(super) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError { code, message: message.into(), retry_after_ms: 0 }
    }

    fn retry(code: ErrorCode, message: impl Into<String>, wait: Duration) -> Self {
        let retry_after_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
        ApiError { code, message: message.into(), retry_after_ms }
    }

    /// `RATE_LIMITED`, to be retried after `wait`.
    pub fn rate_limited(message: &str, wait: Duration) -> Self {
        Self::retry(ErrorCode::RATE_LIMITED, message, wait)
    }

    /// A request that needs an authenticated session arrived before one.
    pub fn unauthenticated() -> Self {
        Self::new(ErrorCode::UNAUTHENTICATED, "log in or resume first")
    }

    /// A body the session machine handles itself reached a handler.
    pub fn misrouted() -> Self {
        Self::new(ErrorCode::INTERNAL, "request reached the wrong handler")
    }

    /// A login named no account, or the password was wrong.
    pub fn invalid_credentials() -> Self {
        Self::new(ErrorCode::INVALID_CREDENTIALS, "unknown username or wrong password")
    }

    /// A resume token is unknown or revoked.
    pub fn invalid_token() -> Self {
        Self::new(ErrorCode::INVALID_TOKEN, "unknown or revoked token")
    }

    /// Hashing a new password failed.
    pub fn hashing_failed() -> Self {
        Self::new(ErrorCode::INTERNAL, "hashing failed")
    }

    /// Push is not offered by this server.
    pub fn push_off() -> Self {
        Self::new(ErrorCode::FEATURE_UNAVAILABLE, "this server does not offer push")
    }

    /// User search is not offered (cluster mode, PROTOCOL.md §6.9).
    pub fn search_unavailable() -> Self {
        Self::new(ErrorCode::FEATURE_UNAVAILABLE, "this server does not offer user search")
    }

    /// A session subscribed to more users than it may.
    pub fn too_many_presence_subscriptions(max: u32) -> Self {
        Self::new(ErrorCode::TOO_MANY_ITEMS, format!("at most {max} presence subscriptions"))
    }
}

impl From<Refused> for ApiError {
    fn from(why: Refused) -> Self {
        let message = match why {
            Refused::AddressBusy => "too many logins in progress from this address; try again shortly",
            Refused::Busy | Refused::Stopped => "too many logins in progress; try again shortly",
        };
        Self::retry(ErrorCode::SERVER_BUSY, message, Duration::from_millis(500))
    }
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        let code = match &r {
            Refusal::UsernameTaken => ErrorCode::USERNAME_TAKEN,
            Refusal::UserNotFound(_) => ErrorCode::USER_NOT_FOUND,
            Refusal::ConversationNotFound => ErrorCode::CONVERSATION_NOT_FOUND,
            Refusal::DeviceNotFound => ErrorCode::DEVICE_NOT_FOUND,
            Refusal::CannotMessageSelf => ErrorCode::CANNOT_MESSAGE_SELF,
            Refusal::NotAGroup => ErrorCode::NOT_A_GROUP,
            Refusal::PermissionDenied(_) => ErrorCode::PERMISSION_DENIED,
            Refusal::GroupFull { .. } => ErrorCode::GROUP_FULL,
            Refusal::TooManyDevices { .. } => ErrorCode::TOO_MANY_DEVICES,
            Refusal::NotAccepted(_) => ErrorCode::REFUSED_BY_USER,
            Refusal::TooManyBlocked { .. } => ErrorCode::TOO_MANY_ITEMS,
            Refusal::Invalid(_) => ErrorCode::INVALID_ARGUMENT,
        };
        Self::new(code, r.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Fjall(_) | StoreError::WriteFailed(_) | StoreError::Reopening => {
                // The writer logs a failing store once per episode; one
                // line per refused request would flood the log.
                tracing::debug!(error = %e, "store unavailable");
                Self::retry(ErrorCode::UNAVAILABLE, "storage is unavailable", Duration::from_secs(1))
            }
            StoreError::Closed => Self::new(ErrorCode::SHUTTING_DOWN, "the server is shutting down"),
            StoreError::OutcomeUnknown(_) => {
                // Not UNAVAILABLE, which promises that nothing was stored.
                tracing::debug!(error = %e, "write outcome unknown");
                Self::new(
                    ErrorCode::INTERNAL,
                    "the outcome is unknown: the request may have taken effect (a send retried with the same client_msg_id is safe)",
                )
            }
            other => {
                tracing::error!(error = %other, "internal store error");
                Self::new(ErrorCode::INTERNAL, "internal error")
            }
        }
    }
}

impl From<PushRefusal> for ApiError {
    fn from(r: PushRefusal) -> Self {
        let code = match &r {
            PushRefusal::Unavailable(_) => ErrorCode::FEATURE_UNAVAILABLE,
            PushRefusal::Invalid(_) => ErrorCode::INVALID_ARGUMENT,
        };
        Self::new(code, r.to_string())
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::Refused(r) => r.into(),
            CommandError::Store(s) => s.into(),
            CommandError::Busy => Self::retry(ErrorCode::SERVER_BUSY, "server busy", Duration::from_millis(100)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_advice_saturates() {
        let e = ApiError::rate_limited("slow down", Duration::MAX);
        assert_eq!(e.code, ErrorCode::RATE_LIMITED);
        assert_eq!(e.retry_after_ms, u64::MAX);
        let busy = ApiError::from(Refused::AddressBusy);
        assert_eq!((busy.code, busy.retry_after_ms), (ErrorCode::SERVER_BUSY, 500));
        let unavailable = ApiError::from(CommandError::Store(StoreError::Reopening));
        assert_eq!((unavailable.code, unavailable.retry_after_ms), (ErrorCode::UNAVAILABLE, 1000));
    }

    /// UNAVAILABLE promises nothing was stored (errors.md); a write that
    /// may have been stored must not say so.
    #[test]
    fn an_unknown_outcome_is_not_unavailable() {
        let unknown = ApiError::from(CommandError::Store(StoreError::OutcomeUnknown("no answer".into())));
        assert_eq!(unknown.code, ErrorCode::INTERNAL);
        let relayed = crate::cluster::rpc::command_error(crate::cluster::rpc::failure(&CommandError::Store(
            StoreError::OutcomeUnknown("no answer".into()),
        )));
        assert_eq!(ApiError::from(relayed).code, ErrorCode::INTERNAL);
    }
}
