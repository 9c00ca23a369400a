//! Message fields ↔ AMQP basic properties.
//!
//! `content-type` and `reply-to` are the AMQP properties of those names; the
//! metadata entry `correlation-id` is the `correlation_id` property (it comes
//! back after the other metadata); other metadata entries are headers (a
//! repeated key becomes a field array, in order). Courier keeps the delivery
//! attempt of messages it requeues in the header `x-courier-attempt`, which
//! is not metadata. Headers of other types, set by other clients, come back
//! as text.
//!
//! What AMQP cannot carry is refused by [`to_properties`] with an
//! [`ErrorKind::Invalid`](courier_broker::ErrorKind::Invalid) error naming the
//! field: a channel (the routing key), content type, reply-to, metadata key or `correlation-id` value longer than
//! 255 bytes (AMQP short strings), `correlation-id` given more than once (the
//! property holds one value), and the metadata keys `x-courier-attempt` and
//! `x-courier-topic`.

use courier_broker::message::CORRELATION_ID_KEY;
use courier_broker::{BrokerError, Message};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString};

/// Header with the delivery attempt of a message Courier requeued.
pub const ATTEMPT_HEADER: &str = "x-courier-attempt";
/// Header with the original channel of a message Courier requeued (it goes
/// back straight to its queue, under the queue's name).
pub const TOPIC_HEADER: &str = "x-courier-topic";

/// Longest AMQP short string, in bytes (its length is one byte).
pub const MAX_SHORT_STRING: usize = u8::MAX as usize;

/// Refuses `s` when it is longer than an AMQP short string (lapin would
/// panic on it), naming `what` it is.
pub(crate) fn short_string(what: &str, s: &str) -> Result<(), BrokerError> {
    if s.len() > MAX_SHORT_STRING {
        return Err(BrokerError::invalid(format!(
            "{what} is {} bytes long; AMQP allows at most {MAX_SHORT_STRING}",
            s.len()
        )));
    }
    Ok(())
}

/// Checks that `m` fits AMQP: see the module documentation.
fn check(m: &Message) -> Result<(), BrokerError> {
    short_string("channel (routing key)", &m.topic)?;
    if let Some(ct) = &m.content_type {
        short_string("content-type", ct)?;
    }
    if let Some(r) = &m.reply_to {
        short_string("reply-to", r)?;
    }
    for (k, _) in &m.metadata {
        if k == ATTEMPT_HEADER || k == TOPIC_HEADER {
            return Err(BrokerError::invalid(format!(
                "metadata key `{k}` is reserved on AMQP (Courier uses it to requeue)"
            )));
        }
        short_string(&format!("metadata key `{k}`"), k)?;
    }
    let mut correlation = m.metadata.iter().filter(|(k, _)| k == CORRELATION_ID_KEY);
    if let Some((_, id)) = correlation.next() {
        if correlation.next().is_some() {
            return Err(BrokerError::invalid(format!(
                "metadata key `{CORRELATION_ID_KEY}` is given more than once; \
                 AMQP's correlation_id property holds one value"
            )));
        }
        short_string(
            &format!("the value of metadata key `{CORRELATION_ID_KEY}`"),
            id,
        )?;
    }
    Ok(())
}

/// The properties of `m`; `persistent` sets delivery mode 2; `requeued`
/// records the attempt and channel of a message Courier sends back to its queue.
///
/// Refuses, naming the field, what AMQP cannot carry (see the module
/// documentation) instead of sending a corrupt frame.
pub fn to_properties(
    m: &Message,
    persistent: bool,
    requeued: Option<u32>,
) -> Result<BasicProperties, BrokerError> {
    check(m)?;
    let mut headers = FieldTable::default();
    let mut keys: Vec<&str> = Vec::new();
    for (k, _) in &m.metadata {
        if k != CORRELATION_ID_KEY && !keys.contains(&k.as_str()) {
            keys.push(k);
        }
    }
    for k in keys {
        let values: Vec<AMQPValue> = m
            .metadata
            .iter()
            .filter(|(key, _)| key == k)
            .map(|(_, v)| AMQPValue::LongString(LongString::from(v.as_bytes())))
            .collect();
        let value = if values.len() == 1 {
            values.into_iter().next().expect("one value")
        } else {
            AMQPValue::FieldArray(FieldArray::from(values))
        };
        headers.insert(k.into(), value);
    }
    if let Some(a) = requeued {
        headers.insert(ATTEMPT_HEADER.into(), AMQPValue::LongUInt(a));
        headers.insert(
            TOPIC_HEADER.into(),
            AMQPValue::LongString(LongString::from(m.topic.as_bytes())),
        );
    }
    let mut p = BasicProperties::default().with_headers(headers);
    if let Some(ct) = &m.content_type {
        p = p.with_content_type(ct.as_str().into());
    }
    if let Some(r) = &m.reply_to {
        p = p.with_reply_to(r.as_str().into());
    }
    if let Some(id) = m.meta(CORRELATION_ID_KEY) {
        p = p.with_correlation_id(id.into());
    }
    if persistent {
        p = p.with_delivery_mode(2);
    }
    Ok(p)
}

fn value_text(v: &AMQPValue) -> String {
    match v {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ShortString(s) => s.as_str().to_string(),
        AMQPValue::Boolean(b) => b.to_string(),
        AMQPValue::ShortShortInt(n) => n.to_string(),
        AMQPValue::ShortShortUInt(n) => n.to_string(),
        AMQPValue::ShortInt(n) => n.to_string(),
        AMQPValue::ShortUInt(n) => n.to_string(),
        AMQPValue::LongInt(n) => n.to_string(),
        AMQPValue::LongUInt(n) => n.to_string(),
        AMQPValue::LongLongInt(n) => n.to_string(),
        AMQPValue::Float(n) => n.to_string(),
        AMQPValue::Double(n) => n.to_string(),
        other => format!("{other:?}"),
    }
}

