//! The one error type every backend returns.
//!
//! A [`BrokerError`] says what kind of failure happened ([`ErrorKind`]), in
//! words ([`BrokerError::message`]), which backend reported it, and keeps the
//! broker client's own error (async-nats, redis, lapin, rumqttc, fjall,
//! `std::io`) as its [`source`](std::error::Error::source), so callers can
//! walk the chain or downcast to it instead of parsing text.
//!
//! Decisions (the WIT `error` variant in `courier_wasi_messaging::error`, HTTP
//! statuses, retries) are made on [`BrokerError::kind`], never on the text.
//! The text reads as one line with its cause:
//! `connection to nats broker failed: nats://127.0.0.1:4222: connection refused`.

use std::fmt;
use std::time::Duration;

/// Any error a broker client returns, kept as the source of a [`BrokerError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What kind of failure a [`BrokerError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The broker could not be reached, or the connection broke.
    Connection,
    /// The operation did not finish within its deadline.
    Timeout,
    /// The request was malformed for this backend (bad pattern, bad option value...).
    Invalid,
    /// The backend cannot do what was asked (a feature it lacks).
    Unsupported,
    /// A delivery was settled twice, or after the broker took it back.
    Settled,
    /// The broker holds as much as it may: nothing was taken; try again
    /// later (back-pressure, e.g. a full embedded queue).
    Busy,
    /// Any other broker failure.
    Other,
}

impl ErrorKind {
    /// The kind in one lower-case word, e.g. for metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connection => "connection",
            Self::Timeout => "timeout",
            Self::Invalid => "invalid",
            Self::Unsupported => "unsupported",
            Self::Settled => "settled",
            Self::Busy => "busy",
            Self::Other => "other",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failure reported by a broker backend: its [`kind`](Self::kind), a
/// message, the backend where known, and the underlying error as its source.
///
/// It is not `Clone`: an error reported to several waiters is shared by
/// putting the underlying error in an `Arc` (which is an error too) and
/// building one `BrokerError` per waiter.
#[derive(Debug)]
pub struct BrokerError {
    kind: ErrorKind,
    backend: Option<&'static str>,
    message: String,
    source: Option<BoxError>,
}

impl BrokerError {
    /// An error of `kind` described by `message` (which may be empty when a
    /// source follows).
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            backend: None,
            message: message.into(),
            source: None,
        }
    }

    /// A connection failure of `backend`, caused by the client's `error`
    /// (kept as the source): "connection to `backend` broker failed: error".
    /// A plain string is accepted too and becomes the cause in words.
    pub fn connection(backend: &'static str, error: impl Into<BoxError>) -> Self {
        Self::new(ErrorKind::Connection, "")
            .with_backend(backend)
            .with_source(error)
    }

    /// `operation` did not finish within `after`.
    pub fn timeout(operation: impl fmt::Display, after: Duration) -> Self {
        Self::new(
            ErrorKind::Timeout,
            format!("{operation} timed out after {after:?}"),
        )
    }

    /// A malformed request (bad channel, option value, metadata...).
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid, message)
    }

    /// `backend` cannot do `what`.
    pub fn unsupported(backend: &'static str, what: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unsupported, what).with_backend(backend)
    }

    /// A delivery settled twice, or after the broker took it back.
    pub fn settled(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Settled, message)
    }

    /// `backend` refused work it has no room for; nothing was taken.
    pub fn busy(backend: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Busy, message).with_backend(backend)
    }

    /// Any other failure.
    pub fn other(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Other, message)
    }

    /// Keeps `error` as the cause of this one (returned by
    /// [`source`](std::error::Error::source), shown after the message).
    pub fn with_source(mut self, error: impl Into<BoxError>) -> Self {
        self.source = Some(error.into());
        self
    }

    /// Names the backend that reported the error.
    pub fn with_backend(mut self, backend: &'static str) -> Self {
        self.backend = Some(backend);
        self
    }

    /// Says what was being done (an address, a stream, a queue...): put in
    /// front of the message, so it reads between the headline and the cause.
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = if self.message.is_empty() {
            context.to_string()
        } else {
            format!("{context}: {}", self.message)
        };
        self
    }

    /// What kind of failure this is: what decisions are made on.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The backend kind that reported it (`nats`, `embedded`...), if known.
    pub fn backend(&self) -> Option<&'static str> {
        self.backend
    }

    /// The message, without the kind's headline and without the cause.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for BrokerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The headline of the kind, then the message, then the cause.
        let headline = match (self.kind, self.backend) {
            (ErrorKind::Connection, Some(b)) => Some(format!("connection to {b} broker failed")),
            (ErrorKind::Connection, None) => Some("broker connection failed".into()),
            (ErrorKind::Invalid, _) => Some("invalid request".into()),
            (ErrorKind::Unsupported, Some(b)) => Some(format!("not supported by the {b} backend")),
            (ErrorKind::Unsupported, None) => Some("not supported".into()),
            (ErrorKind::Settled, _) => Some("delivery already settled or expired".into()),
            (ErrorKind::Busy, Some(b)) => Some(format!("the {b} broker is full")),
            (ErrorKind::Busy, None) => Some("the broker is full".into()),
            (ErrorKind::Timeout | ErrorKind::Other, _) => None,
        };
        let parts = [
            headline.as_deref(),
            Some(self.message.as_str()).filter(|m| !m.is_empty()),
        ];
        let mut first = true;
        for part in parts.into_iter().flatten() {
            if !first {
                f.write_str(": ")?;
            }
            f.write_str(part)?;
            first = false;
        }
        if let Some(source) = &self.source {
            if !first {
                f.write_str(": ")?;
            }
            write!(f, "{source}")?;
            first = false;
        }
        if first {
            f.write_str(self.kind.as_str())?;
        }
        Ok(())
    }
}

