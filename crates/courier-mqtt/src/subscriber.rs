//! Subscriptions: a connection each, with manual acknowledgements.
//!
//! The PUBACK of a message goes out only when the guest settled it. A
//! rejected message is redelivered in process ([`courier_broker::retry`])
//! and acknowledged to the broker when a redelivery is finally accepted or
//! dead-lettered; if Courier dies first, the broker resends it when a
//! persistent session (`durable` option) resumes. Point-to-point is a shared
//! subscription (`$share/GROUP/…`).
//!
//! Unsubscribing stops new messages at once, but the connection stays open
//! until every delivery already handed out has been settled or dropped: the
//! subscription and each delivery share one [`Connection`], and the last of
//! them to go disconnects. A guest that unsubscribes from inside its
//! handler can still complete the message it holds.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use courier_broker::backend::{Delivery, Mode, Subscription, SubscriptionSpec};
use courier_broker::reconnect::Link;
use courier_broker::retry::{LocalRetries, Next, Settle};
use courier_broker::{BrokerError, Pattern};
use futures::channel::mpsc;
use rumqttc::Outgoing;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, Publish, SubscribeReasonCode};
use rumqttc::v5::{AsyncClient, Event, EventLoop};
use tokio::sync::watch;

use crate::options::{MqttExtensions, MqttOptions};
use crate::publisher::{client_id, connected, mqtt_options};
use crate::topics::{from_publish, to_filter};
use crate::{KIND, connection_error};

/// Opens a subscription on a connection of its own.
pub async fn subscribe(
    options: &MqttOptions,
    spec: SubscriptionSpec,
) -> Result<Box<dyn Subscription>, BrokerError> {
    let extensions: MqttExtensions = courier_broker::extensions::parse(KIND, &spec.options)?;
    let qos = extensions.qos.unwrap_or(options.qos);
    let group = match &spec.mode {
        Mode::Competing { group } => Some(group.as_str()),
        Mode::Broadcast => None,
    };
    let filter = to_filter(&spec.pattern, group);
    let durable = extensions.durable;
    let id = durable
        .clone()
        .unwrap_or_else(|| client_id(&options.client_id, "sub"));
    let mut mqtt = mqtt_options(options, id);
    mqtt.set_manual_acks(true);
    if durable.is_some() {
        mqtt.set_clean_start(false);
        mqtt.set_session_expiry_interval(Some(7 * 24 * 3600));
    }
    let (client, mut eventloop) = AsyncClient::new(mqtt, 1000);
    connected(&mut eventloop, options).await?;
    client
        .subscribe(filter.clone(), qos)
        .await
        .map_err(connection_error)?;
    let (tx, rx) = mpsc::unbounded();
    let early = subscribed(&mut eventloop, options.connect_timeout.get(), &filter).await?;
    for p in early {
        let _ = tx.unbounded_send(p);
    }
    let link = Link::new(
        KIND,
        format!(
            "{}:{} (subscription `{filter}`)",
            options.host, options.port
        ),
    );
    let (closing, closed) = watch::channel(false);
    let (unsubscribed_tx, unsubscribed) = watch::channel(false);
    // Ends by itself once the connection is closed (see `Connection`).
    tokio::spawn(run(
        eventloop,
        client.clone(),
        filter.clone(),
        qos,
        tx,
        link,
        Signals {
            closed,
            unsubscribed: unsubscribed_tx,
        },
    ));
    Ok(Box::new(MqttSubscription {
        connection: Some(Arc::new(Connection { client, closing })),
        unsubscribed,
        timeout: options.connect_timeout.get(),
        filter,
        pattern: spec.pattern,
        rx,
        retries: LocalRetries::new(),
    }))
}

/// Polls until the SUBACK; returns messages that arrived before it.
async fn subscribed(
    eventloop: &mut EventLoop,
    timeout: Duration,
    filter: &str,
) -> Result<Vec<Publish>, BrokerError> {
    let mut early = Vec::new();
    let wait = async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    return match ack.return_codes.first() {
                        Some(SubscribeReasonCode::Success(_)) => Ok(()),
                        Some(SubscribeReasonCode::TopicFilterInvalid) => Err(BrokerError::invalid(
                            format!("the broker refused the topic filter `{filter}`"),
                        )),
                        Some(SubscribeReasonCode::SharedSubscriptionsNotSupported) => Err(
                            BrokerError::unsupported(KIND, "shared subscriptions on this broker"),
                        ),
                        other => Err(BrokerError::other(format!(
                            "the broker refused the subscription to `{filter}`: {other:?}"
                        ))),
                    };
                }
                Ok(Event::Incoming(Packet::Publish(p))) => early.push(p),
                Ok(_) => {}
                Err(e) => return Err(connection_error(e)),
            }
        }
    };
    tokio::time::timeout(timeout, wait)
        .await
        .map_err(|_| BrokerError::timeout("mqtt subscribe", timeout))??;
    Ok(early)
}

