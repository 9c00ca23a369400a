//! Subscriptions: a connection each, with manual acknowledgements.
//!
//! The PUBACK of a message goes out only when the guest settled it. A
//! rejected message is redelivered in process ([`courier_broker::retry`])
//! and acknowledged to the broker when a redelivery is finally accepted or
//! dead-lettered; if Courier dies first, the broker resends it when a
//! persistent session (`durable` option) resumes. Point-to-point is a shared
//! subscription (`$share/GROUP/…`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use courier_broker::backend::{Delivery, Mode, Subscription, SubscriptionSpec};
use courier_broker::reconnect::Link;
use courier_broker::retry::{LocalRetries, Next, Settle};
use courier_broker::{BrokerError, Pattern};
use futures::channel::mpsc;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, Publish, SubscribeReasonCode};
use rumqttc::v5::{AsyncClient, Event, EventLoop};
use tokio::task::JoinHandle;

use crate::options::{MqttOptions, parse_qos};
use crate::publisher::{client_id, connected, mqtt_options};
use crate::topics::{from_publish, to_filter};
use crate::{KIND, connection_error};

/// Opens a subscription on a connection of its own.
pub async fn subscribe(
    options: &MqttOptions,
    spec: SubscriptionSpec,
) -> Result<Box<dyn Subscription>, BrokerError> {
    let qos = match spec.options.get("qos") {
        None => options.qos,
        Some(v) => parse_qos(v)
            .ok_or_else(|| BrokerError::Invalid(format!("qos: expected 0, 1 or 2, got `{v}`")))?,
    };
    let group = match &spec.mode {
        Mode::Competing { group } => Some(group.as_str()),
        Mode::Broadcast => None,
    };
    let filter = to_filter(&spec.pattern, group);
    let durable = spec.options.get("durable");
    let id = durable
        .cloned()
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
    let early = subscribed(&mut eventloop, options.connect_timeout, &filter).await?;
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
    let task = tokio::spawn(run(
        eventloop,
        client.clone(),
        filter.clone(),
        qos,
        tx,
        link,
    ));
    Ok(Box::new(MqttSubscription {
        client,
        filter,
        pattern: spec.pattern,
        rx,
        retries: LocalRetries::new(),
        task,
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
                        Some(SubscribeReasonCode::TopicFilterInvalid) => Err(BrokerError::Invalid(
                            format!("the broker refused the topic filter `{filter}`"),
                        )),
                        Some(SubscribeReasonCode::SharedSubscriptionsNotSupported) => {
                            Err(BrokerError::Unsupported {
                                backend: KIND,
                                what: "shared subscriptions on this broker".into(),
                            })
                        }
                        other => Err(BrokerError::Other(format!(
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
        .map_err(|_| BrokerError::Timeout {
            operation: "mqtt subscribe",
            after: timeout,
        })??;
    Ok(early)
}

/// Forwards incoming messages; subscribes again after a reconnect that lost the session.
async fn run(
    mut eventloop: EventLoop,
    client: AsyncClient,
    filter: String,
    qos: QoS,
    tx: mpsc::UnboundedSender<Publish>,
    link: Link,
) {
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::Publish(p))) => {
                if tx.unbounded_send(p).is_err() {
                    return;
                }
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
                // Polling again reconnects (resuming a `durable` session).
                let delay = link.lost(&e);
                tokio::time::sleep(delay).await;
            }
        }
    }
}

struct MqttSubscription {
    client: AsyncClient,
    filter: String,
    pattern: Pattern,
    rx: mpsc::UnboundedReceiver<Publish>,
    retries: Arc<LocalRetries>,
    task: JoinHandle<()>,
}

#[async_trait]
impl Subscription for MqttSubscription {
    async fn next(&mut self) -> Option<Result<Delivery, BrokerError>> {
        loop {
            let publish = match self.retries.next_from(&mut self.rx).await {
                Next::Retry(d) => return Some(Ok(d)),
                Next::Source(p) => p?,
            };
            let message = from_publish(&publish);
            // `#` also matches the parent level, `>` does not.
            if !self.pattern.matches(&message.topic) {
                let _ = self.client.try_ack(&publish);
                continue;
            }
            let attempt = if publish.dup { 2 } else { 1 };
            let client = self.client.clone();
            let settle: Settle = Box::new(move || {
                Box::pin(async move { client.ack(&publish).await.map_err(connection_error) })
            });
            return Some(Ok(self.retries.delivery_settling(
                message,
                attempt,
                Some(settle),
            )));
        }
    }

    async fn close(&mut self) -> Result<(), BrokerError> {
        self.retries.clear();
        let _ = self.client.unsubscribe(self.filter.clone()).await;
        let _ = self.client.disconnect().await;
        // Let the event loop send what is queued, then stop it.
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.task.abort();
        Ok(())
    }
}

impl Drop for MqttSubscription {
    fn drop(&mut self) {
        self.task.abort();
    }
}
