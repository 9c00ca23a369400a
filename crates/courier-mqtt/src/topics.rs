//! Channels ↔ MQTT topics, and message fields ↔ MQTT 5 properties.
//!
//! Channel `a.b.c` is the MQTT topic `a/b/c`; in patterns `*` is `+` and `>`
//! is `#` (which MQTT also lets match the parent level, so deliveries are
//! matched again in NATS syntax). `content-type` is the MQTT 5 content type,
//! `reply-to` the response topic (in channel form), metadata the user
//! properties (repeated keys and their order kept).
//!
//! What MQTT cannot carry is refused by [`to_publish`] with
//! [`BrokerError::Invalid`] naming the field: a channel or reply-to with `/`
//! (it would come back with `.`), `+` or `#` (wildcards are not topic names),
//! or that is empty; any string (topic, content type, metadata key or value)
//! longer than 65,535 bytes (MQTT's length prefix) or holding U+0000.

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

/// The MQTT topic filter of a pattern; with `group`, a shared subscription.
pub fn to_filter(pattern: &Pattern, group: Option<&str>) -> String {
    match group {
        Some(g) => format!("$share/{g}/{}", pattern.to_mqtt()),
        None => pattern.to_mqtt(),
    }
}

/// Largest MQTT string, in bytes (its length is a 16-bit prefix).
pub const MAX_STRING: usize = u16::MAX as usize;

fn check_string(what: &str, s: &str) -> Result<(), BrokerError> {
    if s.len() > MAX_STRING {
        return Err(BrokerError::Invalid(format!(
            "{what} is {} bytes long; MQTT strings are at most {MAX_STRING}",
            s.len()
        )));
    }
    if s.contains('\0') {
        return Err(BrokerError::Invalid(format!(
            "{what} contains U+0000, which MQTT strings must not"
        )));
    }
    Ok(())
}

fn topic_name(what: &str, channel: &str) -> Result<String, BrokerError> {
    if channel.is_empty() {
        return Err(BrokerError::Invalid(format!("{what} is empty")));
    }
    if let Some(c) = channel.chars().find(|c| matches!(c, '/' | '+' | '#')) {
        return Err(BrokerError::Invalid(format!(
            "{what} `{channel}` contains `{c}`, which an MQTT topic cannot carry \
             (levels are separated by `.`)"
        )));
    }
    let topic = to_topic(channel);
    check_string(what, &topic)?;
    Ok(topic)
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
    for (k, v) in &m.metadata {
        check_string("a metadata key", k)?;
        check_string(&format!("the value of metadata key `{k}`"), v)?;
    }
    let properties = PublishProperties {
        content_type: m.content_type.clone(),
        response_topic,
        user_properties: m.metadata.clone(),
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
        // A length above u16::MAX used to wrap in the 16-bit length prefix,
        // which corrupted the packet.
        let mut m = Message::new("a", "x");
        m.metadata = vec![("k".into(), "v".repeat(MAX_STRING + 1))];
        let e = refused(&m);
        assert!(e.contains("`k`") && e.contains("65536 bytes"), "{e}");
        m.metadata = vec![("k".into(), "v".repeat(MAX_STRING))];
        assert!(to_publish(&m).is_ok());
    }
}