/// What the event loop is told, and tells.
struct Signals {
    /// Set when the connection is to close: stop instead of reconnecting.
    closed: watch::Receiver<bool>,
    /// Set when the broker confirmed the unsubscribe.
    unsubscribed: watch::Sender<bool>,
}

/// Forwards incoming messages; subscribes again after a reconnect that
/// lost the session; returns once the connection is closed.
async fn run(
    mut eventloop: EventLoop,
    client: AsyncClient,
    filter: String,
    qos: QoS,
    tx: mpsc::UnboundedSender<Publish>,
    link: Link,
    signals: Signals,
) {
    let Signals {
        mut closed,
        unsubscribed,
    } = signals;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::Publish(p))) => {
                // After an unsubscribe nobody takes messages any more; the
                // ones still arriving are not acknowledged.
                let _ = tx.unbounded_send(p);
            }
            // The broker closes the connection after the DISCONNECT: the
            // poll after this one fails, and ends the loop below.
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {}
            Ok(Event::Incoming(Packet::UnsubAck(_))) => {
                unsubscribed.send_replace(true);
            }
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                link.restored();
                if !ack.session_present {
                    tracing::info!(%filter, "mqtt: the session was not kept; subscribing again");
                    if let Err(e) = client.try_subscribe(filter.clone(), qos) {
                        tracing::warn!(%filter, "mqtt: subscribing again: {e}");
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                if *closed.borrow() {
                    return;
                }
                // Polling again reconnects (resuming a `durable` session).
                let delay = link.lost(&e);
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    _ = closed.changed() => return,
                }
            }
        }
    }
}

/// A subscription's connection, held by the subscription and by every
/// delivery it handed out: the last holder to go disconnects.
struct Connection {
    client: AsyncClient,
    /// Tells the event loop to stop rather than reconnect.
    closing: watch::Sender<bool>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        let _ = self.closing.send(true);
        let _ = self.client.try_disconnect();
    }
}

struct MqttSubscription {
    /// `None` once closed.
    connection: Option<Arc<Connection>>,
    /// Set once the broker confirmed the unsubscribe.
    unsubscribed: watch::Receiver<bool>,
    /// How long to wait for that confirmation.
    timeout: Duration,
    filter: String,
    pattern: Pattern,
    rx: mpsc::UnboundedReceiver<Publish>,
    retries: Arc<LocalRetries>,
}

#[async_trait]
impl Subscription for MqttSubscription {
    async fn next(&mut self) -> Option<Result<Delivery, BrokerError>> {
        let connection = self.connection.clone()?;
        loop {
            let publish = match self.retries.next_from(&mut self.rx).await {
                Next::Retry(d) => return Some(Ok(d)),
                Next::Source(p) => p?,
            };
            let message = from_publish(&publish);
            // `#` also matches the parent level, `>` does not.
            if !self.pattern.matches(&message.topic) {
                let _ = connection.client.try_ack(&publish);
                continue;
            }
            let attempt = if publish.dup { 2 } else { 1 };
            let connection = connection.clone();
            let settle: Settle = Box::new(move || {
                Box::pin(async move {
                    connection
                        .client
                        .ack(&publish)
                        .await
                        .map_err(connection_error)
                })
            });
            return Some(Ok(self.retries.delivery_settling(
                message,
                attempt,
                Some(settle),
            )));
        }
    }

    /// Unsubscribes and waits for the broker to confirm it (from then on it
    /// sends this subscription nothing); the connection closes once every
    /// delivery handed out is settled or dropped. Messages waiting for an
    /// in-process redelivery, and messages received but not handed out, are
    /// not acknowledged: a `durable` session gets them again.
    async fn close(&mut self) -> Result<(), BrokerError> {
        self.retries.clear();
        let Some(connection) = self.connection.take() else {
            return Ok(());
        };
        connection
            .client
            .unsubscribe(self.filter.clone())
            .await
            .map_err(connection_error)?;
        tokio::time::timeout(self.timeout, self.unsubscribed.wait_for(|done| *done))
            .await
            .map_err(|_| BrokerError::timeout("mqtt unsubscribe", self.timeout))?
            .map_err(|_| {
                connection_error("the connection closed before the unsubscribe was confirmed")
            })?;
        Ok(())
    }
}
