//! Client errors.

use confab_protocol::ErrorCode;

/// Why a client operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server answered with an `Error`.
    #[error("server error {code}: {message}")]
    Server {
        /// The wire code.
        code: ErrorCode,
        /// The server's detail.
        message: String,
        /// Retry advice in ms (0: none).
        retry_after_ms: u64,
    },
    /// The connection is gone (network failure, server closed the session).
    /// The outcome of requests in flight is unknown.
    #[error("connection lost: {0}")]
    Disconnected(String),
    /// Could not connect (DNS, TCP/QUIC, TLS, handshake).
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The server answered with something the request does not expect.
    #[error("unexpected response: {0}")]
    Unexpected(String),
    /// A local problem (profile file, bad argument).
    #[error("{0}")]
    Local(String),
}

impl ClientError {
    /// The server's code, when the server refused the request.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether retrying (after reconnecting, for connection errors) may
    /// succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Server { code, .. } => code.is_retryable(),
            ClientError::Disconnected(_) | ClientError::Connect(_) => true,
            _ => false,
        }
    }
}
