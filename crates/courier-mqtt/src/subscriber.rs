//! Subscriptions: a connection each, with manual acknowledgements.
//!
//! The PUBACK of a message goes out only when the guest settled it. A
//! rejected message is redelivered in process ([`courier_broker::retry`])
//! and acknowledged to the broker when a redelivery is finally accepted or
//! dead-lettered; if Courier stops or dies first, the broker resends it when
//! the persistent session resumes. Point-to-point is a shared subscription
//! (`$share/GROUP/…`) with a persistent session by default
//! ([`crate::session`]); broadcast subscriptions have clean sessions unless
//! the `durable` extension names one.
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
use futures::future::BoxFuture;
use rumqttc::Outgoing;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Filter, Packet, Publish, RetainForwardRule, SubscribeReasonCode};
use rumqttc::v5::{AsyncClient, Event, EventLoop};
use tokio::sync::watch;

use crate::options::{MqttExtensions, MqttOptions};
use crate::publisher::{client_id, connected, mqtt_options};
use crate::session::{AckGate, Arrival, Claim, Inflight, Route, SessionId, Tag, taken_over};
use crate::topics::{from_publish, to_filter};
use crate::{KIND, connection_error};

/// Opens a subscription on a connection of its own.
pub(crate) async fn subscribe(
    options: &MqttOptions,
    inflight: Arc<Inflight>,
    spec: SubscriptionSpec,
) -> Result<Box<dyn Subscription>, BrokerError> {
    let extensions: MqttExtensions = courier_broker::extensions::parse(KIND, &spec.options)?;
    let qos = extensions.qos.unwrap_or(options.qos);
    let group = match &spec.mode {
        Mode::Competing { group } => Some(group.as_str()),
        Mode::Broadcast => None,
    };
    let filter = to_filter(&spec.pattern, group);
    let (mut session, persistent) = match (extensions.durable, group) {
        (Some(name), _) => (SessionId::fixed(name), true),
        (None, Some(group)) if extensions.persistent != Some(false) => {
            (SessionId::shared(&options.client_id, group, &filter), true)
        }
        (None, _) => (
            SessionId::fixed(client_id(&options.client_id, "sub")),
            extensions.persistent == Some(true),
        ),
    };
    let gate = Arc::new(AckGate::new());
    let current = inflight.claim(&mut session, &gate);
    tracing::debug!(%filter, session = %current, persistent, "mqtt: subscribing");
    let mut mqtt = mqtt_options(options, current.to_string());
    mqtt.set_manual_acks(true);
    if persistent {
        mqtt.set_clean_start(false);
        mqtt.set_session_expiry_interval(Some(options.session_expiry_s));
    }
    let (client, mut eventloop) = AsyncClient::new(mqtt, 1000);
    if !connected(&mut eventloop, options).await? {
        inflight.new_life(&current);
    }
    client
        .subscribe(filter.clone(), qos)
        .await
        .map_err(connection_error)?;
    let (tx, rx) = mpsc::unbounded();
    let early = subscribed(&mut eventloop, options.connect_timeout.get(), &filter).await?;
    for p in early {
        let tag = inflight.tag(&current, &gate);
        forward(&inflight, &tx, tag, p);
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
    let requeue = tx.clone();
    let task = tokio::spawn(run(
        eventloop,
        Loop {
            client: client.clone(),
            filter: filter.clone(),
            qos,
            tx,
            link,
            gate: gate.clone(),
            inflight: inflight.clone(),
            session,
        },
        Signals {
            closed,
            unsubscribed: unsubscribed_tx,
        },
    ));
    Ok(Box::new(MqttSubscription {
        connection: Some(Arc::new(Connection {
            client,
            gate,
            closing,
        })),
        inflight,
        requeue,
        unsubscribed,
        task,
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

/// What the event loop task works with.
struct Loop {
    client: AsyncClient,
    filter: String,
    qos: QoS,
    /// Incoming messages, each with the session and connection it came on.
    tx: mpsc::UnboundedSender<(Tag, Publish)>,
    link: Link,
    gate: Arc<AckGate>,
    inflight: Arc<Inflight>,
    session: SessionId,
}

/// Forwards incoming messages; subscribes again after a reconnect that
/// lost the session; moves to another slot when the session was taken
/// over; returns once the connection is closed.
async fn run(mut eventloop: EventLoop, state: Loop, signals: Signals) {
    let Loop {
        client,
        filter,
        qos,
        tx,
        link,
        gate,
        inflight,
        mut session,
    } = state;
    let mut current: Arc<str> = session.current().into();
    debug_assert_eq!(eventloop.options.client_id(), current.as_ref());
    let Signals {
        mut closed,
        unsubscribed,
    } = signals;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::Publish(p))) => {
                forward(&inflight, &tx, inflight.tag(&current, &gate), p);
            }
            // The broker closes the connection after the DISCONNECT: the
            // poll after this one fails, and ends the loop below.
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {}
            Ok(Event::Incoming(Packet::UnsubAck(_))) => {
                unsubscribed.send_replace(true);
            }
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                gate.connected();
                link.restored();
                if !ack.session_present {
                    inflight.new_life(&current);
                    tracing::info!(%filter, "mqtt: the session was not kept; subscribing again");
                }
                // Even a resumed session may have lost its subscription:
                // Mosquitto 2.0.11 does not restore shared subscriptions
                // from its persistence. Subscribing again changes nothing
                // where it was kept (retained messages only for a new one).
                let again = Filter {
                    retain_forward_rule: RetainForwardRule::OnNewSubscribe,
                    ..Filter::new(filter.clone(), qos)
                };
                if let Err(e) = client.try_subscribe_many([again]) {
                    tracing::warn!(%filter, "mqtt: subscribing again: {e}");
                }
            }
            Ok(_) => {}
            Err(e) => {
                gate.lost();
                // A closing subscription does not connect again: what its
                // session holds is sent to the next connection to it (a
                // re-subscription of this guest, or the next start).
                if *closed.borrow() || gate.is_closing() {
                    return;
                }
                if taken_over(&e) {
                    let old = current.clone();
                    if session.next().is_some() {
                        current = inflight.claim(&mut session, &gate);
                        tracing::info!(%filter, "mqtt: another member of the group took over session `{old}`; continuing as `{current}`");
                        eventloop.options.set_client_id(current.to_string());
                    } else {
                        tracing::warn!(%filter, "mqtt: another client took over session `{old}`");
                    }
                }
                // Polling again reconnects (resuming a persistent session).
                let delay = link.lost(&e);
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    _ = closed.changed() => return,
                }
            }
        }
    }
}

