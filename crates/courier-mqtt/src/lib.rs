//! The MQTT 5 backend of Courier.
//!
//! - [`options`]: the client options of `[clients.NAME.options]` and the
//!   subscription extensions, typed.
//! - [`Mqtt`]: the backend's entry in the registry (`backend = "mqtt"`).
//! - [`topics`]: channels ↔ MQTT topics (`.` ↔ `/`, `*` ↔ `+`, `>` ↔ `#`)
//!   and message fields ↔ MQTT 5 properties.
//! - [`publisher`]: the publishing connection; `send` returns on PUBACK
//!   (QoS 1) or PUBCOMP (QoS 2).
//! - [`subscriber`]: one connection per subscription, with manual acks: the
//!   PUBACK goes out only once the guest settled the message.
//! - `session`: the persistent sessions of point-to-point subscriptions
//!   (stable client ids, one slot per member of a group) and the rule that
//!   a PUBACK goes out only on the connection its message came on.
#![deny(missing_docs)]

pub mod options;
pub mod publisher;
mod session;
pub mod subscriber;
pub mod topics;

use async_trait::async_trait;
use courier_broker::{Backend, BrokerError, Features, Message, Subscription, SubscriptionSpec};

pub use options::{MqttExtensions, MqttOptions};

pub(crate) const KIND: &str = "mqtt";

pub(crate) fn connection_error(e: impl Into<courier_broker::error::BoxError>) -> BrokerError {
    BrokerError::connection(KIND, e)
}

/// The MQTT 5 backend in the registry: `backend = "mqtt"`, a url
/// (`mqtt://host:port`) and [`MqttOptions`].
pub struct Mqtt;

#[async_trait]
impl courier_broker::factory::BackendFactory for Mqtt {
    const KIND: &'static str = KIND;
    const REMOTE: bool = true;
    type Options = MqttOptions;
    type Extensions = MqttExtensions;

    fn features(_: &MqttOptions) -> Features {
        FEATURES
    }

    async fn connect(
        &self,
        endpoint: &courier_broker::tls::Endpoint,
        options: &MqttOptions,
    ) -> Result<std::sync::Arc<dyn Backend>, BrokerError> {
        Ok(std::sync::Arc::new(
            MqttBackend::connect_to(endpoint, options).await?,
        ))
    }
}

/// What an MQTT client promises.
const FEATURES: Features = Features {
    // Broadcast subscriptions are clean sessions unless `durable` names
    // one (point-to-point ones keep their session by default).
    durable: false,
    ..Features::ALL
};

/// A connection to an MQTT 5 broker.
pub struct MqttBackend {
    options: MqttOptions,
    publisher: publisher::Publisher,
    /// What the subscriptions' sessions handed out.
    inflight: std::sync::Arc<session::Inflight>,
}

impl MqttBackend {
    /// Connects to `url` (`mqtt://host:port`).
    pub async fn connect(url: &str, options: &MqttOptions) -> Result<Self, BrokerError> {
        Self::connect_to(&courier_broker::tls::Endpoint::plain(url), options).await
    }

    /// Connects to `endpoint`: like [`MqttBackend::connect`], over TLS when
    /// the endpoint has TLS settings or an `mqtts://` url.
    pub async fn connect_to(
        endpoint: &courier_broker::tls::Endpoint,
        options: &MqttOptions,
    ) -> Result<Self, BrokerError> {
        let options = options.at_endpoint(endpoint)?;
        let publisher = publisher::Publisher::connect(&options).await?;
        Ok(Self {
            options,
            publisher,
            inflight: Default::default(),
        })
    }
}

#[async_trait]
impl Backend for MqttBackend {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn features(&self) -> Features {
        FEATURES
    }

    async fn publish(&self, messages: Vec<Message>) -> Result<(), BrokerError> {
        courier_broker::pattern::check_topics(&messages)?;
        self.publisher.publish(messages).await
    }

    async fn subscribe(
        &self,
        spec: SubscriptionSpec,
    ) -> Result<Box<dyn Subscription>, BrokerError> {
        subscriber::subscribe(&self.options, self.inflight.clone(), spec).await
    }
}
