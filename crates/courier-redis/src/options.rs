//! Client options of the Redis backend (`[clients.NAME.options]`).

use std::collections::BTreeMap;
use std::time::Duration;

use courier_broker::BrokerError;

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

fn invalid(key: &str, what: &str, value: &str) -> BrokerError {
    BrokerError::Invalid(format!("redis option `{key}`: {what}, got `{value}`"))
}

impl RedisOptions {
    /// Parses options, naming any unknown key or bad value.
    pub fn parse(options: &BTreeMap<String, String>) -> Result<Self, BrokerError> {
        if let Some(k) = options
            .keys()
            .find(|k| !CLIENT_OPTION_KEYS.contains(&k.as_str()))
        {
            return Err(BrokerError::Invalid(format!(
                "unknown redis option `{k}` (known: {})",
                CLIENT_OPTION_KEYS.join(", ")
            )));
        }
        let get = |k: &str| options.get(k).map(String::as_str);
        let streams = match get("streams").unwrap_or("false") {
            "true" => true,
            "false" => false,
            v => return Err(invalid("streams", "expected true or false", v)),
        };
        let maxlen = match get("maxlen") {
            None => None,
            Some(v) => Some(
                v.parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| invalid("maxlen", "expected a number above 0", v))?,
            ),
        };
        let connect_timeout = match get("connect-timeout-ms") {
            None => Duration::from_secs(5),
            Some(v) => Duration::from_millis(
                v.parse()
                    .ok()
                    .filter(|ms| *ms > 0)
                    .ok_or_else(|| invalid("connect-timeout-ms", "expected milliseconds", v))?,
            ),
        };
        if !streams
            && let Some(k) = ["maxlen", "key-prefix"]
                .iter()
                .find(|k| options.contains_key(**k))
        {
            return Err(BrokerError::Invalid(format!(
                "redis option `{k}` needs `streams = true`"
            )));
        }
        Ok(Self {
            streams,
            maxlen,
            key_prefix: get("key-prefix").unwrap_or("").to_string(),
            connect_timeout,
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
