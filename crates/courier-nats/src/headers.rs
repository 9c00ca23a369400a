//! Message fields ↔ NATS headers.
//!
//! Metadata entries become NATS headers (repeated keys stay repeated, in
//! order; the order across different keys is not kept, since NATS headers are
//! a map). `content-type` travels as `Content-Type`. On core NATS `reply-to`
//! is the message's reply subject, so request/reply with plain NATS clients
//! works; on JetStream the reply subject is the ack subject, so `reply-to`
//! travels in the header `Courier-Reply-To`.

use async_nats::HeaderMap;
use bytes::Bytes;
use courier_broker::Message;

/// Header carrying `content-type`.
pub const CONTENT_TYPE: &str = "Content-Type";
/// Header carrying `reply-to` on JetStream.
pub const REPLY_TO: &str = "Courier-Reply-To";

/// The headers of `m`; `reply_in_header` puts `reply-to` in a header.
pub fn to_headers(m: &Message, reply_in_header: bool) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in &m.metadata {
        h.append(k.as_str(), v.as_str());
    }
    if let Some(ct) = &m.content_type {
        h.insert(CONTENT_TYPE, ct.as_str());
    }
    if reply_in_header && let Some(r) = &m.reply_to {
        h.insert(REPLY_TO, r.as_str());
    }
    h
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
                n if n.starts_with("Nats-") => {}
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
        let h = to_headers(&m, true);
        let back = from_nats("a.b", Some("$JS.ACK.x"), Some(&h), m.data.clone(), true);
        assert_eq!(back, m);
    }

    #[test]
    fn round_trip_with_reply_subject() {
        let m = sample();
        let h = to_headers(&m, false);
        assert!(h.get(REPLY_TO).is_none());
        let back = from_nats("a.b", Some("replies.1"), Some(&h), m.data.clone(), false);
        assert_eq!(back, m);
    }

    #[test]
    fn no_headers_no_metadata() {
        let back = from_nats("a", None, None, Bytes::from_static(b"x"), false);
        assert_eq!(back, Message::new("a", "x"));
    }
}
