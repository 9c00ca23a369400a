//! The one error type every backend returns.
//!
//! The `wasi:messaging` host maps these onto the WIT `error` variants in a
//! single place (`courier_wasi_messaging::error`), so backends only have to
//! say what kind of failure happened.

use std::time::Duration;

/// A failure reported by a broker backend.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerError {
    /// The broker could not be reached, or the connection broke.
    #[error("connection to {backend} broker failed: {reason}")]
    Connection {
        /// Which backend kind reported it (`nats`, `embedded`, ...).
        backend: &'static str,
        /// What went wrong, in the broker client's words.
        reason: String,
    },
    /// The operation did not finish within its deadline.
    #[error("{operation} timed out after {after:?}")]
    Timeout {
        /// What was being done.
        operation: &'static str,
        /// The deadline that passed.
        after: Duration,
    },
    /// The request was malformed for this backend (bad pattern, bad option value...).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The backend cannot do what was asked (a feature it lacks).
    #[error("not supported by the {backend} backend: {what}")]
    Unsupported {
        /// Which backend kind.
        backend: &'static str,
        /// What was asked.
        what: String,
    },
    /// A delivery was settled twice, or after the broker took it back.
    #[error("delivery already settled or expired: {0}")]
    Settled(String),
    /// Any other broker failure.
    #[error("{0}")]
    Other(String),
}

impl BrokerError {
    /// A connection failure of the given backend.
    pub fn connection(backend: &'static str, reason: impl ToString) -> Self {
        Self::Connection {
            backend,
            reason: reason.to_string(),
        }
    }
}
