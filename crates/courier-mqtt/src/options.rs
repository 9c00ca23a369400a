//! Client options of the MQTT backend (`[clients.NAME.options]`).

use std::collections::BTreeMap;
use std::time::Duration;

use courier_broker::BrokerError;
use rumqttc::v5::mqttbytes::QoS;

/// Every key of `[clients.NAME.options]` the MQTT backend understands.
pub const CLIENT_OPTION_KEYS: &[&str] = &["qos", "client-id", "connect-timeout-ms"];

/// Parsed client options.
#[derive(Debug, Clone)]
pub struct MqttOptions {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// QoS of publishing and of subscriptions (default 1).
    pub qos: QoS,
    /// Prefix of the client ids Courier makes (default `courier`).
    pub client_id: String,
    /// Deadline of connecting and of each acknowledgement.
    pub connect_timeout: Duration,
}

fn invalid(key: &str, what: &str, value: &str) -> BrokerError {
    BrokerError::Invalid(format!("mqtt option `{key}`: {what}, got `{value}`"))
}

/// A QoS level from `0`, `1` or `2`.
pub fn parse_qos(v: &str) -> Option<QoS> {
    match v {
        "0" => Some(QoS::AtMostOnce),
        "1" => Some(QoS::AtLeastOnce),
        "2" => Some(QoS::ExactlyOnce),
        _ => None,
    }
}

impl MqttOptions {
    /// Parses the url (`mqtt://host:port`) and options.
    pub fn parse(url: &str, options: &BTreeMap<String, String>) -> Result<Self, BrokerError> {
        if let Some(k) = options
            .keys()
            .find(|k| !CLIENT_OPTION_KEYS.contains(&k.as_str()))
        {
            return Err(BrokerError::Invalid(format!(
                "unknown mqtt option `{k}` (known: {})",
                CLIENT_OPTION_KEYS.join(", ")
            )));
        }
        let rest = url
            .strip_prefix("mqtt://")
            .or_else(|| url.strip_prefix("tcp://"))
            .ok_or_else(|| {
                BrokerError::Invalid(format!("mqtt url `{url}`: expected mqtt://host:port"))
            })?;
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => (
                h.to_string(),
                p.parse().map_err(|_| {
                    BrokerError::Invalid(format!("mqtt url `{url}`: bad port `{p}`"))
                })?,
            ),
            None => (rest.to_string(), 1883),
        };
        let get = |k: &str| options.get(k).map(String::as_str);
        let qos = match get("qos") {
            None => QoS::AtLeastOnce,
            Some(v) => parse_qos(v).ok_or_else(|| invalid("qos", "expected 0, 1 or 2", v))?,
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
        Ok(Self {
            host,
            port,
            qos,
            client_id: get("client-id").unwrap_or("courier").to_string(),
            connect_timeout,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_url_and_options() {
        let o = MqttOptions::parse("mqtt://127.0.0.1:1884", &BTreeMap::new()).unwrap();
        assert_eq!(
            (o.host.as_str(), o.port, o.qos),
            ("127.0.0.1", 1884, QoS::AtLeastOnce)
        );
        let bad = |k: &str, v: &str| {
            MqttOptions::parse(
                "mqtt://h",
                &[(k.to_string(), v.to_string())].into_iter().collect(),
            )
            .unwrap_err()
            .to_string()
        };
        assert!(bad("qos", "3").contains("`qos`"));
        assert!(bad("q0s", "1").contains("`q0s`"));
        assert!(MqttOptions::parse("http://h", &BTreeMap::new()).is_err());
    }
}
