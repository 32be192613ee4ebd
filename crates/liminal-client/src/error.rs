//! Client errors.

use liminal_protocol::ErrorCode;

/// An error from the client or an `Error` frame from the server.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {address}: {reason}")]
    Connect { address: String, reason: String },
    #[error("server rejected the request ({code}): {message}")]
    Server { code: String, message: String },
    #[error("connection closed: {0}")]
    Closed(String),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("timed out after {0} ms")]
    Timeout(u64),
}

impl ClientError {
    /// The server's error code, if this error came from an `Error` frame.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Server { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Whether this is a server error with the given code.
    pub fn is(&self, code: ErrorCode) -> bool {
        self.code() == Some(code.as_str())
    }
}
