//! Client options of the Kafka backend (`[clients.NAME.options]`) and the
//! subscription extensions it understands, as typed `serde` structs.

use std::num::{NonZeroI32, NonZeroU32, NonZeroU64};

use courier_broker::BrokerError;
use courier_broker::factory::ConnectTimeout;
use serde::Deserialize;

/// `[clients.NAME.options]` of a `kafka` client.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct KafkaOptions {
    /// `client.id` of the producer and consumers (default `courier`).
    pub client_id: String,
    /// How many replicas must have a record before `send` returns:
    /// `all` (default), `leader` or `none`.
    pub acks: Acks,
    /// Compression of produced batches: `none` (default), `gzip`,
    /// `snappy` or `lz4`.
    pub compression: Compression,
    /// How long the producer waits to fill a batch, in milliseconds
    /// (librdkafka's `linger.ms`; default 5).
    pub linger_ms: u64,
    /// At most this many records in one produced batch (librdkafka's
    /// `batch.num.messages`; default 10000).
    pub batch_num_messages: NonZeroU32,
    /// Deadline of connecting and of each broker acknowledgement of a `send`.
    #[serde(rename = "connect-timeout-ms")]
    pub connect_timeout: ConnectTimeout,
    /// Create a topic on its first use (send, or subscription to a channel)
    /// when it does not exist yet (default true).
    pub create_topics: bool,
    /// Partitions of the topics Courier creates (default 1: one partition
    /// keeps a channel in order).
    pub partitions: NonZeroI32,
    /// Replication factor of the topics Courier creates (default: the
    /// broker's `default.replication.factor`).
    pub replication_factor: Option<NonZeroI32>,
    /// How often consumers refresh topic metadata, in milliseconds: how soon
    /// a new topic that matches a wildcard subscription is read (default 2000).
    pub metadata_refresh_ms: NonZeroU64,
    /// A consumer that has not reached the group coordinator for this long
    /// is taken out of its group, in milliseconds (default 10000).
    pub session_timeout_ms: NonZeroU64,
}

impl Default for KafkaOptions {
    fn default() -> Self {
        Self {
            client_id: "courier".into(),
            acks: Acks::All,
            compression: Compression::None,
            linger_ms: 5,
            batch_num_messages: NonZeroU32::new(10_000).expect("not zero"),
            connect_timeout: ConnectTimeout::default(),
            create_topics: true,
            partitions: NonZeroI32::new(1).expect("1 is not zero"),
            replication_factor: None,
            metadata_refresh_ms: NonZeroU64::new(2000).expect("not zero"),
            session_timeout_ms: NonZeroU64::new(10_000).expect("not zero"),
        }
    }
}

impl KafkaOptions {
    /// Checks what the types cannot.
    pub fn check(&self) -> Result<(), BrokerError> {
        if self.client_id.is_empty()
            || !self
                .client_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(BrokerError::invalid(format!(
                "kafka option `client-id`: expected letters, digits, `.`, `_` or `-`, got `{}`",
                self.client_id
            )));
        }
        if self.partitions.get() < 0 {
            return Err(BrokerError::invalid(
                "kafka option `partitions`: expected a number above 0",
            ));
        }
        if self.replication_factor.is_some_and(|r| r.get() < 0) {
            return Err(BrokerError::invalid(
                "kafka option `replication-factor`: expected a number above 0",
            ));
        }
        if self.linger_ms > 900_000 {
            return Err(BrokerError::invalid(format!(
                "kafka option `linger-ms`: at most 900000, got {}",
                self.linger_ms
            )));
        }
        if self.batch_num_messages.get() > 1_000_000 {
            return Err(BrokerError::invalid(format!(
                "kafka option `batch-num-messages`: at most 1000000, got {}",
                self.batch_num_messages
            )));
        }
        if !(1_000..=3_600_000).contains(&self.session_timeout_ms.get()) {
            return Err(BrokerError::invalid(format!(
                "kafka option `session-timeout-ms`: expected 1000 to 3600000, got {}",
                self.session_timeout_ms
            )));
        }
        Ok(())
    }
}

