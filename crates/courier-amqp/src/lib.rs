//! The AMQP 0-9-1 (RabbitMQ) backend of Courier.
//!
//! - [`options`]: the client options of `[clients.NAME.options]` and the
//!   subscription extensions, typed.
//! - [`Amqp`]: the backend's entry in the registry (`backend = "amqp"`).
//! - [`properties`]: message fields ↔ AMQP properties and headers.
//! - [`consume`]: subscriptions on queues bound to the topic exchange.
//!
//! Every message is published to one topic exchange with its channel as the
//! routing key, with publisher confirms: `send` returns once RabbitMQ has
//! confirmed every message. A broadcast subscription reads its own exclusive
//! queue; competing subscriptions of a group share a durable queue named
//! after the group and pattern. Channel patterns become binding keys (`*`,
//! `#`, see [`binding_key`]).
#![deny(missing_docs)]

mod connect;
pub mod consume;
pub mod options;
pub mod properties;

use std::time::Duration;

use async_trait::async_trait;
use courier_broker::reconnect::Link;
use courier_broker::tls::Endpoint;
use courier_broker::{
    Backend, BrokerError, ErrorKind, Features, Message, Subscription, SubscriptionSpec,
};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Confirmation, Connection, ExchangeKind};
use tokio::sync::Mutex;

pub use options::{AmqpExtensions, AmqpOptions};

pub(crate) const KIND: &str = "amqp";

pub(crate) fn connection_error(e: impl Into<courier_broker::error::BoxError>) -> BrokerError {
    BrokerError::connection(KIND, e)
}

/// The AMQP backend in the registry: `backend = "amqp"`, a url
/// (`amqp://user:pass@host:port/vhost`) and [`AmqpOptions`].
pub struct Amqp;

#[async_trait]
impl courier_broker::factory::BackendFactory for Amqp {
    const KIND: &'static str = KIND;
    const REMOTE: bool = true;
    type Options = AmqpOptions;
    type Extensions = AmqpExtensions;

    fn check(options: &AmqpOptions) -> Result<(), BrokerError> {
        options.check()
    }

    fn features(options: &AmqpOptions) -> Features {
        features(options)
    }

    async fn connect(
        &self,
        endpoint: &Endpoint,
        options: &AmqpOptions,
    ) -> Result<std::sync::Arc<dyn Backend>, BrokerError> {
        Ok(std::sync::Arc::new(
            AmqpBackend::connect_to(endpoint, options).await?,
        ))
    }
}

/// What an AMQP client promises: everything, durable when its queues and
/// messages are.
fn features(options: &AmqpOptions) -> Features {
    Features {
        durable: options.durable,
        ..Features::ALL
    }
}

/// The binding key of a channel pattern on the topic exchange: `*` stays,
/// `>` becomes `#`.
pub fn binding_key(pattern: &courier_broker::Pattern) -> String {
    pattern.render(".", "*", "#")
}

/// A connection to an AMQP 0-9-1 broker.
pub struct AmqpBackend {
    target: connect::Target,
    options: AmqpOptions,
    /// The connection and its publishing channel (confirms on), remade when lost.
    link: Mutex<Option<(Connection, Channel)>>,
    /// The health of the publishing connection.
    health: Link,
}

impl AmqpBackend {
    /// Connects to `url` (`amqp://user:pass@host:port/vhost`) and declares
    /// the topic exchange.
    pub async fn connect(url: &str, options: &AmqpOptions) -> Result<Self, BrokerError> {
        Self::connect_to(&Endpoint::plain(url), options).await
    }

    /// Connects to `endpoint`: like [`AmqpBackend::connect`], over TLS when
    /// the endpoint has TLS settings or an `amqps://` url.
    pub async fn connect_to(
        endpoint: &Endpoint,
        options: &AmqpOptions,
    ) -> Result<Self, BrokerError> {
        let target = connect::Target::new(endpoint)?;
        let backend = Self {
            health: Link::new(KIND, format!("{} (publisher)", target.shown())),
            target,
            options: options.clone(),
            link: Mutex::new(None),
        };
        backend.channel().await?;
        Ok(backend)
    }

