//! Message fields ↔ NATS headers.
//!
//! Metadata entries become NATS headers (repeated keys stay repeated, in
//! order; the order across different keys is not kept, since NATS headers are
//! a map). `content-type` travels as `Content-Type`. On core NATS `reply-to`
//! is the message's reply subject, so request/reply with plain NATS clients
//! works; on JetStream the reply subject is the ack subject, so `reply-to`
//! travels in the header `Courier-Reply-To`.
//!
//! What a header cannot carry is refused by [`to_headers`] with an
//! [`ErrorKind::Invalid`](courier_broker::ErrorKind::Invalid) error naming the
//! key: a metadata key that is empty, not printable ASCII or has a `:`, a value (metadata, content type, reply-to
//! in a header) with a line break, and a metadata key that is one of the
//! headers above. Headers starting with `Nats-` are sent (e.g.
//! `Nats-Msg-Id` for JetStream's deduplication) but are NATS's own and are
//! not delivered back as metadata.

use std::str::FromStr;

use async_nats::{HeaderMap, HeaderName, HeaderValue};
use bytes::Bytes;
use courier_broker::{BrokerError, Message};

/// Header carrying `content-type`.
pub const CONTENT_TYPE: &str = "Content-Type";
/// Header carrying `reply-to` on JetStream.
pub const REPLY_TO: &str = "Courier-Reply-To";
/// Prefix of the headers NATS uses itself; they are not delivered as metadata.
pub const NATS_PREFIX: &str = "Nats-";

fn header_name(key: &str) -> Result<HeaderName, BrokerError> {
    if key.is_empty() {
        return Err(BrokerError::invalid(
            "metadata key is empty, which a NATS header name cannot be",
        ));
    }
    HeaderName::from_str(key).map_err(|_| {
        BrokerError::invalid(format!(
            "metadata key {key:?} cannot be a NATS header name \
             (only printable ASCII without `:`)"
        ))
    })
}

fn header_value(what: &str, value: &str) -> Result<HeaderValue, BrokerError> {
    HeaderValue::from_str(value).map_err(|_| {
        BrokerError::invalid(format!(
            "{what} {value:?} cannot be a NATS header value (it has a line break)"
        ))
    })
}

/// The headers of `m`; `reply_in_header` puts `reply-to` in a header.
///
/// Refuses, naming the key, what NATS headers cannot carry (see the module
/// documentation) instead of sending something else.
pub fn to_headers(m: &Message, reply_in_header: bool) -> Result<HeaderMap, BrokerError> {
    let mut h = HeaderMap::new();
    for (k, v) in &m.metadata {
        if k == CONTENT_TYPE || (reply_in_header && k == REPLY_TO) {
            return Err(BrokerError::invalid(format!(
                "metadata key `{k}` is reserved on NATS (Courier sends a message field in it)"
            )));
        }
        let value = header_value(&format!("value of metadata key `{k}`"), v)?;
        h.append(header_name(k)?, value);
    }
    if let Some(ct) = &m.content_type {
        h.insert(CONTENT_TYPE, header_value("content-type", ct)?);
    }
    if reply_in_header && let Some(r) = &m.reply_to {
        h.insert(REPLY_TO, header_value("reply-to", r)?);
    }
    Ok(h)
}

