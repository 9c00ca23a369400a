//! Channels ↔ Kafka topics.
//!
//! A channel is its topic, unchanged. Kafka topic names are at most 249
//! characters of `[a-zA-Z0-9._-]`; a Courier channel may hold more (any
//! printable character but `/ + #` and white space, up to 255 bytes), so a
//! channel outside Kafka's set is refused with an
//! [`ErrorKind::Invalid`](courier_broker::ErrorKind::Invalid) error naming the
//! character. Wildcard patterns become regex subscriptions, which librdkafka
//! matches against the topics in the cluster's metadata: `*` is `[^.]+`, `>`
//! is `.+`, literal tokens are kept (their characters need no escaping).

use courier_broker::{BrokerError, Pattern};

/// The longest Kafka topic name.
pub const MAX_TOPIC_LEN: usize = 249;

/// Checks that a literal channel (or a literal token of a pattern) is a valid
/// Kafka topic name, explaining why not.
fn check_chars(what: &str, text: &str) -> Result<(), BrokerError> {
    match text
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        Some(c) => Err(BrokerError::invalid(format!(
            "{what} `{text}` contains {c:?}, which a Kafka topic name cannot: \
             only letters a-z and A-Z, digits, `.`, `_` and `-` are allowed"
        ))),
        None => Ok(()),
    }
}

/// The topic of channel `channel`: the channel itself, when Kafka allows it.
pub fn topic(channel: &str) -> Result<&str, BrokerError> {
    check_chars("channel", channel)?;
    if channel.len() > MAX_TOPIC_LEN {
        return Err(BrokerError::invalid(format!(
            "channel `{channel}` is {} characters long: a Kafka topic name has at most {MAX_TOPIC_LEN}",
            channel.len()
        )));
    }
    if channel == "." || channel == ".." {
        return Err(BrokerError::invalid(format!(
            "channel `{channel}` cannot be a Kafka topic name"
        )));
    }
    Ok(channel)
}

/// What to subscribe to for `pattern`: a topic name for a literal channel,
/// else a librdkafka regex (it starts with `^`).
pub fn subscription(pattern: &Pattern) -> Result<String, BrokerError> {
    if pattern.is_literal() {
        return topic(pattern.as_str()).map(str::to_string);
    }
    let mut regex = String::from("^");
    for (i, token) in pattern.as_str().split('.').enumerate() {
        if i > 0 {
            regex.push_str("\\.");
        }
        match token {
            "*" => regex.push_str("[^.]+"),
            ">" => regex.push_str(".+"),
            literal => {
                check_chars(
                    &format!("channel pattern `{}`: token", pattern.as_str()),
                    literal,
                )?;
                regex.push_str(literal);
            }
        }
    }
    regex.push('$');
    Ok(regex)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(p: &str) -> Result<String, BrokerError> {
        subscription(&Pattern::parse(p).unwrap())
    }

    #[test]
    fn literal_channels_are_topics() {
        assert_eq!(topic("orders.eu-1_x").unwrap(), "orders.eu-1_x");
        assert_eq!(sub("orders.eu").unwrap(), "orders.eu");
    }

    #[test]
    fn channels_kafka_cannot_name_are_refused() {
        for bad in ["orders:eu", "caf\u{e9}", "a.b$", "x~y"] {
            let e = topic(bad).unwrap_err();
            assert_eq!(e.kind(), courier_broker::ErrorKind::Invalid);
            assert!(e.to_string().contains("Kafka topic"), "{e}");
        }
        let long = "a".repeat(250);
        assert!(topic(&long).unwrap_err().to_string().contains("249"));
        assert!(topic(&"a".repeat(249)).is_ok());
        assert!(sub("orders:eu.*").is_err());
    }

    #[test]
    fn patterns_become_anchored_regexes() {
        assert_eq!(sub("orders.*").unwrap(), "^orders\\.[^.]+$");
        assert_eq!(sub("orders.>").unwrap(), "^orders\\..+$");
        assert_eq!(sub(">").unwrap(), "^.+$");
        assert_eq!(sub("a.*.c").unwrap(), "^a\\.[^.]+\\.c$");
    }
}
