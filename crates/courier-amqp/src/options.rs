//! Client options of the AMQP backend (`[clients.NAME.options]`).

use std::collections::BTreeMap;
use std::time::Duration;

use courier_broker::BrokerError;

/// Every key of `[clients.NAME.options]` the AMQP backend understands.
pub const CLIENT_OPTION_KEYS: &[&str] = &["exchange", "durable", "prefetch", "connect-timeout-ms"];

/// Parsed client options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmqpOptions {
    /// The topic exchange every message goes through (default `courier`).
    pub exchange: String,
    /// Durable exchange and group queues, persistent messages (default true).
    pub durable: bool,
    /// Unacknowledged deliveries per subscription (basic.qos); by default
    /// sized from the guest's batch size and concurrency.
    pub prefetch: Option<u16>,
    /// Deadline of connecting and of each publisher confirm.
    pub connect_timeout: Duration,
}

fn invalid(key: &str, what: &str, value: &str) -> BrokerError {
    BrokerError::Invalid(format!("amqp option `{key}`: {what}, got `{value}`"))
}

impl AmqpOptions {
    /// Parses options, naming any unknown key or bad value.
    pub fn parse(options: &BTreeMap<String, String>) -> Result<Self, BrokerError> {
        if let Some(k) = options
            .keys()
            .find(|k| !CLIENT_OPTION_KEYS.contains(&k.as_str()))
        {
            return Err(BrokerError::Invalid(format!(
                "unknown amqp option `{k}` (known: {})",
                CLIENT_OPTION_KEYS.join(", ")
            )));
        }
        let get = |k: &str| options.get(k).map(String::as_str);
        let durable = match get("durable").unwrap_or("true") {
            "true" => true,
            "false" => false,
            v => return Err(invalid("durable", "expected true or false", v)),
        };
        let prefetch = match get("prefetch") {
            None => None,
            Some(v) => Some(
                parse_prefetch(v).ok_or_else(|| invalid("prefetch", "expected 1 to 65535", v))?,
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
        let exchange = get("exchange").unwrap_or("courier").to_string();
        if exchange.is_empty() {
            return Err(invalid("exchange", "expected a name", ""));
        }
        Ok(Self {
            exchange,
            durable,
            prefetch,
            connect_timeout,
        })
    }
}

/// A prefetch count: 1 to 65535.
pub fn parse_prefetch(v: &str) -> Option<u16> {
    v.parse().ok().filter(|n| *n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_names_bad_keys() {
        let o = AmqpOptions::parse(&BTreeMap::new()).unwrap();
        assert_eq!(
            (o.exchange.as_str(), o.durable, o.prefetch),
            ("courier", true, None)
        );
        let bad = |k: &str, v: &str| {
            AmqpOptions::parse(&[(k.to_string(), v.to_string())].into_iter().collect())
                .unwrap_err()
                .to_string()
        };
        assert!(bad("exchang", "x").contains("`exchang`"));
        assert!(bad("prefetch", "0").contains("`prefetch`"));
        assert!(bad("durable", "maybe").contains("`durable`"));
    }
}
