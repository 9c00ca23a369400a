//! The publishing connection: `send` waits for the broker's acknowledgement.
//!
//! rumqttc sends publishes in request order and reports each with its packet
//! id; the event loop task matches those ids to waiting `send`s, then the
//! PUBACK (QoS 1) or PUBCOMP (QoS 2) to the id. QoS 0 completes when sent.
//! Retransmissions after a reconnect reuse their packet id and are not
//! counted twice.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use courier_broker::reconnect::Link;
use courier_broker::{BrokerError, Message};
use rumqttc::Outgoing;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason, PubCompReason};
use rumqttc::v5::{AsyncClient, Event, EventLoop, Request};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::options::MqttOptions;
use crate::topics::to_publish;
use crate::{KIND, connection_error};

type Done = oneshot::Sender<Result<(), BrokerError>>;

#[derive(Default)]
struct Waiting {
    /// Requested, not yet sent: in request order.
    queued: VecDeque<Done>,
    /// Sent, waiting for the acknowledgement of this packet id.
    sent: HashMap<u16, Done>,
    /// How many of `queued` (the first ones) had their requests taken into
    /// the event loop's pending list when the connection was last lost:
    /// rumqttc drops that list when the broker starts a new session.
    doomed: usize,
}

impl Waiting {
    /// The live connection was lost. rumqttc moved the requests still in
    /// its channel into its pending list, to be resent if the session
    /// resumes: `unassigned` of them, the publishes without a packet id
    /// yet. Their waiters are the first of `queued` once the events the
    /// old connection left behind are read (they come before the next
    /// CONNACK).
    fn lost(&mut self, unassigned: usize) {
        self.doomed = unassigned;
    }

    /// The next request was written with packet id `pkid` (or a request
    /// was written again: ignored).
    fn written(&mut self, pkid: u16, qos: QoS) {
        if self.sent.contains_key(&pkid) {
            return; // a retransmission
        }
        if let Some(done) = self.queued.pop_front() {
            if qos == QoS::AtMostOnce {
                let _ = done.send(Ok(()));
            } else {
                self.sent.insert(pkid, done);
            }
        }
    }

    /// The broker acknowledged packet `pkid`.
    fn acknowledged(&mut self, pkid: u16, result: Result<(), BrokerError>) {
        if let Some(done) = self.sent.remove(&pkid) {
            let _ = done.send(result);
        }
    }

    /// Connected again. In a new session rumqttc dropped the pending
    /// requests and the unacknowledged publishes: they never get an
    /// acknowledgement, so their publishers are told now (else every later
    /// acknowledgement would go to the wrong waiter).
    fn reconnected(&mut self, session_present: bool) {
        let doomed = std::mem::take(&mut self.doomed);
        if session_present {
            return;
        }
        let dropped = || {
            Err(connection_error(
                "the connection was lost before the broker acknowledged the message",
            ))
        };
        for done in self.queued.drain(..doomed.min(self.queued.len())) {
            let _ = done.send(dropped());
        }
        for (_, done) in self.sent.drain() {
            let _ = done.send(dropped());
        }
    }
}

static CONNECTIONS: AtomicU64 = AtomicU64::new(0);

/// A unique client id for a connection of this process.
pub(crate) fn client_id(prefix: &str, role: &str) -> String {
    format!(
        "{prefix}-{role}-{}-{}",
        std::process::id(),
        CONNECTIONS.fetch_add(1, Ordering::Relaxed)
    )
}

/// The options rumqttc connects with.
pub(crate) fn mqtt_options(options: &MqttOptions, id: String) -> rumqttc::v5::MqttOptions {
    let mut o = rumqttc::v5::MqttOptions::new(id, options.host.clone(), options.port);
    o.set_keep_alive(Duration::from_secs(10));
    o.set_connection_timeout(options.connect_timeout.get().as_secs().max(1));
    if let Some(c) = &options.credentials {
        let password = c.password.as_ref().map_or("", |p| p.expose());
        o.set_credentials(c.user.clone(), password.to_string());
    }
    if let Some(tls) = &options.tls {
        o.set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(tls.config()),
        ));
    }
    o
}

/// Polls `eventloop` until the broker accepts the connection; whether it
/// resumed a session.
pub(crate) async fn connected(
    eventloop: &mut EventLoop,
    options: &MqttOptions,
) -> Result<bool, BrokerError> {
    let address = format!("{}:{}", options.host, options.port);
    let wait = async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => return Ok(ack.session_present),
                Ok(_) => {}
                Err(e) => return Err(connection_error(e).context(&address)),
            }
        }
    };
    tokio::time::timeout(options.connect_timeout.get(), wait)
        .await
        .map_err(|_| {
            connection_error(format!(
                "{address}: no answer within {:?}",
                options.connect_timeout.get()
            ))
        })?
}

/// The publishing connection.
pub struct Publisher {
    client: AsyncClient,
    waiting: Arc<Mutex<Waiting>>,
    order: tokio::sync::Mutex<()>,
    qos: QoS,
    timeout: Duration,
    task: JoinHandle<()>,
}

fn lock(w: &Mutex<Waiting>) -> std::sync::MutexGuard<'_, Waiting> {
    w.lock().unwrap_or_else(|e| e.into_inner())
}

