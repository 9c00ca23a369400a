//! The host-side message: what a backend publishes and delivers.

use bytes::Bytes;

use crate::BrokerError;

/// Metadata key under which Courier hands each delivered message its delivery id.
pub const DELIVERY_ID_KEY: &str = "courier-delivery-id";
/// Metadata key with the delivery attempt (1 for the first delivery).
pub const ATTEMPT_KEY: &str = "courier-attempt";
/// Dead letters: the topic the message was originally delivered on.
pub const ORIGINAL_TOPIC_KEY: &str = "courier-original-topic";
/// Dead letters: how many times delivery was attempted.
pub const ATTEMPTS_KEY: &str = "courier-attempts";
/// Dead letters: the last error (guest error, trap, timeout, or abandon).
pub const LAST_ERROR_KEY: &str = "courier-last-error";
/// Every metadata key that starts with this is Courier's own: a guest's
/// `send` never carries one, so that a guest cannot forge a delivery id, an
/// attempt or a dead letter's provenance.
pub const RESERVED_PREFIX: &str = "courier-";
/// Metadata key that carries the broker's native correlation id (AMQP
/// `correlation_id`, MQTT 5 correlation data) on every backend; on brokers
/// without a native field it is an ordinary header.
pub const CORRELATION_ID_KEY: &str = "correlation-id";
/// Metadata key with MQTT 5 correlation data that is not a UTF-8 string,
/// hex-encoded (lowercase), so that the mapping stays lossless.
pub const CORRELATION_HEX_KEY: &str = "correlation-id-hex";

/// A message as it travels through a broker.
///
/// It mirrors the WIT `message` record; `metadata` is empty where the WIT
/// record has `none`. `data` is reference counted so that fan-out to several
/// subscribers does not copy the payload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    /// The topic/subject/channel the message is sent on or was received on.
    pub topic: String,
    /// Optional content type of `data`.
    pub content_type: Option<String>,
    /// Optional topic for replies.
    pub reply_to: Option<String>,
    /// The payload.
    pub data: Bytes,
    /// Headers, in order; keys may repeat.
    pub metadata: Vec<(String, String)>,
}

impl Message {
    /// A message with just a topic and a payload.
    pub fn new(topic: impl Into<String>, data: impl Into<Bytes>) -> Self {
        Self {
            topic: topic.into(),
            data: data.into(),
            ..Self::default()
        }
    }

    /// The first metadata value for `key`.
    pub fn meta(&self, key: &str) -> Option<&str> {
        self.metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Sets `key` to `value`, replacing every earlier value of that key.
    pub fn set_meta(&mut self, key: &str, value: impl Into<String>) {
        self.metadata.retain(|(k, _)| k != key);
        self.metadata.push((key.to_string(), value.into()));
    }

    /// Removes every value of `key`.
    pub fn remove_meta(&mut self, key: &str) {
        self.metadata.retain(|(k, _)| k != key);
    }

    /// Removes every key Courier reserves for itself ([`RESERVED_PREFIX`]).
    pub fn remove_reserved(&mut self) {
        self.metadata.retain(|(k, _)| !is_reserved(k));
    }
}

/// Whether `key` is one of Courier's own metadata keys ([`RESERVED_PREFIX`]).
pub fn is_reserved(key: &str) -> bool {
    key.get(..RESERVED_PREFIX.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(RESERVED_PREFIX))
}

/// Refuses text a broker field cannot carry: longer than `max_bytes`, or
/// with a control character (U+0000 is forbidden in MQTT strings, the others
/// make some brokers drop the connection). `what` names the field.
pub fn check_text(what: &str, text: &str, max_bytes: usize) -> Result<(), BrokerError> {
    if text.len() > max_bytes {
        return Err(BrokerError::invalid(format!(
            "{what} is {} bytes long: at most {max_bytes} are allowed",
            text.len()
        )));
    }
    match text.chars().find(|c| c.is_control()) {
        Some(c) => Err(BrokerError::invalid(format!(
            "{what} contains the control character U+{:04X}",
            u32::from(c)
        ))),
        None => Ok(()),
    }
}
