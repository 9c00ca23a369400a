//! Client options of the MQTT backend (`[clients.NAME.options]`).

use std::collections::BTreeMap;
use std::time::Duration;

use courier_broker::BrokerError;
use courier_broker::options::OptionMap;
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
        let o = OptionMap::new("mqtt", options, CLIENT_OPTION_KEYS)?;
        let rest = url
            .strip_prefix("mqtt://")
            .or_else(|| url.strip_prefix("tcp://"))
            .ok_or_else(|| {
                BrokerError::invalid(format!("mqtt url `{url}`: expected mqtt://host:port"))
            })?;
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => (
                h.to_string(),
                p.parse().map_err(|_| {
                    BrokerError::invalid(format!("mqtt url `{url}`: bad port `{p}`"))
                })?,
            ),
            None => (rest.to_string(), 1883),
        };
        let qos = match o.get("qos") {
            None => QoS::AtLeastOnce,
            Some(v) => parse_qos(v).ok_or_else(|| o.invalid("qos", "0, 1 or 2", v))?,
        };
        let connect_timeout = o.millis("connect-timeout-ms", Duration::from_secs(5))?;
        Ok(Self {
            host,
            port,
            qos,
            client_id: o.get("client-id").unwrap_or("courier").to_string(),
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
