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
    /// The server's certificate is not the one pinned for it: never
    /// retried (it would fail the same way), the user has to decide.
    #[error(
        "the server at {server} presented certificate sha256:{seen}, but this profile trusts sha256:{pinned} for it. \
         If its operator replaced the certificate, check the new fingerprint with them (confabd prints \
         \"fingerprint: sha256:…\" at start), then trust it with --trust-cert CERT.pem or by deleting \"{server}\" \
         from \"known_servers\" in the profile's profile.json; if nobody replaced it, someone may be intercepting \
         the connection"
    )]
    CertificateChanged {
        /// The address connected to.
        server: String,
        /// The fingerprint the server presented (hex).
        seen: String,
        /// The fingerprint pinned for it (hex).
        pinned: String,
    },
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