impl std::error::Error for BrokerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;
    use std::sync::Arc;

    use super::*;

    fn is_send_sync_static<T: Send + Sync + 'static>() {}

    #[test]
    fn is_send_sync_and_static() {
        is_send_sync_static::<BrokerError>();
    }

    #[test]
    fn an_io_error_stays_the_source() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = BrokerError::connection("nats", io).context("nats://127.0.0.1:4222");
        assert_eq!(e.kind(), ErrorKind::Connection);
        assert_eq!(e.backend(), Some("nats"));
        assert_eq!(
            e.to_string(),
            "connection to nats broker failed: nats://127.0.0.1:4222: refused"
        );
        let source = e.source().expect("the io error is the source");
        let io = source
            .downcast_ref::<std::io::Error>()
            .expect("downcasts to the io error");
        assert_eq!(io.kind(), std::io::ErrorKind::ConnectionRefused);
    }

    #[test]
    fn a_shared_source_downcasts_through_its_arc() {
        let io = Arc::new(std::io::Error::other("disk full"));
        let a = BrokerError::other("writing messages").with_source(io.clone());
        let b = BrokerError::other("writing messages").with_source(io);
        assert_eq!(a.to_string(), "writing messages: disk full");
        for e in [a, b] {
            let shared = e.source().unwrap();
            assert!(shared.downcast_ref::<Arc<std::io::Error>>().is_some());
        }
    }

    #[test]
    fn texts_read_as_before() {
        assert_eq!(
            BrokerError::timeout("amqp cancel", Duration::from_secs(2)).to_string(),
            "amqp cancel timed out after 2s"
        );
        assert_eq!(
            BrokerError::invalid("empty channel").to_string(),
            "invalid request: empty channel"
        );
        assert_eq!(
            BrokerError::unsupported("redis", "durable pub/sub").to_string(),
            "not supported by the redis backend: durable pub/sub"
        );
        assert_eq!(
            BrokerError::settled("gone").to_string(),
            "delivery already settled or expired: gone"
        );
        assert_eq!(BrokerError::other("odd").to_string(), "odd");
        assert_eq!(
            BrokerError::connection("mqtt", "the event loop stopped").to_string(),
            "connection to mqtt broker failed: the event loop stopped"
        );
        assert_eq!(
            BrokerError::new(ErrorKind::Connection, "").to_string(),
            "broker connection failed"
        );
        assert_eq!(BrokerError::new(ErrorKind::Other, "").to_string(), "other");
        assert!(BrokerError::invalid("x").source().is_none());
    }
}
