//! MQTT 5: message → PUBLISH packet bytes → packet → message. Whatever
//! `to_publish` accepts comes back equal (docs/backends.md: user properties
//! in order, `.` ↔ `/`), except that the correlation (`correlation-id` or
//! `correlation-id-hex`) comes back last, as `correlation-id` when its bytes
//! are an MQTT string and as lowercase `correlation-id-hex` otherwise; what
//! it refuses is exactly what MQTT cannot carry, refused with an error. Any
//! bytes read as packets decode without a panic.
#![no_main]

use arbitrary::Arbitrary;
use bytes::BytesMut;
use courier_broker::ErrorKind;
use courier_broker::message::{CORRELATION_HEX_KEY, CORRELATION_ID_KEY};
use courier_fuzz::ArbitraryMessage;
use courier_mqtt::topics::{MAX_STRING, from_publish, to_publish};
use libfuzzer_sys::fuzz_target;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, Publish};

#[derive(Debug, Arbitrary)]
struct Input {
    message: ArbitraryMessage,
    /// Bytes as a broker may send them.
    raw: Vec<u8>,
}

/// What an MQTT string must not be: longer than its 16-bit length, or
/// holding a control character (U+0000 is forbidden; Mosquitto drops a
/// client that sends the others, so Courier refuses them all).
fn bad_string(s: &str) -> bool {
    s.len() > MAX_STRING || s.chars().any(char::is_control)
}

fn bad_topic(s: &str) -> bool {
    s.is_empty() || s.contains(['/', '+', '#']) || bad_string(s)
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

fn is_correlation(key: &str) -> bool {
    key == CORRELATION_ID_KEY || key == CORRELATION_HEX_KEY
}

/// The correlation data of `metadata`, or `Err` if MQTT cannot carry it.
fn correlation_data(metadata: &[(String, String)]) -> Result<Option<Vec<u8>>, ()> {
    let entries: Vec<_> = metadata.iter().filter(|(k, _)| is_correlation(k)).collect();
    match entries[..] {
        [] => Ok(None),
        [(k, v)] if k == CORRELATION_ID_KEY && !bad_string(v) => Ok(Some(v.as_bytes().to_vec())),
        [(k, v)] if k == CORRELATION_HEX_KEY => match unhex(v) {
            Some(data) if data.len() <= MAX_STRING => Ok(Some(data)),
            _ => Err(()),
        },
        _ => Err(()),
    }
}

fuzz_target!(|input: Input| {
    let m = input.message.0;
    let correlation = correlation_data(&m.metadata);
    let refused = bad_topic(&m.topic)
        || m.reply_to.as_deref().is_some_and(bad_topic)
        || m.content_type.as_deref().is_some_and(bad_string)
        || m.metadata
            .iter()
            .any(|(k, v)| bad_string(k) || (!is_correlation(k) && bad_string(v)))
        || correlation.is_err();
    match to_publish(&m) {
        Err(e) => {
            assert!(refused, "refused a message MQTT can carry: {e}\n{m:?}");
            assert_eq!(e.kind(), ErrorKind::Invalid, "{e:?}");
        }
        Ok((topic, properties)) => {
            assert!(!refused, "accepted a message MQTT cannot carry: {m:?}");
            let mut publish =
                Publish::new(topic, QoS::AtLeastOnce, m.data.clone(), Some(properties));
            publish.pkid = 1;
            let mut wire = BytesMut::new();
            Packet::Publish(publish)
                .write(&mut wire, None)
                .expect("a PUBLISH within limits is written");
            let Packet::Publish(read) = Packet::read(&mut wire, None).expect("own packet reads")
            else {
                panic!("not read back as a PUBLISH");
            };
            assert!(wire.is_empty());
            let mut expected = m.clone();
            expected.metadata.retain(|(k, _)| !is_correlation(k));
            if let Ok(Some(data)) = correlation {
                expected
                    .metadata
                    .push(match String::from_utf8(data.clone()) {
                        Ok(s) if !s.contains('\0') => (CORRELATION_ID_KEY.to_string(), s),
                        _ => (
                            CORRELATION_HEX_KEY.to_string(),
                            data.iter().map(|b| format!("{b:02x}")).collect(),
                        ),
                    });
            }
            assert_eq!(from_publish(&read), expected);
        }
    }

    let mut raw = BytesMut::from(&input.raw[..]);
    while let Ok(packet) = Packet::read(&mut raw, Some(1 << 20)) {
        if let Packet::Publish(p) = packet {
            let _ = from_publish(&p);
        }
    }
});
