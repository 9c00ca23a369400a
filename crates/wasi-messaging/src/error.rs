//! Errors of the messaging host, and their one mapping onto the WIT `error`.

use courier_broker::{BrokerError, ErrorKind};

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

/// Decided by [`BrokerError::kind`]; the text (with its cause) is kept.
impl From<BrokerError> for MessagingError {
    fn from(e: BrokerError) -> Self {
        match e.kind() {
            ErrorKind::Connection => Self::Connection(e.to_string()),
            ErrorKind::Timeout => Self::Timeout(e.to_string()),
            _ => Self::Other(e.to_string()),
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn wit(e: BrokerError) -> WitError {
        MessagingError::from(e).into()
    }

    #[test]
    fn broker_errors_map_by_kind() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        match wit(BrokerError::connection("nats", refused)) {
            WitError::Connection(s) => assert_eq!(s, "connection to nats broker failed: refused"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            wit(BrokerError::timeout("publish", Duration::from_secs(1))),
            WitError::Timeout
        ));
        // A text that happens to mention a connection does not make it one.
        match wit(BrokerError::invalid("connection to x broker failed")) {
            WitError::Other(s) => assert_eq!(s, "invalid request: connection to x broker failed"),
            other => panic!("{other:?}"),
        }
        for e in [
            BrokerError::settled("gone"),
            BrokerError::unsupported("redis", "durable"),
            BrokerError::other("odd"),
        ] {
            assert!(matches!(wit(e), WitError::Other(_)));
        }
    }
}
