//! Client options of the AMQP backend (`[clients.NAME.options]`) and the
//! subscription extensions it understands, as typed `serde` structs.

use std::num::NonZeroU16;

use courier_broker::BrokerError;
use courier_broker::factory::ConnectTimeout;
use serde::Deserialize;

/// `[clients.NAME.options]` of an `amqp` client.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct AmqpOptions {
    /// The topic exchange every message goes through (default `courier`).
    pub exchange: String,
    /// Durable exchange and group queues, persistent messages (default true).
    pub durable: bool,
    /// Unacknowledged deliveries per subscription (basic.qos); by default
    /// sized from the guest's batch size and concurrency.
    pub prefetch: Option<NonZeroU16>,
    /// Deadline of connecting and of each publisher confirm.
    #[serde(rename = "connect-timeout-ms")]
    pub connect_timeout: ConnectTimeout,
    /// The type of the named queues Courier declares (group queues and
    /// durable broadcast ones): `classic` (default) or `quorum` (replicated
    /// on the nodes of a cluster; needs `durable = true`).
    pub queue_type: QueueType,
}

/// The type of a queue (`x-queue-type`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum QueueType {
    /// A classic queue.
    #[default]
    Classic,
    /// A quorum queue: Raft-replicated, durable.
    Quorum,
}

impl Default for AmqpOptions {
    fn default() -> Self {
        Self {
            exchange: "courier".into(),
            durable: true,
            prefetch: None,
            connect_timeout: ConnectTimeout::default(),
            queue_type: QueueType::default(),
        }
    }
}

impl AmqpOptions {
    /// Checks what the types cannot.
    pub fn check(&self) -> Result<(), BrokerError> {
        if self.exchange.len() > crate::properties::MAX_SHORT_STRING {
            return Err(BrokerError::invalid(format!(
                "amqp option `exchange`: at most {} bytes",
                crate::properties::MAX_SHORT_STRING
            )));
        }
        if self.exchange.is_empty() {
            return Err(BrokerError::invalid(
                "amqp option `exchange`: expected a name, got ``",
            ));
        }
        if self.queue_type == QueueType::Quorum && !self.durable {
            return Err(BrokerError::invalid(
                "amqp option `queue-type = \"quorum\"` needs `durable = true` (quorum queues are durable)",
            ));
        }
        Ok(())
    }
}

/// Subscription extensions of the AMQP backend.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct AmqpExtensions {
    /// A named, durable queue for a broadcast subscription (kept across
    /// restarts) instead of an exclusive one.
    pub durable: Option<String>,
    /// Unacknowledged deliveries of this subscription (1 to 65535).
    pub prefetch: Option<NonZeroU16>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AmqpOptions, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    #[test]
    fn parses_and_names_bad_keys() {
        let o = parse("").unwrap();
        assert_eq!(
            (o.exchange.as_str(), o.durable, o.prefetch),
            ("courier", true, None)
        );
        assert!(parse("exchang = \"x\"").unwrap_err().contains("exchang"));
        assert!(parse("prefetch = 0").is_err());
        assert!(parse("durable = \"maybe\"").is_err());
        assert!(parse("exchange = \"\"").unwrap().check().is_err());
        assert_eq!(parse("").unwrap().queue_type, QueueType::Classic);
        let o = parse("queue-type = \"quorum\"").unwrap();
        assert_eq!(o.queue_type, QueueType::Quorum);
        assert!(o.check().is_ok());
        let e = parse("queue-type = \"quorum\"\ndurable = false")
            .unwrap()
            .check()
            .unwrap_err()
            .to_string();
        assert!(e.contains("queue-type"), "{e}");
        assert!(
            parse("queue-type = \"stream\"")
                .unwrap_err()
                .contains("queue-type")
        );
    }
}