    /// The publishing channel, connecting again if it was lost. While the
    /// broker is down every `publish` tries once to connect, within the
    /// connect timeout, and fails with a
    /// [`Connection`](courier_broker::ErrorKind::Connection) error.
    async fn channel(&self) -> Result<Channel, BrokerError> {
        let mut link = self.link.lock().await;
        if let Some((conn, channel)) = link.as_ref() {
            if conn.status().connected() && channel.status().connected() {
                return Ok(channel.clone());
            }
            self.health.lost(&"the connection closed");
            *link = None;
        }
        match self.link().await {
            Ok((conn, channel)) => {
                self.health.restored();
                *link = Some((conn, channel.clone()));
                Ok(channel)
            }
            Err(e) => {
                if self.health.is_down() {
                    self.health.retry_failed(&e);
                }
                Err(e)
            }
        }
    }

    /// Forgets the publishing connection after a failure on it.
    async fn drop_link(&self, e: &BrokerError) {
        if let Some((conn, _)) = self.link.lock().await.take() {
            self.health.lost(e);
            // In the background, bounded: over a dead or stalled connection
            // the broker's close-ok never comes, and `publish` must answer
            // within its timeout.
            let deadline = self.options.connect_timeout.get();
            tokio::spawn(async move {
                let _ =
                    tokio::time::timeout(deadline, conn.close(200, "reconnecting".into())).await;
            });
        }
    }

    /// Connects, opens a channel with publisher confirms, declares the exchange.
    async fn link(&self) -> Result<(Connection, Channel), BrokerError> {
        let conn = self.target.open(self.options.connect_timeout.get()).await?;
        let channel = conn.create_channel().await.map_err(connection_error)?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(connection_error)?;
        channel
            .exchange_declare(
                self.options.exchange.as_str().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: self.options.durable,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| {
                connection_error(e)
                    .context(format!("declaring exchange `{}`", self.options.exchange))
            })?;
        Ok((conn, channel))
    }
}

#[async_trait]
impl Backend for AmqpBackend {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn features(&self) -> Features {
        features(&self.options)
    }

    async fn publish(&self, messages: Vec<Message>) -> Result<(), BrokerError> {
        courier_broker::pattern::check_topics(&messages)?;
        let channel = self.channel().await?;
        let published = async {
            let mut confirms = Vec::with_capacity(messages.len());
            for m in &messages {
                let confirm = channel
                    .basic_publish(
                        self.options.exchange.as_str().into(),
                        m.topic.as_str().into(),
                        BasicPublishOptions::default(),
                        &m.data,
                        properties::to_properties(m, self.options.durable, None)?,
                    )
                    .await
                    .map_err(connection_error)?;
                confirms.push((m.topic.clone(), confirm));
            }
            wait_confirms(confirms, self.options.connect_timeout.get()).await
        }
        .await;
        if let Err(e) = &published
            && matches!(e.kind(), ErrorKind::Connection | ErrorKind::Timeout)
        {
            self.drop_link(e).await;
        }
        published
    }

    async fn subscribe(
        &self,
        spec: SubscriptionSpec,
    ) -> Result<Box<dyn Subscription>, BrokerError> {
        consume::subscribe(self, spec).await
    }
}

/// Waits for every publisher confirm; a nack or a timeout is an error.
pub(crate) async fn wait_confirms(
    confirms: Vec<(String, lapin::PublisherConfirm)>,
    timeout: Duration,
) -> Result<(), BrokerError> {
    for (topic, confirm) in confirms {
        let confirmation = tokio::time::timeout(timeout, confirm)
            .await
            .map_err(|_| BrokerError::timeout("amqp publisher confirm", timeout))?
            .map_err(connection_error)?;
        if let Confirmation::Nack(_) = confirmation {
            return Err(BrokerError::other(format!(
                "the broker refused the message to `{topic}`"
            )));
        }
    }
    Ok(())
}