/// A message from what NATS delivered. `reply` is the NATS reply subject,
/// used as `reply-to` unless `reply_in_header`.
pub fn from_nats(
    subject: &str,
    reply: Option<&str>,
    headers: Option<&HeaderMap>,
    payload: Bytes,
    reply_in_header: bool,
) -> Message {
    let mut m = Message::new(subject, payload);
    if !reply_in_header {
        m.reply_to = reply.map(str::to_string);
    }
    if let Some(h) = headers {
        let mut entries: Vec<(String, &Vec<async_nats::HeaderValue>)> =
            h.iter().map(|(k, v)| (k.to_string(), v)).collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, values) in entries {
            let last = || values.last().map(|v| v.as_str().to_string());
            match name.as_str() {
                CONTENT_TYPE => m.content_type = last(),
                REPLY_TO if reply_in_header => m.reply_to = last(),
                // JetStream's own headers (Nats-Msg-Id, ...) are not the guest's.
                n if n.starts_with(NATS_PREFIX) => {}
                _ => {
                    for v in values {
                        m.metadata.push((name.clone(), v.as_str().to_string()));
                    }
                }
            }
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Message {
        Message {
            topic: "a.b".into(),
            content_type: Some("application/json".into()),
            reply_to: Some("replies.1".into()),
            data: Bytes::from_static(b"{}"),
            metadata: vec![
                ("k".into(), "1".into()),
                ("k".into(), "2".into()),
                ("trace".into(), "x".into()),
            ],
        }
    }

    #[test]
    fn round_trip_with_reply_in_header() {
        let m = sample();
        let h = to_headers(&m, true).unwrap();
        let back = from_nats("a.b", Some("$JS.ACK.x"), Some(&h), m.data.clone(), true);
        assert_eq!(back, m);
    }

    #[test]
    fn round_trip_with_reply_subject() {
        let m = sample();
        let h = to_headers(&m, false).unwrap();
        assert!(h.get(REPLY_TO).is_none());
        let back = from_nats("a.b", Some("replies.1"), Some(&h), m.data.clone(), false);
        assert_eq!(back, m);
    }

    #[test]
    fn no_headers_no_metadata() {
        let back = from_nats("a", None, None, Bytes::from_static(b"x"), false);
        assert_eq!(back, Message::new("a", "x"));
    }

    #[test]
    fn what_headers_cannot_carry_is_refused_not_a_panic() {
        let with_meta = |k: &str, v: &str| Message {
            metadata: vec![(k.into(), v.into())],
            ..Message::new("a", "x")
        };
        let refused = |m: &Message, reply_in_header: bool| {
            to_headers(m, reply_in_header).unwrap_err().to_string()
        };
        let e = refused(&with_meta("a:b", "1"), false);
        assert!(e.contains("\"a:b\"") && e.contains("header name"), "{e}");
        let e = refused(&with_meta("é", "1"), false);
        assert!(e.contains("header name"), "{e}");
        let e = refused(&with_meta("", "1"), false);
        assert!(e.contains("empty"), "{e}");
        let e = refused(&with_meta("k", "1\r\n2"), false);
        assert!(e.contains("`k`") && e.contains("line break"), "{e}");
        let e = refused(&with_meta(CONTENT_TYPE, "text/plain"), false);
        assert!(e.contains("reserved"), "{e}");
        let e = refused(&with_meta(REPLY_TO, "r"), true);
        assert!(e.contains("reserved"), "{e}");
        let mut m = Message::new("a", "x");
        m.content_type = Some("text/plain\n".into());
        assert!(refused(&m, false).contains("content-type"));
        let mut m = Message::new("a", "x");
        m.reply_to = Some("r\r".into());
        assert!(refused(&m, true).contains("reply-to"));
        // On core NATS reply-to is the reply subject, not a header.
        assert!(to_headers(&m, false).is_ok());
        assert!(to_headers(&with_meta(REPLY_TO, "r"), false).is_ok());
    }

    #[test]
    fn nats_own_headers_are_sent_but_not_delivered() {
        let mut m = Message::new("a", "x");
        m.metadata = vec![("Nats-Msg-Id".into(), "1".into()), ("k".into(), "v".into())];
        let h = to_headers(&m, true).unwrap();
        assert_eq!(h.get("Nats-Msg-Id").map(|v| v.as_str()), Some("1"));
        let back = from_nats("a", None, Some(&h), m.data.clone(), true);
        assert_eq!(back.metadata, vec![("k".to_string(), "v".to_string())]);
    }
}
