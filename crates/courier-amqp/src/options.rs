//! Client options of the AMQP backend (`[clients.NAME.options]`).

use std::collections::BTreeMap;
use std::time::Duration;

use courier_broker::BrokerError;
use courier_broker::options::OptionMap;

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

impl AmqpOptions {
    /// Parses options, naming any unknown key or bad value.
    pub fn parse(options: &BTreeMap<String, String>) -> Result<Self, BrokerError> {
        let o = OptionMap::new("amqp", options, CLIENT_OPTION_KEYS)?;
        let exchange = o.get("exchange").unwrap_or("courier").to_string();
        if exchange.is_empty() {
            return Err(o.invalid("exchange", "a name", ""));
        }
        Ok(Self {
            exchange,
            durable: o.flag("durable", true)?,
            prefetch: o.positive("prefetch")?,
            connect_timeout: o.millis("connect-timeout-ms", Duration::from_secs(5))?,
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
