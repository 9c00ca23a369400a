//! Client options of the Redis backend (`[clients.NAME.options]`) and the
//! subscription extensions it understands, as typed `serde` structs.

use std::num::NonZeroU64;

use courier_broker::BrokerError;
use courier_broker::factory::ConnectTimeout;
use serde::Deserialize;

/// `[clients.NAME.options]` of a `redis` client.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RedisOptions {
    /// Use Streams (durable) instead of pub/sub.
    pub streams: bool,
    /// Approximate length each stream is trimmed to on `XADD` (`MAXLEN ~`).
    pub maxlen: Option<NonZeroU64>,
    /// Prefix of stream keys: channel `a.b` is the stream `{prefix}a.b`.
    pub key_prefix: String,
    /// Deadline of connecting and of each command.
    #[serde(rename = "connect-timeout-ms")]
    pub connect_timeout: ConnectTimeout,
}

impl RedisOptions {
    /// Checks keys that depend on each other: `maxlen` and `key-prefix` are
    /// Streams settings.
    pub fn check(&self) -> Result<(), BrokerError> {
        if !self.streams && (self.maxlen.is_some() || !self.key_prefix.is_empty()) {
            let key = if self.maxlen.is_some() {
                "maxlen"
            } else {
                "key-prefix"
            };
            return Err(BrokerError::invalid(format!(
                "redis option `{key}` needs `streams = true`"
            )));
        }
        Ok(())
    }
}

/// Where a new consumer group starts reading a stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Start {
    /// Only entries added from now on (`$`).
    #[default]
    New,
    /// Every entry the stream holds (`0`).
    All,
}

/// Subscription extensions of the Redis backend (Streams only).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RedisExtensions {
    /// A named consumer group for a broadcast subscription, kept across
    /// restarts.
    pub durable: Option<String>,
    /// Where a new group starts: `new` or `all`.
    pub start: Option<Start>,
}

impl RedisExtensions {
    /// Whether any extension is set (pub/sub takes none).
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<RedisOptions, String> {
        let o: RedisOptions = toml::from_str(text).map_err(|e| e.to_string())?;
        o.check().map_err(|e| e.to_string())?;
        Ok(o)
    }

    #[test]
    fn parses_and_names_bad_keys() {
        assert!(!parse("").unwrap().streams);
        let o = parse("streams = true\nmaxlen = 1000").unwrap();
        assert_eq!((o.streams, o.maxlen), (true, NonZeroU64::new(1000)));
        assert!(parse("stream = true").unwrap_err().contains("stream"));
        assert!(
            parse("maxlen = 10")
                .unwrap_err()
                .contains("needs `streams = true`")
        );
        assert!(parse("streams = true\nmaxlen = \"x\"").is_err());
    }
}
