//! Conversions between the WIT `message` record and the broker's [`Message`].

use courier_broker::Message;

use crate::bindings::Message as WitMessage;

/// Converts a guest's message for the broker. The payload is moved, not copied.
pub fn from_wit(m: WitMessage) -> Message {
    Message {
        topic: m.topic,
        content_type: m.content_type,
        reply_to: m.reply_to,
        data: m.data.into(),
        metadata: m.metadata.unwrap_or_default(),
    }
}

/// Converts a broker message for the guest; empty metadata becomes `none`.
pub fn to_wit(m: Message) -> WitMessage {
    WitMessage {
        topic: m.topic,
        content_type: m.content_type,
        reply_to: m.reply_to,
        data: m.data.into(),
        metadata: (!m.metadata.is_empty()).then_some(m.metadata),
    }
}