/// Passes a message that came off the connection to its subscription,
/// recording it as received. After an unsubscribe nobody takes messages
/// any more; the ones still arriving are not acknowledged, and the broker
/// sends them again to the next connection to the session.
fn forward(inflight: &Inflight, tx: &mpsc::UnboundedSender<(Tag, Publish)>, tag: Tag, p: Publish) {
    if p.qos != QoS::AtMostOnce {
        inflight.received(&tag, p.pkid, p.dup);
    }
    let _ = tx.unbounded_send((tag, p));
}

/// A subscription's connection, held by the subscription and by every
/// delivery it handed out: the last holder to go disconnects.
struct Connection {
    client: AsyncClient,
    /// Whether an acknowledgement may go out.
    gate: Arc<AckGate>,
    /// Tells the event loop to stop rather than reconnect.
    closing: watch::Sender<bool>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        let _ = self.closing.send(true);
        let _ = self.client.try_disconnect();
    }
}

/// What settling a delivery does: acknowledge it through its claim. The
/// connection stays open until the delivery is settled or dropped.
struct Settlement {
    claim: Claim,
    _open: Arc<Connection>,
}

impl Settle for Settlement {
    fn settle(self: Box<Self>) -> BoxFuture<'static, Result<(), BrokerError>> {
        Box::pin(async move {
            let Self { claim, _open } = *self;
            claim.settle().await
        })
    }

    fn retrying(&self, attempt: u32) {
        self.claim.retrying(attempt);
    }
}