impl Publisher {
    /// Connects and starts the event loop task.
    pub async fn connect(options: &MqttOptions) -> Result<Self, BrokerError> {
        let (client, mut eventloop) = AsyncClient::new(
            mqtt_options(options, client_id(&options.client_id, "pub")),
            1000,
        );
        connected(&mut eventloop, options).await?;
        let waiting = Arc::new(Mutex::new(Waiting::default()));
        let link = Link::new(
            KIND,
            format!("{}:{} (publisher)", options.host, options.port),
        );
        let task = tokio::spawn(run(
            eventloop,
            waiting.clone(),
            options.qos,
            options.require_subscribers,
            link,
        ));
        Ok(Self {
            client,
            waiting,
            order: tokio::sync::Mutex::new(()),
            qos: options.qos,
            timeout: options.connect_timeout.get(),
            task,
        })
    }

    /// Publishes and waits for every acknowledgement.
    pub async fn publish(&self, messages: Vec<Message>) -> Result<(), BrokerError> {
        let mut acks = Vec::with_capacity(messages.len());
        {
            // Requests and waiters must enter their queues in the same order.
            let _order = self.order.lock().await;
            for m in messages {
                let (topic, properties) = to_publish(&m)?;
                let (tx, rx) = oneshot::channel();
                lock(&self.waiting).queued.push_back(tx);
                if let Err(e) = self
                    .client
                    .publish_with_properties(topic, self.qos, false, m.data, properties)
                    .await
                {
                    lock(&self.waiting).queued.pop_back();
                    return Err(connection_error(e));
                }
                acks.push(rx);
            }
        }
        for rx in acks {
            match tokio::time::timeout(self.timeout, rx).await {
                Ok(Ok(result)) => result?,
                Ok(Err(_)) => return Err(connection_error("the connection task stopped")),
                Err(_) => {
                    return Err(BrokerError::timeout(
                        "mqtt publish acknowledgement",
                        self.timeout,
                    ));
                }
            }
        }
        Ok(())
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn refused(reason: impl std::fmt::Debug) -> BrokerError {
    BrokerError::other(format!("the broker refused the message: {reason:?}"))
}

async fn run(
    mut eventloop: EventLoop,
    waiting: Arc<Mutex<Waiting>>,
    qos: QoS,
    require_subscribers: bool,
    link: Link,
) {
    // Whether the connection was up: rumqttc moves its requests into its
    // pending list only when a live connection fails, not when a reconnect
    // attempt does.
    let mut up = true;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                up = true;
                lock(&waiting).reconnected(ack.session_present);
                link.restored();
            }
            // Also an event the failed connection left behind (it comes
            // before the CONNACK): rumqttc had given the request its packet
            // id when the write failed.
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => lock(&waiting).written(pkid, qos),
            Ok(Event::Incoming(Packet::PubAck(ack))) => {
                let result = match ack.reason {
                    PubAckReason::Success => Ok(()),
                    PubAckReason::NoMatchingSubscribers if !require_subscribers => Ok(()),
                    PubAckReason::NoMatchingSubscribers => Err(BrokerError::busy(
                        KIND,
                        "no subscription on the broker matched the message (MQTT reason 16), \
                         so nothing received it; try again once its consumers have subscribed",
                    )),
                    r => Err(refused(r)),
                };
                lock(&waiting).acknowledged(ack.pkid, result);
            }
            Ok(Event::Incoming(Packet::PubComp(comp))) => {
                let result = match comp.reason {
                    PubCompReason::Success => Ok(()),
                    r => Err(refused(r)),
                };
                lock(&waiting).acknowledged(comp.pkid, result);
            }
            Ok(_) => {}
            Err(e) => {
                // Polling again reconnects; rumqttc resends unacknowledged
                // publishes with their packet ids if the session resumes.
                if std::mem::take(&mut up) {
                    let unassigned = eventloop
                        .pending
                        .iter()
                        .filter(|r| matches!(r, Request::Publish(p) if p.pkid == 0))
                        .count();
                    lock(&waiting).lost(unassigned);
                }
                let delay = link.lost(&e);
                tokio::time::sleep(delay).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiter(w: &mut Waiting) -> oneshot::Receiver<Result<(), BrokerError>> {
        let (tx, rx) = oneshot::channel();
        w.queued.push_back(tx);
        rx
    }

    /// A write that fails after rumqttc gave the request its packet id
    /// leaves that `Outgoing::Publish` event behind, to be read after the
    /// failure; then the reconnect starts a new session. Every waiter must
    /// get the answer of its own request.
    #[test]
    fn a_write_that_failed_does_not_shift_the_answers() {
        let mut w = Waiting::default();
        let first = waiter(&mut w); // given packet id 7, then the write failed
        let second = waiter(&mut w); // still in the channel: moved to pending
        w.lost(1);
        w.written(7, QoS::AtLeastOnce); // the event left behind
        let third = waiter(&mut w); // requested while reconnecting
        w.reconnected(false);
        w.written(8, QoS::AtLeastOnce);
        w.acknowledged(8, Ok(()));
        let answer = |mut rx: oneshot::Receiver<Result<(), BrokerError>>| rx.try_recv().unwrap();
        assert!(answer(first).is_err(), "dropped with the old session");
        assert!(answer(second).is_err(), "dropped with the old session");
        assert!(answer(third).is_ok(), "written and acknowledged");
        assert!(w.queued.is_empty() && w.sent.is_empty());
    }
}
