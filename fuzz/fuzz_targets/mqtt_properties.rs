//! MQTT 5: message → PUBLISH packet bytes → packet → message. Whatever
//! `to_publish` accepts comes back equal (docs/backends.md: user properties
//! in order, `.` ↔ `/`); what it refuses is exactly what MQTT cannot carry,
//! refused with an error. Any bytes read as packets decode without a panic.
#![no_main]

use arbitrary::Arbitrary;
use bytes::BytesMut;
use courier_broker::BrokerError;
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

fn bad_string(s: &str) -> bool {
    s.len() > MAX_STRING || s.contains('\0')
}

fn bad_topic(s: &str) -> bool {
    s.is_empty() || s.contains(['/', '+', '#']) || bad_string(s)
}

fuzz_target!(|input: Input| {
    let m = input.message.0;
    let refused = bad_topic(&m.topic)
        || m.reply_to.as_deref().is_some_and(bad_topic)
        || m.content_type.as_deref().is_some_and(bad_string)
        || m.metadata
            .iter()
            .any(|(k, v)| bad_string(k) || bad_string(v));
    match to_publish(&m) {
        Err(e) => {
            assert!(refused, "refused a message MQTT can carry: {e}\n{m:?}");
            assert!(matches!(e, BrokerError::Invalid(_)), "{e:?}");
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
            assert_eq!(from_publish(&read), m);
        }
    }

    let mut raw = BytesMut::from(&input.raw[..]);
    while let Ok(packet) = Packet::read(&mut raw, Some(1 << 20)) {
        if let Packet::Publish(p) = packet {
            let _ = from_publish(&p);
        }
    }
});
