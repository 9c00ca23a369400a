//! Message fields ↔ Kafka record headers and key.
//!
//! `content-type` and `reply-to` travel in the headers of those names (as in
//! Courier's Redis Streams entries); every metadata entry is a header of its
//! own, in order (Kafka headers are an ordered list and keys may repeat, so
//! the mapping keeps everything). The metadata entry [`KEY`] (`kafka-key`) is
//! the record key instead of a header, so that users choose the partition;
//! a delivered record's key comes back as that entry, after the others.
//!
//! What Kafka cannot carry this way is refused by [`to_record`] with an
//! [`ErrorKind::Invalid`](courier_broker::ErrorKind::Invalid) error naming
//! the key: a metadata key `content-type` or `reply-to` (the headers of the
//! message fields), a metadata key with the character U+0000 (librdkafka
//! reads header names as C strings), and [`KEY`] given more than once. Records written by
//! other clients decode without failing: a header without a value is an
//! entry with an empty value, and bytes that are not UTF-8 are read lossily.

use bytes::Bytes;
use courier_broker::{BrokerError, Message};
use rdkafka::message::{Header, Headers, OwnedHeaders};

/// Header carrying `content-type`.
pub const CONTENT_TYPE: &str = "content-type";
/// Header carrying `reply-to`.
pub const REPLY_TO: &str = "reply-to";
/// Metadata entry that is the record key. Not `courier-key`: metadata keys
/// starting with `courier-` are Courier's own and a guest's `send` drops them.
pub const KEY: &str = "kafka-key";

/// A record as Courier produces it: headers and key of a message.
#[derive(Debug)]
pub struct Record {
    /// The record's headers.
    pub headers: OwnedHeaders,
    /// The record's key, from the metadata entry [`KEY`].
    pub key: Option<String>,
}

/// The headers and key of `m`, refusing (with the key named) what they
/// cannot carry; see the module documentation.
pub fn to_record(m: &Message) -> Result<Record, BrokerError> {
    let mut headers = OwnedHeaders::new_with_capacity(m.metadata.len() + 2);
    let mut key = None;
    for (k, v) in &m.metadata {
        if k == CONTENT_TYPE || k == REPLY_TO {
            return Err(BrokerError::invalid(format!(
                "metadata key `{k}` is reserved on Kafka (Courier sends a message field in that header)"
            )));
        }
        if k.contains('\0') {
            return Err(BrokerError::invalid(format!(
                "metadata key {k:?} contains U+0000, which a Kafka header name cannot (librdkafka)"
            )));
        }
        if k == KEY {
            if key.is_some() {
                return Err(BrokerError::invalid(format!(
                    "metadata key `{KEY}` is given more than once; it is the Kafka record key, which holds one value"
                )));
            }
            key = Some(v.clone());
            continue;
        }
        headers = headers.insert(Header {
            key: k,
            value: Some(v.as_bytes()),
        });
    }
    if let Some(ct) = &m.content_type {
        headers = headers.insert(Header {
            key: CONTENT_TYPE,
            value: Some(ct.as_bytes()),
        });
    }
    if let Some(r) = &m.reply_to {
        headers = headers.insert(Header {
            key: REPLY_TO,
            value: Some(r.as_bytes()),
        });
    }
    Ok(Record { headers, key })
}

fn text(bytes: Option<&[u8]>) -> String {
    String::from_utf8_lossy(bytes.unwrap_or_default()).into_owned()
}

/// The message of a record of `topic`, with its headers and key. When a
/// record repeats `content-type` or `reply-to`, the last one counts.
pub fn from_record<H: Headers + ?Sized>(
    topic: &str,
    headers: Option<&H>,
    key: Option<&[u8]>,
    data: Bytes,
) -> Message {
    let mut m = Message::new(topic, data);
    if let Some(headers) = headers {
        for h in (0..headers.count()).filter_map(|i| headers.try_get(i)) {
            match h.key {
                CONTENT_TYPE => m.content_type = Some(text(h.value)),
                REPLY_TO => m.reply_to = Some(text(h.value)),
                k => m.metadata.push((k.to_string(), text(h.value))),
            }
        }
    }
    if let Some(key) = key {
        m.metadata.push((KEY.to_string(), text(Some(key))));
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_every_field() {
        let m = Message {
            topic: "a.b".into(),
            content_type: Some("text/plain".into()),
            reply_to: Some("r.1".into()),
            data: Bytes::from_static(b"x"),
            metadata: vec![
                ("b".into(), "1".into()),
                ("a".into(), "2".into()),
                ("b".into(), "3".into()),
                ("".into(), "".into()),
                (KEY.into(), "user-7".into()),
            ],
        };
        let r = to_record(&m).unwrap();
        assert_eq!(r.key.as_deref(), Some("user-7"));
        let back = from_record(
            "a.b",
            Some(&r.headers),
            r.key.as_deref().map(str::as_bytes),
            m.data.clone(),
        );
        assert_eq!(back, m);
    }

    #[test]
    fn refuses_what_kafka_cannot_carry() {
        for bad in [
            vec![(CONTENT_TYPE.to_string(), "x".to_string())],
            vec![(REPLY_TO.to_string(), "x".to_string())],
            vec![("a\0b".to_string(), "x".to_string())],
            vec![
                (KEY.to_string(), "1".to_string()),
                (KEY.to_string(), "2".to_string()),
            ],
        ] {
            let m = Message {
                metadata: bad,
                ..Message::new("t", "x")
            };
            let e = to_record(&m).unwrap_err();
            assert_eq!(e.kind(), courier_broker::ErrorKind::Invalid);
        }
    }

    #[test]
    fn records_of_other_clients_decode() {
        let h = OwnedHeaders::new()
            .insert(Header::<&[u8]> {
                key: "bin",
                value: Some(&[0xff, 0xfe]),
            })
            .insert(Header::<&[u8]> {
                key: "null",
                value: None,
            })
            .insert(Header {
                key: CONTENT_TYPE,
                value: Some("a"),
            })
            .insert(Header {
                key: CONTENT_TYPE,
                value: Some("b"),
            });
        let m = from_record("t", Some(&h), Some(&[0xc3][..]), Bytes::new());
        assert_eq!(m.content_type.as_deref(), Some("b"));
        assert_eq!(m.meta("bin"), Some("\u{fffd}\u{fffd}"));
        assert_eq!(m.meta("null"), Some(""));
        assert_eq!(m.meta(KEY), Some("\u{fffd}"));
    }
}
