//! The MQTT 5 backend of Courier.
//!
//! - [`options`]: the client options of `[clients.NAME.options]`.
//! - [`topics`]: channels ↔ MQTT topics (`.` ↔ `/`, `*` ↔ `+`, `>` ↔ `#`)
//!   and message fields ↔ MQTT 5 properties.
//! - [`publisher`]: the publishing connection; `send` returns on PUBACK
//!   (QoS 1) or PUBCOMP (QoS 2).
//! - [`subscriber`]: one connection per subscription, with manual acks: the
//!   PUBACK goes out only once the guest settled the message.
#![deny(missing_docs)]

pub mod options;
pub mod publisher;
pub mod subscriber;
pub mod topics;

use async_trait::async_trait;
use courier_broker::{Backend, BrokerError, Features, Message, Subscription, SubscriptionSpec};

pub use options::{CLIENT_OPTION_KEYS, MqttOptions};

pub(crate) const KIND: &str = "mqtt";

pub(crate) fn connection_error(e: impl Into<courier_broker::error::BoxError>) -> BrokerError {
    BrokerError::connection(KIND, e)
}

/// Subscription option keys (`extensions`) the MQTT backend understands.
pub const SUBSCRIPTION_OPTION_KEYS: &[&str] = &["qos", "durable"];

/// A connection to an MQTT 5 broker.
pub struct MqttBackend {
    options: MqttOptions,
    publisher: publisher::Publisher,
}

impl MqttBackend {
    /// Connects to `url` (`mqtt://host:port`).
    pub async fn connect(
        url: &str,
        options: &std::collections::BTreeMap<String, String>,
    ) -> Result<Self, BrokerError> {
        let options = MqttOptions::parse(url, options)?;
        let publisher = publisher::Publisher::connect(&options).await?;
        Ok(Self { options, publisher })
    }
}

#[async_trait]
impl Backend for MqttBackend {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn features(&self) -> Features {
        Features {
            // Subscriptions are clean sessions unless `durable` names one.
            durable: false,
            ..Features::ALL
        }
    }

    fn option_keys(&self) -> &'static [&'static str] {
        SUBSCRIPTION_OPTION_KEYS
    }

    async fn publish(&self, messages: Vec<Message>) -> Result<(), BrokerError> {
        courier_broker::pattern::check_topics(&messages)?;
        self.publisher.publish(messages).await
    }

    async fn subscribe(
        &self,
        spec: SubscriptionSpec,
    ) -> Result<Box<dyn Subscription>, BrokerError> {
        subscriber::subscribe(&self.options, spec).await
    }
}
