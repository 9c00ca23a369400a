//! Client options of the MQTT backend (`[clients.NAME.options]`) and the
//! subscription extensions it understands, as typed `serde` structs.

use courier_broker::BrokerError;
use courier_broker::factory::ConnectTimeout;
use courier_broker::secret::Credentials;
use courier_broker::tls::{ClientTls, Endpoint};
use rumqttc::v5::mqttbytes::QoS;
use serde::{Deserialize, Deserializer};

/// `[clients.NAME.options]` of an `mqtt` client, with the broker's address
/// from its url.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct MqttOptions {
    /// Broker host (from the url).
    #[serde(skip)]
    pub host: String,
    /// Broker port (from the url).
    #[serde(skip)]
    pub port: u16,
    /// User name and password (from the url's `user:password@`).
    #[serde(skip)]
    pub credentials: Option<Credentials>,
    /// TLS settings (from the client's `tls` or an `mqtts://` url).
    #[serde(skip)]
    pub tls: Option<ClientTls>,
    /// QoS of publishing and of subscriptions: 0, 1 or 2 (default 1).
    #[serde(deserialize_with = "qos")]
    pub qos: QoS,
    /// Prefix of the client ids Courier makes (default `courier`).
    pub client_id: String,
    /// Deadline of connecting and of each acknowledgement.
    #[serde(rename = "connect-timeout-ms")]
    pub connect_timeout: ConnectTimeout,
    /// How long the broker keeps a persistent session (what it queued for a
    /// subscription) while Courier is away, in seconds (default one day).
    pub session_expiry_s: u32,
    /// Refuse a publish the broker says reached no subscription (MQTT 5
    /// reason 16, "no matching subscribers") instead of counting it as
    /// sent (default `false`: in publish-subscribe, nobody listening is
    /// normal). For channels that are queues: a broker that lost its
    /// consumers' subscriptions (Mosquitto 2.0.11 does not restore shared
    /// subscriptions after a restart) then refuses sends, to be tried again,
    /// until they subscribe again.
    pub require_subscribers: bool,
}

impl Default for MqttOptions {
    fn default() -> Self {
        Self {
            host: String::new(),
            port: 1883,
            credentials: None,
            tls: None,
            qos: QoS::AtLeastOnce,
            client_id: "courier".into(),
            connect_timeout: ConnectTimeout::default(),
            session_expiry_s: 24 * 3600,
            require_subscribers: false,
        }
    }
}

/// Subscription extensions of the MQTT backend.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct MqttExtensions {
    /// QoS of this subscription: 0, 1 or 2.
    #[serde(deserialize_with = "some_qos")]
    pub qos: Option<QoS>,
    /// The client id of a persistent session, kept by the broker while
    /// Courier is away.
    pub durable: Option<String>,
    /// Whether the subscription keeps a persistent session: by default
    /// point-to-point subscriptions do (`false` makes them clean sessions,
    /// which lose what the broker holds for them when they close), and
    /// broadcast ones do not.
    pub persistent: Option<bool>,
}

/// A QoS level from `0`, `1` or `2`.
fn qos<'de, D: Deserializer<'de>>(d: D) -> Result<QoS, D::Error> {
    match u8::deserialize(d)? {
        0 => Ok(QoS::AtMostOnce),
        1 => Ok(QoS::AtLeastOnce),
        2 => Ok(QoS::ExactlyOnce),
        n => Err(serde::de::Error::custom(format!(
            "expected 0, 1 or 2, got {n}"
        ))),
    }
}

fn some_qos<'de, D: Deserializer<'de>>(d: D) -> Result<Option<QoS>, D::Error> {
    qos(d).map(Some)
}

impl MqttOptions {
    /// These options with the broker's address taken from `url`
    /// (`mqtt://host:port`, or `mqtt://user:password@host:port`).
    pub fn at(&self, url: &str) -> Result<Self, BrokerError> {
        self.at_endpoint(&Endpoint::plain(url))
    }

    /// These options with the broker's address and TLS settings taken from
    /// `endpoint` (`mqtts://host:port` turns TLS on; its default port is
    /// 8883).
    pub fn at_endpoint(&self, endpoint: &Endpoint) -> Result<Self, BrokerError> {
        let tls = endpoint.tls("mqtts")?;
        let (url, credentials) = courier_broker::secret::credentials(&endpoint.url)?;
        let url = url.as_str();
        let rest = url
            .strip_prefix("mqtt://")
            .or_else(|| url.strip_prefix("mqtts://"))
            .or_else(|| url.strip_prefix("tcp://"))
            .ok_or_else(|| {
                BrokerError::invalid(format!(
                    "mqtt url `{url}`: expected mqtt://host:port or mqtts://host:port"
                ))
            })?;
        let default_port = if tls.is_some() { 8883 } else { 1883 };
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => (
                h.to_string(),
                p.parse().map_err(|_| {
                    BrokerError::invalid(format!("mqtt url `{url}`: bad port `{p}`"))
                })?,
            ),
            None => (rest.to_string(), default_port),
        };
        Ok(Self {
            host,
            port,
            credentials,
            tls,
            ..self.clone()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<MqttOptions, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    #[test]
    fn parses_url_and_options() {
        let o = parse("").unwrap().at("mqtt://127.0.0.1:1884").unwrap();
        assert_eq!(
            (o.host.as_str(), o.port, o.qos),
            ("127.0.0.1", 1884, QoS::AtLeastOnce)
        );
        assert_eq!(parse("qos = 2").unwrap().qos, QoS::ExactlyOnce);
        assert!(parse("qos = 3").unwrap_err().contains("0, 1 or 2"));
        assert!(parse("q0s = 1").unwrap_err().contains("q0s"));
        assert!(parse("").unwrap().at("http://h").is_err());
        let o = parse("").unwrap().at("mqtt://u:p%2Fw@h:1").unwrap();
        let c = o.credentials.as_ref().unwrap();
        assert_eq!((o.host.as_str(), o.port), ("h", 1));
        assert_eq!(
            (c.user.as_str(), c.password.as_ref().unwrap().expose()),
            ("u", "p/w")
        );
        assert!(!format!("{o:?}").contains("p/w"));
    }
}
