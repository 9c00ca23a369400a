//! Kafka: message → record headers and key → message. Whatever `to_record`
//! accepts comes back equal, except that the `kafka-key` entry (the record
//! key) comes back after the other metadata (docs/backends.md); what it
//! refuses is exactly what the mapping cannot carry, refused with an error
//! and not a panic. Headers and keys as other clients send them (any bytes,
//! headers without a value) decode without a panic.
#![no_main]

use arbitrary::Arbitrary;
use bytes::Bytes;
use courier_broker::ErrorKind;
use courier_fuzz::ArbitraryMessage;
use courier_kafka::headers::{CONTENT_TYPE, KEY, REPLY_TO, from_record, to_record};
use libfuzzer_sys::fuzz_target;
use rdkafka::message::{Header, OwnedHeaders};

#[derive(Debug, Arbitrary)]
struct Input {
    message: ArbitraryMessage,
    /// Headers as another client may send them.
    raw: Vec<(String, Option<Vec<u8>>)>,
    raw_key: Option<Vec<u8>>,
}

fuzz_target!(|input: Input| {
    let m = input.message.0;
    let keys = m.metadata.iter().filter(|(k, _)| k == KEY).count();
    let refused = keys > 1
        || m.metadata
            .iter()
            .any(|(k, _)| k == CONTENT_TYPE || k == REPLY_TO || k.contains('\0'));
    match to_record(&m) {
        Err(e) => {
            assert!(refused, "refused a message Kafka can carry: {e}\n{m:?}");
            assert_eq!(e.kind(), ErrorKind::Invalid, "{e:?}");
        }
        Ok(r) => {
            assert!(!refused, "accepted a message Kafka cannot carry: {m:?}");
            let back = from_record(
                &m.topic,
                Some(&r.headers),
                r.key.as_deref().map(str::as_bytes),
                m.data.clone(),
            );
            let mut expected = m.clone();
            expected.metadata = m
                .metadata
                .iter()
                .filter(|(k, _)| k != KEY)
                .chain(m.metadata.iter().filter(|(k, _)| k == KEY))
                .cloned()
                .collect();
            assert_eq!(back, expected);
        }
    }

    let mut raw = OwnedHeaders::new();
    for (k, v) in &input.raw {
        raw = raw.insert(Header {
            key: k.as_str(),
            value: v.as_deref(),
        });
    }
    let back = from_record("t", Some(&raw), input.raw_key.as_deref(), Bytes::new());
    let others = input
        .raw
        .iter()
        // librdkafka reads a header name up to its first U+0000.
        .map(|(k, _)| k.split('\0').next().unwrap_or_default())
        .filter(|k| *k != CONTENT_TYPE && *k != REPLY_TO)
        .count();
    assert_eq!(
        back.metadata.len(),
        others + usize::from(input.raw_key.is_some())
    );
});
