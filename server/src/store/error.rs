//! The store's error vocabulary, in one place: what a storage failure is
//! ([`StoreError`]), what a domain rule refuses ([`Refusal`]), and what a
//! store operation can end with ([`CommandError`]). The api maps them to
//! wire codes (`api/error.rs`).

/// Storage failures (not domain refusals such as "user not found").
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// fjall reported an I/O or internal error.
    #[error("storage error: {0}")]
    Fjall(#[from] fjall::Error),
    /// A stored value did not decode.
    #[error("corrupt record in {keyspace}: {detail}")]
    Corrupt {
        /// Where.
        keyspace: &'static str,
        /// What.
        detail: String,
    },
    /// The data directory was written by an incompatible version.
    #[error("store format version {found} is not supported by this build (it reads version {expected})")]
    UnsupportedFormat {
        /// On disk.
        found: u32,
        /// This build.
        expected: u32,
    },
    /// A group commit failed (disk full, I/O error): none of its writes
    /// were stored.
    #[error("write failed: {0}")]
    WriteFailed(String),
    /// A write whose outcome is not known (a cluster's log or a partition's
    /// owner did not answer in time): it may have been stored.
    #[error("outcome unknown: {0}")]
    OutcomeUnknown(String),
    /// The writer thread is gone (shutting down).
    #[error("the store is shutting down")]
    Closed,
    /// The store is being reopened after write failures; try again soon.
    #[error("the store is reopening after write failures")]
    Reopening,
}

impl StoreError {
    /// The same failure for each command of a group (the group's error is
    /// shared; its kind is kept where it decides the answer).
    pub fn for_each_command(&self) -> StoreError {
        match self {
            StoreError::OutcomeUnknown(why) => StoreError::OutcomeUnknown(why.clone()),
            StoreError::WriteFailed(why) => StoreError::WriteFailed(why.clone()),
            StoreError::Closed => StoreError::Closed,
            StoreError::Reopening => StoreError::Reopening,
            other => StoreError::WriteFailed(other.to_string()),
        }
    }
}

/// A request refused by a domain rule. Mapped to wire codes in `api`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// Signup with a username someone has.
    #[error("username is taken")]
    UsernameTaken,
    /// A username that names no account.
    #[error("no such user: {0}")]
    UserNotFound(String),
    /// No such conversation, or the user may not see it.
    #[error("no such conversation, or not a member")]
    ConversationNotFound,
    /// No such device of this user.
    #[error("no such device")]
    DeviceNotFound,
    /// A direct conversation with oneself.
    #[error("cannot open a conversation with yourself")]
    CannotMessageSelf,
    /// A group operation on a direct conversation.
    #[error("not a group")]
    NotAGroup,
    /// The user's role does not allow it (why).
    #[error("{0}")]
    PermissionDenied(std::borrow::Cow<'static, str>),
    /// The group would grow past the limit.
    #[error("the group would have {would_have} members; the limit is {max}")]
    GroupFull {
        /// Members it would have.
        would_have: usize,
        /// The limit.
        max: u32,
    },
    /// The account has as many devices as it may.
    #[error("the account has {max} devices, the most it may have: revoke one first")]
    TooManyDevices {
        /// The limit.
        max: u32,
    },
    /// A user does not accept this from the requester (a block either
    /// way, or their privacy settings); names whom.
    #[error("{0} does not accept this from you, or you blocked them")]
    NotAccepted(String),
    /// The block list is full.
    #[error("you have blocked {max} users, the most you may; unblock some first")]
    TooManyBlocked {
        /// The limit.
        max: u32,
    },
    /// An argument no rule accepts (why).
    #[error("{0}")]
    Invalid(std::borrow::Cow<'static, str>),
}

/// Why a command did not take effect.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The request was refused (domain rule); nothing was written.
    #[error("{0}")]
    Refused(#[from] Refusal),
    /// The store failed; nothing of this command's group was written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The writer's queue is full; nothing was done.
    #[error("the store is overloaded")]
    Busy,
}
