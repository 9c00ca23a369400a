//! Redis Streams: message → entry fields → the `XREADGROUP` reply Redis
//! sends back → message. Streams carry every message exactly (docs/backends.md:
//! fields `meta:KEY`, in order). Any RESP reply, and any fields another tool
//! may have written, decode without a panic.
#![no_main]

use arbitrary::Arbitrary;
use courier_fuzz::ArbitraryMessage;
use courier_redis::fields::{from_fields, to_fields};
use courier_redis::streams::read_reply;
use libfuzzer_sys::fuzz_target;
use redis::Value;

#[derive(Debug, Arbitrary)]
struct Input {
    message: ArbitraryMessage,
    /// Fields as another tool may write them.
    foreign: Vec<(String, Vec<u8>)>,
    /// A raw RESP reply.
    resp: Vec<u8>,
}

/// The RESP2 reply of `XREADGROUP` with one entry in one stream.
fn reply(stream: &str, id: &str, fields: Vec<(String, Vec<u8>)>) -> Value {
    let flat = fields
        .into_iter()
        .flat_map(|(k, v)| [Value::BulkString(k.into_bytes()), Value::BulkString(v)])
        .collect();
    let entry = Value::Array(vec![Value::BulkString(id.into()), Value::Array(flat)]);
    Value::Array(vec![Value::Array(vec![
        Value::BulkString(stream.into()),
        Value::Array(vec![entry]),
    ])])
}

fuzz_target!(|input: Input| {
    let m = input.message.0;
    let entries = read_reply(&reply("courier:s", "1-0", to_fields(&m)));
    assert_eq!(entries.len(), 1);
    let (id, fields) = entries.into_iter().next().expect("one entry");
    assert_eq!(id, "1-0");
    assert_eq!(from_fields(&m.topic, fields), m);

    let data_fields: Vec<&Vec<u8>> = input
        .foreign
        .iter()
        .filter(|(k, _)| k == "data")
        .map(|(_, v)| v)
        .collect();
    let back = from_fields("t", input.foreign.clone());
    if let Some(last) = data_fields.last() {
        assert_eq!(&back.data[..], &last[..]);
    }
    assert_eq!(
        back.metadata.len(),
        input
            .foreign
            .iter()
            .filter(|(k, _)| k.starts_with("meta:"))
            .count()
    );

    if let Ok(v) = redis::parse_redis_value(&input.resp) {
        for (_, fields) in read_reply(&v) {
            let _ = from_fields("t", fields);
        }
    }
});
