//! Channels ↔ MQTT topics, and message fields ↔ MQTT 5 properties.
//!
//! Channel `a.b.c` is the MQTT topic `a/b/c`; in patterns `*` is `+` and `>`
//! is `#` (which MQTT also lets match the parent level, so deliveries are
//! matched again in NATS syntax). `content-type` is the MQTT 5 content type,
//! `reply-to` the response topic (in channel form), metadata the user
//! properties (repeated keys and their order kept).

use courier_broker::{Message, Pattern};
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

/// The properties of `m`.
pub fn to_properties(m: &Message) -> PublishProperties {
    PublishProperties {
        content_type: m.content_type.clone(),
        response_topic: m.reply_to.as_deref().map(to_topic),
        user_properties: m.metadata.clone(),
        ..Default::default()
    }
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
        let mut p = Publish::new(
            to_topic(&m.topic),
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            "x",
            None,
        );
        p.properties = Some(to_properties(&m));
        assert_eq!(from_publish(&p), m);
        let pat = Pattern::parse("a.*.>").unwrap();
        assert_eq!(to_filter(&pat, None), "a/+/#");
        assert_eq!(to_filter(&pat, Some("g")), "$share/g/a/+/#");
    }
}