/// Producer acknowledgements (`acks`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Acks {
    /// Every in-sync replica has the record (`acks=all`).
    #[default]
    All,
    /// The partition leader has it (`acks=1`).
    Leader,
    /// No acknowledgement (`acks=0`): `send` returns once the record is
    /// written to the socket; it may be lost.
    None,
}

impl Acks {
    /// librdkafka's value.
    pub fn as_config(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Leader => "1",
            Self::None => "0",
        }
    }
}

/// Producer compression (`compression.codec`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Compression {
    /// None.
    #[default]
    None,
    /// gzip.
    Gzip,
    /// Snappy.
    Snappy,
    /// LZ4.
    Lz4,
}

impl Compression {
    /// librdkafka's value.
    pub fn as_config(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Gzip => "gzip",
            Self::Snappy => "snappy",
            Self::Lz4 => "lz4",
        }
    }
}

/// Subscription extensions of the Kafka backend.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct KafkaExtensions {
    /// Where a consumer group without a committed offset starts reading a
    /// partition. By default a point-to-point group starts at the earliest
    /// offset (nothing published before its first member joined is
    /// skipped) and a pub-sub subscription at the time it subscribed.
    pub start: Option<Start>,
}

/// Where a subscription without a committed offset starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Start {
    /// The oldest record the broker keeps.
    Earliest,
    /// The next record published after the partition is assigned.
    Latest,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<KafkaOptions, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    #[test]
    fn parses_defaults_and_names_bad_keys() {
        let o = parse("").unwrap();
        assert_eq!(o, KafkaOptions::default());
        assert_eq!(o.acks.as_config(), "all");
        assert!(o.check().is_ok());
        let o = parse("acks = \"leader\"\ncompression = \"lz4\"\nlinger-ms = 20").unwrap();
        assert_eq!(
            (o.acks.as_config(), o.compression.as_config(), o.linger_ms),
            ("1", "lz4", 20)
        );
        assert!(parse("ack = \"all\"").unwrap_err().contains("ack"));
        assert!(parse("acks = \"some\"").unwrap_err().contains("acks"));
        assert!(parse("compression = \"zstd\"").is_err());
        assert!(parse("partitions = 0").is_err());
        assert!(parse("batch-num-messages = 0").is_err());
        assert!(
            parse("batch-num-messages = 2000000")
                .unwrap()
                .check()
                .is_err()
        );
        assert_eq!(
            parse("batch-num-messages = 1")
                .unwrap()
                .batch_num_messages
                .get(),
            1
        );
        assert!(parse("connect-timeout-ms = 0").is_err());
        let e = parse("client-id = \"a b\"").unwrap().check().unwrap_err();
        assert!(e.to_string().contains("client-id"), "{e}");
        assert!(parse("partitions = -2").unwrap().check().is_err());
        assert!(parse("session-timeout-ms = 10").unwrap().check().is_err());
    }

    #[test]
    fn extensions_parse_from_text() {
        let mut map = std::collections::BTreeMap::new();
        let e: KafkaExtensions = courier_broker::extensions::parse("kafka", &map).unwrap();
        assert_eq!(e.start, None);
        map.insert("start".to_string(), "earliest".to_string());
        let e: KafkaExtensions = courier_broker::extensions::parse("kafka", &map).unwrap();
        assert_eq!(e.start, Some(Start::Earliest));
        map.insert("start".to_string(), "never".to_string());
        assert!(courier_broker::extensions::parse::<KafkaExtensions>("kafka", &map).is_err());
        map.clear();
        map.insert("offset".to_string(), "1".to_string());
        let e = courier_broker::extensions::parse::<KafkaExtensions>("kafka", &map).unwrap_err();
        assert!(e.to_string().contains("offset"), "{e}");
    }
}
