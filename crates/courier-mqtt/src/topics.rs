//! Channels ↔ MQTT topics, and message fields ↔ MQTT 5 properties.
//!
//! Channel `a.b.c` is the MQTT topic `a/b/c`; in patterns `*` is `+` and `>`
//! is `#` (which MQTT also lets match the parent level, so deliveries are
//! matched again in NATS syntax). `content-type` is the MQTT 5 content type,
//! `reply-to` the response topic (in channel form), metadata the user
//! properties (repeated keys and their order kept), except the correlation
//! data: the metadata entry `correlation-id` (its UTF-8 bytes) or
//! `correlation-id-hex` (hex-encoded bytes). Correlation data that is a
//! string MQTT could carry (UTF-8 without U+0000) comes back as
//! `correlation-id`, any other as `correlation-id-hex` in lowercase; either
//! way after the other metadata.
//!
//! What MQTT cannot carry is refused by [`to_publish`] with an
//! [`ErrorKind::Invalid`](courier_broker::ErrorKind::Invalid) error naming the
//! field: a channel or reply-to with `/` (it would come back with `.`), `+` or `#` (wildcards are not topic names),
//! or that is empty; any string (topic, content type, metadata key or value,
//! `correlation-id`) longer than 65,535 bytes (MQTT's length prefix) or
//! holding U+0000; a `correlation-id-hex` that is not hex or decodes to more
//! than 65,535 bytes; and more than one correlation (`correlation-id` or
//! `correlation-id-hex` repeated, or both), as the property holds one value.

use bytes::Bytes;
use courier_broker::message::{CORRELATION_HEX_KEY, CORRELATION_ID_KEY};
use courier_broker::{BrokerError, Message, Pattern};
use rumqttc::v5::mqttbytes::v5::{Publish, PublishProperties};

/// The MQTT topic of a channel.
pub fn to_topic(channel: &str) -> String {
    channel.replace('.', "/")
}

/// The channel of an MQTT topic.
pub fn to_channel(topic: &str) -> String {
    topic.replace('/', ".")
}

/// The MQTT topic filter of a pattern (`/` separators, `+` and `#`
/// wildcards); with `group`, a shared subscription.
pub fn to_filter(pattern: &Pattern, group: Option<&str>) -> String {
    let filter = pattern.render("/", "+", "#");
    match group {
        Some(g) => format!("$share/{g}/{filter}"),
        None => filter,
    }
}

/// Largest MQTT string, in bytes (its length is a 16-bit prefix).
pub const MAX_STRING: usize = u16::MAX as usize;

/// An MQTT string: at most [`MAX_STRING`] bytes, no control characters
/// (U+0000 is forbidden; Mosquitto drops a client that sends the others).
fn check_string(what: &str, s: &str) -> Result<(), BrokerError> {
    courier_broker::message::check_text(what, s, MAX_STRING)
}

fn topic_name(what: &str, channel: &str) -> Result<String, BrokerError> {
    if channel.is_empty() {
        return Err(BrokerError::invalid(format!("{what} is empty")));
    }
    if let Some(c) = channel.chars().find(|c| matches!(c, '/' | '+' | '#')) {
        return Err(BrokerError::invalid(format!(
            "{what} `{channel}` contains `{c}`, which an MQTT topic cannot carry \
             (levels are separated by `.`)"
        )));
    }
    let topic = to_topic(channel);
    check_string(what, &topic)?;
    Ok(topic)
}

