//! Errors of the messaging host, and their one mapping onto the WIT `error`.

use courier_broker::BrokerError;

use crate::bindings::Error as WitError;

/// Why a `wasi:messaging` call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessagingError {
    /// Outside the guest's grants; the WIT variant carries no text, so the
    /// reason is logged on the host.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// A deadline passed.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The broker could not be reached, or no such client exists.
    #[error("connection: {0}")]
    Connection(String),
    /// Anything else: bad channel, oversized message, unknown delivery...
    #[error("{0}")]
    Other(String),
}

impl From<BrokerError> for MessagingError {
    fn from(e: BrokerError) -> Self {
        match e {
            BrokerError::Connection { .. } => Self::Connection(e.to_string()),
            BrokerError::Timeout { .. } => Self::Timeout(e.to_string()),
            other => Self::Other(other.to_string()),
        }
    }
}

impl From<MessagingError> for WitError {
    fn from(e: MessagingError) -> Self {
        match e {
            MessagingError::Unauthorized(_) => WitError::Unauthorized,
            MessagingError::Timeout(_) => WitError::Timeout,
            MessagingError::Connection(s) => WitError::Connection(s),
            MessagingError::Other(s) => WitError::Other(s),
        }
    }
}

/// A WIT `error` in words, for logs and dead-letter metadata: `unauthorized`,
/// `timeout`, `connection: …`, or the text of `other`.
pub fn describe(e: &WitError) -> String {
    match e {
        WitError::Unauthorized => "unauthorized".into(),
        WitError::Timeout => "timeout".into(),
        WitError::Connection(s) => format!("connection: {s}"),
        WitError::Other(s) => s.clone(),
    }
}
