//! Client options of the Redis backend (`[clients.NAME.options]`).

use std::collections::BTreeMap;
use std::time::Duration;

use courier_broker::BrokerError;
use courier_broker::options::OptionMap;

/// Every key of `[clients.NAME.options]` the Redis backend understands.
pub const CLIENT_OPTION_KEYS: &[&str] = &["streams", "maxlen", "key-prefix", "connect-timeout-ms"];

/// Parsed client options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisOptions {
    /// Use Streams (durable) instead of pub/sub.
    pub streams: bool,
    /// Approximate length each stream is trimmed to on `XADD` (`MAXLEN ~`).
    pub maxlen: Option<u64>,
    /// Prefix of stream keys: channel `a.b` is the stream `{prefix}a.b`.
    pub key_prefix: String,
    /// Deadline of connecting and of each command.
    pub connect_timeout: Duration,
}

impl RedisOptions {
    /// Parses options, naming any unknown key or bad value.
    pub fn parse(options: &BTreeMap<String, String>) -> Result<Self, BrokerError> {
        let o = OptionMap::new("redis", options, CLIENT_OPTION_KEYS)?;
        let streams = o.flag("streams", false)?;
        o.require(&["maxlen", "key-prefix"], ("streams", streams))?;
        Ok(Self {
            streams,
            maxlen: o.positive("maxlen")?,
            key_prefix: o.get("key-prefix").unwrap_or("").to_string(),
            connect_timeout: o.millis("connect-timeout-ms", Duration::from_secs(5))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<RedisOptions, BrokerError> {
        RedisOptions::parse(
            &pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn parses_and_names_bad_keys() {
        assert!(!parse(&[]).unwrap().streams);
        let o = parse(&[("streams", "true"), ("maxlen", "1000")]).unwrap();
        assert_eq!((o.streams, o.maxlen), (true, Some(1000)));
        assert!(
            parse(&[("stream", "true")])
                .unwrap_err()
                .to_string()
                .contains("`stream`")
        );
        assert!(
            parse(&[("maxlen", "10")])
                .unwrap_err()
                .to_string()
                .contains("needs `streams = true`")
        );
        assert!(
            parse(&[("streams", "true"), ("maxlen", "x")])
                .unwrap_err()
                .to_string()
                .contains("`maxlen`")
        );
    }
}