struct MqttSubscription {
    /// `None` once closed.
    connection: Option<Arc<Connection>>,
    /// Set once the broker confirmed the unsubscribe.
    unsubscribed: watch::Receiver<bool>,
    /// The event loop task: ends once the connection is closed.
    task: tokio::task::JoinHandle<()>,
    /// How long to wait for that confirmation.
    timeout: Duration,
    filter: String,
    pattern: Pattern,
    rx: mpsc::UnboundedReceiver<(Tag, Publish)>,
    retries: Arc<LocalRetries>,
    /// What the client's sessions handed out.
    inflight: Arc<Inflight>,
    /// The sender of `rx`, for a copy held back that is to be handed out
    /// after all.
    requeue: mpsc::UnboundedSender<(Tag, Publish)>,
}

#[async_trait]
impl Subscription for MqttSubscription {
    async fn next(&mut self) -> Option<Result<Delivery, BrokerError>> {
        let connection = self.connection.clone()?;
        loop {
            let (tag, publish) = match self.retries.next_from(&mut self.rx).await {
                Next::Retry(d) => return Some(Ok(d)),
                Next::Source(p) => p?,
            };
            let message = from_publish(&publish);
            // `#` also matches the parent level, `>` does not.
            if !self.pattern.matches(&message.topic) {
                let _ = connection
                    .gate
                    .ack(&connection.client, tag.generation, &publish)
                    .await;
                continue;
            }
            if publish.qos == QoS::AtMostOnce {
                return Some(Ok(self.retries.delivery_settling(message, 1, None)));
            }
            let pkid = publish.pkid;
            let route = Route {
                client: connection.client.clone(),
                gate: connection.gate.clone(),
                generation: tag.generation,
                publish,
            };
            let attempt = match self.inflight.arrived(&tag, route, &self.requeue).await {
                Arrival::New(attempt) => attempt,
                Arrival::Held | Arrival::Settled => continue,
            };
            let settle = Settlement {
                claim: Claim::new(self.inflight.clone(), tag, pkid),
                _open: connection.clone(),
            };
            return Some(Ok(self.retries.delivery_settling(
                message,
                attempt,
                Some(Box::new(settle)),
            )));
        }
    }

    /// From now on a re-subscription of this process takes this session
    /// over (and with it what the broker had sent this connection); this
    /// connection acknowledges nothing more once it does.
    fn begin_close(&mut self) {
        if let Some(connection) = &self.connection {
            connection.gate.close();
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
        // A subscription made again may take this session over from now on.
        connection.gate.close();
        connection
            .client
            .unsubscribe(self.filter.clone())
            .await
            .map_err(connection_error)?;
        let confirmed =
            tokio::time::timeout(self.timeout, self.unsubscribed.wait_for(|done| *done))
                .await
                .map_err(|_| BrokerError::timeout("mqtt unsubscribe", self.timeout))?;
        match confirmed {
            Ok(_) => Ok(()),
            // A subscription made again took the session over: it has the
            // session's subscription now.
            Err(_) if connection.gate.superseded() => Ok(()),
            Err(_) => Err(connection_error(
                "the connection closed before the unsubscribe was confirmed",
            )),
        }
    }
    /// Disconnects without unsubscribing: a persistent session keeps the
    /// subscription, and the broker keeps queuing for it until the host
    /// comes back; what was handed out and not acknowledged is sent again
    /// then. Waits (up to the timeout) until the connection is closed, so
    /// the last PUBACKs are written before the host exits.
    async fn detach(&mut self) -> Result<(), BrokerError> {
        self.retries.clear();
        if self.connection.take().is_none() {
            return Ok(());
        }
        tokio::time::timeout(self.timeout, &mut self.task)
            .await
            .map_err(|_| BrokerError::timeout("mqtt disconnect", self.timeout))?
            .map_err(|e| BrokerError::other(format!("the connection task failed: {e}")))
    }
}