/// `data` in lowercase hex.
fn hex(data: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(data.len() * 2);
    for b in data {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// The bytes of a hex string (either case), or `None` if it is not one.
fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| char::from(c).to_digit(16);
    s.as_bytes()
        .chunks_exact(2)
        .map(|pair| Some(((digit(pair[0])? << 4) | digit(pair[1])?) as u8))
        .collect()
}

/// The metadata entry of correlation data: see the module documentation.
fn correlation_entry(data: &[u8]) -> (String, String) {
    match std::str::from_utf8(data) {
        Ok(s) if !s.contains('\0') => (CORRELATION_ID_KEY.to_string(), s.to_string()),
        _ => (CORRELATION_HEX_KEY.to_string(), hex(data)),
    }
}

/// The MQTT topic and properties of `m`.
///
/// Refuses, naming the field, what MQTT cannot carry (see the module
/// documentation) instead of sending a corrupt or different packet.
pub fn to_publish(m: &Message) -> Result<(String, PublishProperties), BrokerError> {
    let topic = topic_name("channel", &m.topic)?;
    let response_topic = match &m.reply_to {
        Some(r) => Some(topic_name("reply-to", r)?),
        None => None,
    };
    if let Some(ct) = &m.content_type {
        check_string("content-type", ct)?;
    }
    let mut correlation_data = None;
    let mut user_properties = Vec::with_capacity(m.metadata.len());
    for (k, v) in &m.metadata {
        check_string("a metadata key", k)?;
        let what = format!("the value of metadata key `{k}`");
        let data = match k.as_str() {
            CORRELATION_ID_KEY => {
                check_string(&what, v)?;
                Bytes::from(v.clone())
            }
            CORRELATION_HEX_KEY => {
                let data = unhex(v).ok_or_else(|| {
                    BrokerError::invalid(format!("{what} is not hex-encoded bytes"))
                })?;
                if data.len() > MAX_STRING {
                    return Err(BrokerError::invalid(format!(
                        "{what} decodes to {} bytes; MQTT correlation data is at most \
                         {MAX_STRING}",
                        data.len()
                    )));
                }
                Bytes::from(data)
            }
            _ => {
                check_string(&what, v)?;
                user_properties.push((k.clone(), v.clone()));
                continue;
            }
        };
        if correlation_data.replace(data).is_some() {
            return Err(BrokerError::invalid(format!(
                "metadata key `{k}` gives a second correlation; MQTT's correlation \
                 data holds one value (one `{CORRELATION_ID_KEY}` or \
                 `{CORRELATION_HEX_KEY}`)"
            )));
        }
    }
    let properties = PublishProperties {
        content_type: m.content_type.clone(),
        response_topic,
        correlation_data,
        user_properties,
        ..Default::default()
    };
    Ok((topic, properties))
}

/// The message a PUBLISH carries.
pub fn from_publish(p: &Publish) -> Message {
    let mut m = Message::new(
        to_channel(&String::from_utf8_lossy(&p.topic)),
        p.payload.clone(),
    );
    if let Some(props) = &p.properties {
        m.content_type = props.content_type.clone();
        m.reply_to = props.response_topic.as_deref().map(to_channel);
        m.metadata = props.user_properties.clone();
        if let Some(data) = &props.correlation_data {
            m.metadata.push(correlation_entry(data));
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_filters() {
        let m = Message {
            topic: "a.b".into(),
            content_type: Some("text/plain".into()),
            reply_to: Some("r.1".into()),
            data: "x".into(),
            metadata: vec![("k".into(), "1".into()), ("k".into(), "2".into())],
        };
        let (topic, properties) = to_publish(&m).unwrap();
        let mut p = Publish::new(topic, rumqttc::v5::mqttbytes::QoS::AtLeastOnce, "x", None);
        p.properties = Some(properties);
        assert_eq!(from_publish(&p), m);
        let pat = Pattern::parse("a.*.>").unwrap();
        assert_eq!(to_filter(&pat, None), "a/+/#");
        assert_eq!(to_filter(&pat, Some("g")), "$share/g/a/+/#");
    }

    /// `m` sent and received: to PUBLISH properties and back.
    fn through(m: &Message) -> (PublishProperties, Message) {
        let (topic, properties) = to_publish(m).unwrap();
        let qos = rumqttc::v5::mqttbytes::QoS::AtLeastOnce;
        let p = Publish::new(topic, qos, m.data.clone(), Some(properties.clone()));
        (properties, from_publish(&p))
    }

    #[test]
    fn correlation_is_the_correlation_data() {
        let mut m = Message::new("a", "x");
        m.reply_to = Some("replies".into());
        m.metadata = vec![
            (CORRELATION_ID_KEY.into(), "req-42".into()),
            ("trace".into(), "7".into()),
        ];
        let (properties, back) = through(&m);
        assert_eq!(properties.correlation_data.as_deref(), Some(&b"req-42"[..]));
        assert_eq!(properties.user_properties, [("trace".into(), "7".into())]);
        // Back as exactly one entry, after the user properties.
        let expected: Vec<(String, String)> = vec![
            ("trace".into(), "7".into()),
            (CORRELATION_ID_KEY.into(), "req-42".into()),
        ];
        assert_eq!(back.metadata, expected);

        // Bytes that are not an MQTT string go both ways through the hex key.
        for data in [&[0xff, 0x00, 0x9a][..], b"a\0b"] {
            let properties = PublishProperties {
                correlation_data: Some(Bytes::copy_from_slice(data)),
                ..Default::default()
            };
            let qos = rumqttc::v5::mqttbytes::QoS::AtLeastOnce;
            let p = Publish::new("a", qos, "x", Some(properties));
            let m = from_publish(&p);
            assert_eq!(m.metadata, [(CORRELATION_HEX_KEY.into(), hex(data))]);
            let (properties, back) = through(&m);
            assert_eq!(properties.correlation_data.as_deref(), Some(data));
            assert!(properties.user_properties.is_empty());
            assert_eq!(back, m);
        }
        assert_eq!(hex(&[0xff, 0x00, 0x9a]), "ff009a");
        // Hex of a string, or in upper case, is still the same bytes.
        let mut m = Message::new("a", "x");
        m.metadata = vec![(CORRELATION_HEX_KEY.into(), "4A6b".into())];
        let (properties, back) = through(&m);
        assert_eq!(properties.correlation_data.as_deref(), Some(&b"Jk"[..]));
        assert_eq!(back.meta(CORRELATION_ID_KEY), Some("Jk"));
    }

    #[test]
    fn what_mqtt_cannot_carry_is_refused() {
        let refused = |m: &Message| to_publish(m).unwrap_err().to_string();
        for (channel, bad) in [("a/b", "/"), ("a.+", "+"), ("#", "#")] {
            let e = refused(&Message::new(channel, "x"));
            assert!(e.contains("channel") && e.contains(bad), "{e}");
        }
        let mut m = Message::new("a", "x");
        m.reply_to = Some("replies/1".into());
        assert!(refused(&m).contains("reply-to"));
        m.reply_to = Some(String::new());
        assert!(refused(&m).contains("reply-to is empty"));
        let mut m = Message::new("a", "x");
        m.content_type = Some("text\0plain".into());
        assert!(refused(&m).contains("U+0000"));
        // Mosquitto drops a client that sends other control characters.
        m.content_type = None;
        m.metadata = vec![("cmd".into(), "a\u{1}b".into())];
        assert!(refused(&m).contains("U+0001"));
        // A length above u16::MAX used to wrap in the 16-bit length prefix,
        // which corrupted the packet.
        let mut m = Message::new("a", "x");
        m.metadata = vec![("k".into(), "v".repeat(MAX_STRING + 1))];
        let e = refused(&m);
        assert!(e.contains("`k`") && e.contains("65536 bytes"), "{e}");
        m.metadata = vec![("k".into(), "v".repeat(MAX_STRING))];
        assert!(to_publish(&m).is_ok());
        // Correlation data holds one value, of at most 65,535 bytes.
        for (key, value) in [
            (CORRELATION_ID_KEY, "c".repeat(MAX_STRING + 1)),
            (CORRELATION_HEX_KEY, "ab".repeat(MAX_STRING + 1)),
        ] {
            m.metadata = vec![(key.into(), value)];
            let e = refused(&m);
            assert!(
                e.contains(&format!("`{key}`")) && e.contains("65536 bytes"),
                "{e}"
            );
        }
        m.metadata = vec![(CORRELATION_ID_KEY.into(), "a\0b".into())];
        let e = refused(&m);
        assert!(
            e.contains("`correlation-id`") && e.contains("U+0000"),
            "{e}"
        );
        for bad in ["abc", "zz", "0x12", "é1"] {
            m.metadata = vec![(CORRELATION_HEX_KEY.into(), bad.into())];
            let e = refused(&m);
            assert!(
                e.contains("`correlation-id-hex`") && e.contains("not hex"),
                "{e}"
            );
        }
        for keys in [
            [CORRELATION_ID_KEY, CORRELATION_ID_KEY],
            [CORRELATION_HEX_KEY, CORRELATION_HEX_KEY],
            [CORRELATION_ID_KEY, CORRELATION_HEX_KEY],
        ] {
            m.metadata = keys.map(|k| (k.to_string(), "ab".to_string())).to_vec();
            let e = refused(&m);
            assert!(
                e.contains(&format!("`{}`", keys[1])) && e.contains("one value"),
                "{e}"
            );
        }
        m.metadata = vec![(CORRELATION_HEX_KEY.into(), "ab".repeat(MAX_STRING))];
        assert!(to_publish(&m).is_ok());
    }
}
