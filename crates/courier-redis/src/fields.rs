//! Message ↔ Redis stream entry fields.
//!
//! An entry holds `data`, and when set `content-type` and `reply-to`;
//! each metadata entry is a field `meta:KEY` (repeated keys repeat, in order).
//! An entry written by another tool with no `data` field is read as its
//! fields' values joined, so `XADD key * msg hello` still reaches a guest.

use bytes::Bytes;
use courier_broker::Message;

const DATA: &str = "data";
const CONTENT_TYPE: &str = "content-type";
const REPLY_TO: &str = "reply-to";
const META: &str = "meta:";

/// The fields of an entry for `m`, in order.
pub fn to_fields(m: &Message) -> Vec<(String, Vec<u8>)> {
    let mut f = Vec::with_capacity(3 + m.metadata.len());
    f.push((DATA.to_string(), m.data.to_vec()));
    if let Some(ct) = &m.content_type {
        f.push((CONTENT_TYPE.to_string(), ct.clone().into_bytes()));
    }
    if let Some(r) = &m.reply_to {
        f.push((REPLY_TO.to_string(), r.clone().into_bytes()));
    }
    for (k, v) in &m.metadata {
        f.push((format!("{META}{k}"), v.clone().into_bytes()));
    }
    f
}

/// The message an entry of stream `topic` carries.
pub fn from_fields(topic: &str, fields: Vec<(String, Vec<u8>)>) -> Message {
    let mut m = Message::new(topic, Bytes::new());
    let mut data = None;
    let mut others = Vec::new();
    for (k, v) in fields {
        let text = || String::from_utf8_lossy(&v).into_owned();
        match k.as_str() {
            DATA => data = Some(Bytes::from(v)),
            CONTENT_TYPE => m.content_type = Some(text()),
            REPLY_TO => m.reply_to = Some(text()),
            meta if meta.starts_with(META) => {
                m.metadata.push((meta[META.len()..].to_string(), text()));
            }
            _ => others.push(v),
        }
    }
    m.data = data.unwrap_or_else(|| Bytes::from(others.join(&b' ')));
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let m = Message {
            topic: "a.b".into(),
            content_type: Some("text/plain".into()),
            reply_to: Some("r".into()),
            data: Bytes::from_static(b"\x00bin"),
            metadata: vec![
                ("k".into(), "1".into()),
                ("k".into(), "2".into()),
                ("a".into(), "x".into()),
            ],
        };
        assert_eq!(from_fields("a.b", to_fields(&m)), m);
    }

    #[test]
    fn foreign_entries_keep_their_values() {
        let m = from_fields("s", vec![("msg".into(), b"hello".to_vec())]);
        assert_eq!(m.data, "hello");
        assert!(m.metadata.is_empty());
    }
}