/// The message delivered on `routing_key` (or the channel Courier recorded
/// when it requeued it), and the attempt it recorded then.
pub fn from_delivery(
    routing_key: &str,
    properties: &BasicProperties,
    data: Vec<u8>,
) -> (Message, Option<u32>) {
    let mut m = Message::new(routing_key, data);
    m.content_type = properties
        .content_type()
        .as_ref()
        .map(|s| s.as_str().to_string());
    m.reply_to = properties
        .reply_to()
        .as_ref()
        .map(|s| s.as_str().to_string());
    let mut attempt = None;
    if let Some(headers) = properties.headers() {
        for (k, v) in headers.inner() {
            let k = k.as_str();
            match v {
                _ if k == ATTEMPT_HEADER => {
                    attempt = value_text(v).parse().ok();
                }
                _ if k == TOPIC_HEADER => m.topic = value_text(v),
                AMQPValue::FieldArray(values) => {
                    for v in values.as_slice() {
                        m.metadata.push((k.to_string(), value_text(v)));
                    }
                }
                v => m.metadata.push((k.to_string(), value_text(v))),
            }
        }
    }
    if let Some(id) = properties.correlation_id() {
        m.metadata
            .push((CORRELATION_ID_KEY.to_string(), id.as_str().to_string()));
    }
    (m, attempt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let m = Message {
            topic: "a.b".into(),
            content_type: Some("text/plain".into()),
            reply_to: Some("r.1".into()),
            data: "x".into(),
            metadata: vec![
                ("a".into(), "1".into()),
                ("k".into(), "2".into()),
                ("k".into(), "3".into()),
            ],
        };
        let p = to_properties(&m, true, Some(4)).unwrap();
        let (back, attempt) = from_delivery("courier.group.queue", &p, b"x".to_vec());
        assert_eq!(back, m);
        assert_eq!(attempt, Some(4));
    }

    #[test]
    fn correlation_id_is_the_property() {
        let mut m = Message::new("a", "x");
        m.reply_to = Some("replies".into());
        m.metadata = vec![
            (CORRELATION_ID_KEY.into(), "req-42".into()),
            ("trace".into(), "7".into()),
        ];
        let p = to_properties(&m, false, None).unwrap();
        assert_eq!(
            p.correlation_id().as_ref().map(|s| s.as_str()),
            Some("req-42")
        );
        let headers = p.headers().as_ref().unwrap().inner();
        assert!(!headers.contains_key(CORRELATION_ID_KEY));
        // Back as exactly one entry, after the headers.
        let (back, _) = from_delivery("a", &p, b"x".to_vec());
        let expected: Vec<(String, String)> = vec![
            ("trace".into(), "7".into()),
            (CORRELATION_ID_KEY.into(), "req-42".into()),
        ];
        assert_eq!(back.metadata, expected);
        // As another client sends it: the property, no headers.
        let p = BasicProperties::default().with_correlation_id("abc".into());
        let (m, _) = from_delivery("a", &p, Vec::new());
        assert_eq!(m.meta(CORRELATION_ID_KEY), Some("abc"));
        assert_eq!(m.metadata.len(), 1);
    }

    #[test]
    fn what_amqp_cannot_carry_is_refused() {
        let refused = |m: &Message| to_properties(m, false, None).unwrap_err().to_string();
        // Longer than 255 bytes, the one-byte length prefix used to wrap and
        // corrupt the frame.
        let long = "x".repeat(MAX_SHORT_STRING + 1);
        let mut m = Message::new("a", "x");
        m.metadata = vec![(long.clone(), "v".into())];
        assert!(refused(&m).contains("metadata key"));
        let mut m = Message::new("a", "x");
        m.content_type = Some(long.clone());
        assert!(refused(&m).contains("content-type is 256 bytes long"));
        let mut m = Message::new("a", "x");
        m.reply_to = Some(long.clone());
        assert!(refused(&m).contains("reply-to"));
        assert!(refused(&Message::new(long.clone(), "x")).contains("routing key"));
        for key in [ATTEMPT_HEADER, TOPIC_HEADER] {
            let mut m = Message::new("a", "x");
            m.metadata = vec![(key.into(), "1".into())];
            let e = refused(&m);
            assert!(e.contains(key) && e.contains("reserved"), "{e}");
        }
        let mut m = Message::new("a", "x");
        m.metadata = vec![(CORRELATION_ID_KEY.into(), long)];
        let e = refused(&m);
        assert!(
            e.contains("`correlation-id`") && e.contains("256 bytes"),
            "{e}"
        );
        m.metadata = vec![
            (CORRELATION_ID_KEY.into(), "1".into()),
            (CORRELATION_ID_KEY.into(), "2".into()),
        ];
        let e = refused(&m);
        assert!(
            e.contains("`correlation-id`") && e.contains("more than once"),
            "{e}"
        );
        m.metadata = vec![(CORRELATION_ID_KEY.into(), "c".repeat(MAX_SHORT_STRING))];
        assert!(to_properties(&m, false, None).is_ok());
        let mut m = Message::new("a", "x");
        m.metadata = vec![("k".repeat(MAX_SHORT_STRING), "v".repeat(100_000))];
        assert!(to_properties(&m, false, None).is_ok());
    }
}
