//! AMQP: message → basic properties → their bytes on the wire → properties →
//! message. Whatever `to_properties` accepts comes back equal with metadata
//! ordered by key (docs/backends.md: "headers; repeated keys as a field
//! array, keys sorted"), `correlation-id` (the `correlation_id` property)
//! last; what it refuses is exactly what AMQP cannot carry, refused with an
//! error. Any properties bytes decode without a panic.
#![no_main]

use arbitrary::Arbitrary;
use courier_amqp::properties::{
    ATTEMPT_HEADER, MAX_SHORT_STRING, TOPIC_HEADER, from_delivery, to_properties,
};
use courier_broker::ErrorKind;
use courier_broker::message::CORRELATION_ID_KEY;
use courier_fuzz::{ArbitraryMessage, sorted_by_key};
use lapin::BasicProperties;
use lapin::protocol::basic::{gen_properties, parse_properties};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    message: ArbitraryMessage,
    persistent: bool,
    requeued: Option<u32>,
    /// Raw properties, as another client may send them.
    raw: Vec<u8>,
}

fn encode(p: &BasicProperties) -> Vec<u8> {
    cookie_factory::gen_simple(gen_properties(p), Vec::new()).expect("properties serialize")
}

fuzz_target!(|input: Input| {
    let m = input.message.0;
    let long = |s: &str| s.len() > MAX_SHORT_STRING;
    let refused = long(&m.topic)
        || m.content_type.as_deref().is_some_and(long)
        || m.reply_to.as_deref().is_some_and(long)
        || m.metadata
            .iter()
            .any(|(k, _)| long(k) || k == ATTEMPT_HEADER || k == TOPIC_HEADER);
    let (correlation, headers): (Vec<_>, Vec<_>) = m
        .metadata
        .iter()
        .cloned()
        .partition(|(k, _)| k == CORRELATION_ID_KEY);
    // One correlation_id property, a short string.
    let refused = refused || correlation.len() > 1 || correlation.iter().any(|(_, v)| long(v));
    match to_properties(&m, input.persistent, input.requeued) {
        Err(e) => {
            assert!(refused, "refused a message AMQP can carry: {e}\n{m:?}");
            assert_eq!(e.kind(), ErrorKind::Invalid, "{e:?}");
        }
        Ok(p) => {
            assert!(!refused, "accepted a message AMQP cannot carry: {m:?}");
            let bytes = encode(&p);
            let (rest, parsed) = parse_properties(&bytes[..]).expect("own properties parse");
            assert!(rest.is_empty());
            assert_eq!(parsed, p);
            // A requeued message arrives under its queue's name.
            let routing_key = if input.requeued.is_some() {
                "courier.group.queue"
            } else {
                m.topic.as_str()
            };
            let (back, attempt) = from_delivery(routing_key, &parsed, m.data.to_vec());
            let mut expected = m.clone();
            expected.metadata = sorted_by_key(&headers);
            expected.metadata.extend(correlation);
            assert_eq!(back, expected);
            assert_eq!(attempt, input.requeued);
        }
    }

    if let Ok((_, p)) = parse_properties(&input.raw[..]) {
        let _ = from_delivery("t", &p, Vec::new());
    }
});
