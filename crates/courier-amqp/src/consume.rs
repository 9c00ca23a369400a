//! Subscriptions: a queue bound to the topic exchange, consumed with manual acks.
//!
//! A broadcast subscription declares an exclusive, auto-deleted queue of its
//! own (or a durable one named by the `durable` option); competing
//! subscriptions of a group share the durable queue `courier.GROUP.PATTERN`.
//! `prefetch` (basic.qos) bounds unacknowledged deliveries: by default what
//! the guest can hold (its queue and batches, from `batch-size`). RabbitMQ's requeue
//! has no delay and classic queues count no attempts, so a `nack` waits out
//! its delay, publishes the message straight back to its queue with the next
//! attempt in a header (confirmed), then acks the original; if Courier dies
//! meanwhile, the unacked original is redelivered by RabbitMQ. The waits are
//! tasks of their subscription (`Delayed`), never detached: closing the
//! subscription cuts them short (the messages go back to the queue at once)
//! and awaits them, and dropping it aborts them (the originals, unacked, are
//! redelivered by RabbitMQ). Each subscription has a connection of its own
//! and opens it again when lost. Closing cancels the consumer but leaves the
//! channel open until every delivery handed out is settled or dropped (the
//! deliveries hold it), so a guest that unsubscribes mid-call can still
//! settle what it holds (they hold its connection too: a lapin connection
//! closes with its last handle).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use courier_broker::backend::{Acker, Delivery, Mode, Subscription, SubscriptionSpec};
use courier_broker::reconnect::Link;
use courier_broker::{BrokerError, Message};
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions,
    BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, Consumer};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::options::{AmqpExtensions, AmqpOptions, QueueType};
use crate::properties::{from_delivery, to_properties};
use crate::{AmqpBackend, KIND, connection_error, wait_confirms};

/// Opens a subscription.
pub async fn subscribe(
    backend: &AmqpBackend,
    spec: SubscriptionSpec,
) -> Result<Box<dyn Subscription>, BrokerError> {
    let extensions: AmqpExtensions = courier_broker::extensions::parse(KIND, &spec.options)?;
    let prefetch = match extensions.prefetch.or(backend.options.prefetch) {
        Some(n) => n.get(),
        None => u16::try_from(spec.prefetch.max(1)).unwrap_or(u16::MAX),
    };
    let (queue, exclusive) = match (&spec.mode, extensions.durable) {
        (Mode::Competing { group }, _) => (format!("courier.{group}.{}", spec.pattern), false),
        (Mode::Broadcast, Some(name)) => (name, false),
        (Mode::Broadcast, None) => (String::new(), true),
    };
    // lapin panics on a name longer than a short string: refuse it here.
    crate::properties::short_string("queue name", &queue)?;
    crate::properties::short_string("binding key", &crate::binding_key(&spec.pattern))?;
    let mut sub = AmqpSubscription {
        link: Link::new(
            KIND,
            format!(
                "{} (subscription `{}`)",
                backend.target.shown(),
                spec.pattern
            ),
        ),
        target: backend.target.clone(),
        options: backend.options.clone(),
        spec,
        prefetch,
        queue,
        exclusive,
        open: None,
        closed: false,
        delayed: Arc::new(Delayed::new()),
    };
    sub.open().await?;
    Ok(Box::new(sub))
}

struct Open {
    /// Shared with every delivery handed out: dropping the last handle of a
    /// lapin connection closes it, and its channels with it (which would
    /// requeue what the guest still holds).
    connection: Arc<Connection>,
    channel: Channel,
    consumer: Consumer,
    /// The queue's name (server-named for exclusive queues).
    queue: String,
}

struct AmqpSubscription {
    /// The health of the subscription's connection.
    link: Link,
    target: crate::connect::Target,
    options: AmqpOptions,
    spec: SubscriptionSpec,
    prefetch: u16,
    queue: String,
    exclusive: bool,
    open: Option<Open>,
    /// Set by `close`: no reconnecting after it.
    closed: bool,
    /// Rejected messages waiting out their delay. Only the subscription
    /// holds it (deliveries hold a `Weak`), so dropping the subscription
    /// aborts the waits.
    delayed: Arc<Delayed>,
}

/// Delayed nacks waiting in this process, across subscriptions.
static WAITING: AtomicUsize = AtomicUsize::new(0);

/// How many rejected messages wait out their delay right now, in this
/// process. A subscription's are requeued and awaited at its close, and
/// aborted when it is dropped, so none outlives its subscription.
pub fn delayed_nacks() -> usize {
    WAITING.load(Ordering::SeqCst)
}

/// Counts one delayed nack in [`WAITING`] for as long as it lives (until its
/// task ends or is aborted).
struct Waiting;

impl Waiting {
    fn new() -> Self {
        WAITING.fetch_add(1, Ordering::SeqCst);
        Self
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        WAITING.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The delayed nacks of one subscription: tasks it owns, requeued at once
/// and awaited when it closes.
struct Delayed {
    /// `None` once the subscription closed: a nack then requeues at once.
    tasks: Mutex<Option<JoinSet<()>>>,
    /// Set at close: every wait ends early.
    closing: watch::Sender<bool>,
}

impl Delayed {
    fn new() -> Self {
        Self {
            tasks: Mutex::new(Some(JoinSet::new())),
            closing: watch::Sender::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<JoinSet<()>>> {
        self.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Requeues `acker`'s message after `delay` (or at close, if sooner) in
    /// a task of the subscription; gives it back when the subscription is
    /// closed already.
    fn requeue_later(&self, acker: Box<AmqpAcker>, delay: Duration) -> Result<(), Box<AmqpAcker>> {
        let mut tasks = self.lock();
        let Some(tasks) = tasks.as_mut() else {
            return Err(acker);
        };
        // Forget the waits that are over.
        while tasks.try_join_next().is_some() {}
        let mut closing = self.closing.subscribe();
        let waiting = Waiting::new();
        tasks.spawn(async move {
            let _waiting = waiting;
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = closing.wait_for(|closing| *closing) => {}
            }
            let (attempt, queue) = (acker.attempt + 1, acker.queue.clone());
            if let Err(e) = acker.requeue(attempt).await {
                tracing::warn!(%queue, "amqp: settling a rejected message: {e}");
            }
        });
        Ok(())
    }

    /// Ends every wait now, and returns once each message is requeued (or
    /// its requeue failed). Later nacks requeue at once.
    async fn finish(&self) {
        let tasks = self.lock().take();
        self.closing.send_replace(true);
        if let Some(mut tasks) = tasks {
            while let Some(done) = tasks.join_next().await {
                if let Err(e) = done {
                    tracing::error!("amqp: a delayed nack failed: {e}");
                }
            }
        }
    }
}

impl AmqpSubscription {
    /// `x-queue-type` for a named queue of a client with `queue-type` set;
    /// exclusive queues stay classic.
    fn queue_arguments(&self) -> FieldTable {
        let mut arguments = FieldTable::default();
        if !self.exclusive && self.options.queue_type == QueueType::Quorum {
            arguments.insert(
                "x-queue-type".into(),
                AMQPValue::LongString("quorum".into()),
            );
        }
        arguments
    }

    async fn open(&mut self) -> Result<(), BrokerError> {
        let connection = self.target.open(self.options.connect_timeout.get()).await?;
        let channel = connection
            .create_channel()
            .await
            .map_err(connection_error)?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(connection_error)?;
        channel
            .basic_qos(self.prefetch, BasicQosOptions::default())
            .await
            .map_err(connection_error)?;
        let declared = channel
            .queue_declare(
                self.queue.as_str().into(),
                QueueDeclareOptions {
                    durable: !self.exclusive && self.options.durable,
                    exclusive: self.exclusive,
                    auto_delete: self.exclusive,
                    ..Default::default()
                },
                self.queue_arguments(),
            )
            .await
            .map_err(|e| {
                connection_error(e).context(format!("declaring queue `{}`", self.queue))
            })?;
        let queue = declared.name().as_str().to_string();
        channel
            .queue_bind(
                queue.as_str().into(),
                self.options.exchange.as_str().into(),
                crate::binding_key(&self.spec.pattern).into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| connection_error(e).context(format!("binding queue `{queue}`")))?;
        let consumer = channel
            .basic_consume(
                queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(connection_error)?;
        self.open = Some(Open {
            connection: Arc::new(connection),
            channel,
            consumer,
            queue,
        });
        Ok(())
    }
}

#[async_trait]
impl Subscription for AmqpSubscription {
    async fn next(&mut self) -> Option<Result<Delivery, BrokerError>> {
        loop {
            if self.closed {
                return None;
            }
            let Some(open) = self.open.as_mut() else {
                // Connect again, declaring the queue, its binding and qos
                // again, with capped exponential backoff between attempts.
                match self.open().await {
                    Ok(()) => self.link.restored(),
                    Err(e) => {
                        let delay = self.link.lost(&e);
                        tokio::time::sleep(delay).await;
                    }
                }
                continue;
            };
            let lost = match open.consumer.next().await {
                Some(Ok(d)) => Ok(d),
                Some(Err(e)) => Err(connection_error(e)),
                None => Err(connection_error("the consumer was cancelled")),
            };
            let link = (
                open.connection.clone(),
                open.channel.clone(),
                open.queue.clone(),
            );
            let delivery = match lost {
                Ok(d) => d,
                Err(e) => {
                    // Reported once; the next call reconnects.
                    self.open = None;
                    let delay = self.link.lost(&e);
                    tokio::time::sleep(delay).await;
                    return Some(Err(e));
                }
            };
            let Some(delivery) = self.accept(delivery, &link.0, &link.1, &link.2).await else {
                continue;
            };
            return Some(Ok(delivery));
        }
    }

    /// Cancels the consumer. Messages the broker sent before the cancel
    /// and nobody took go back to the queue without counting an attempt;
    /// rejected messages still waiting out their delay go back at once
    /// (counting their attempt), and are awaited. The channel (and its
    /// connection) stays open until every delivery handed out is settled or
    /// dropped, so that they can still be settled.
    async fn close(&mut self) -> Result<(), BrokerError> {
        self.closed = true;
        let cancelled = self.cancel().await;
        self.delayed.finish().await;
        cancelled
    }
}

impl AmqpSubscription {
    /// Cancels the consumer and hands back what it had buffered.
    async fn cancel(&mut self) -> Result<(), BrokerError> {
        let Some(mut open) = self.open.take() else {
            return Ok(());
        };
        // Bounded like every wait on the broker: on a connection that died
        // unnoticed (a broker restart), the cancel-ok never comes.
        let timeout = self.options.connect_timeout.get();
        tokio::time::timeout(
            timeout,
            open.channel
                .basic_cancel(open.consumer.tag(), BasicCancelOptions::default()),
        )
        .await
        .map_err(|_| BrokerError::timeout("amqp cancel", timeout))?
        .map_err(connection_error)?;
        // After the cancel the consumer yields what it had buffered, then ends.
        let handed_back = async {
            while let Some(Ok(delivery)) = open.consumer.next().await {
                if let Some(d) = self
                    .accept(delivery, &open.connection, &open.channel, &open.queue)
                    .await
                {
                    d.acker.release().await?;
                }
            }
            Ok::<_, BrokerError>(())
        };
        tokio::time::timeout(timeout, handed_back)
            .await
            .map_err(|_| BrokerError::timeout("amqp cancel", timeout))?
    }

    /// A broker delivery as a Courier delivery; `None` (and acked) when
    /// the pattern does not match it.
    async fn accept(
        &self,
        delivery: lapin::message::Delivery,
        connection: &Arc<Connection>,
        channel: &Channel,
        queue: &str,
    ) -> Option<Delivery> {
        let (message, recorded) = from_delivery(
            delivery.routing_key.as_str(),
            &delivery.properties,
            delivery.data,
        );
        // `#` also matches zero tokens, `>` needs one: drop the difference.
        if !self.spec.pattern.matches(&message.topic) {
            let timeout = self.options.connect_timeout.get();
            let acked = delivery.acker.ack(BasicAckOptions::default());
            if let Err(e) = settled("amqp ack", timeout, acked).await {
                tracing::debug!(topic = %message.topic, "amqp: acking a message outside the pattern: {e}");
            }
            return None;
        }
        let attempt = recorded.unwrap_or(1) + u32::from(delivery.redelivered);
        Some(Delivery {
            message: message.clone(),
            attempt,
            acker: Box::new(AmqpAcker {
                _connection: connection.clone(),
                acker: delivery.acker,
                channel: channel.clone(),
                queue: queue.to_string(),
                message,
                attempt,
                persistent: self.options.durable,
                timeout: self.options.connect_timeout.get(),
                delayed: Arc::downgrade(&self.delayed),
            }),
        })
    }
}

struct AmqpAcker {
    /// Keeps the connection (and so the channel) open until settled.
    _connection: Arc<Connection>,
    acker: lapin::Acker,
    channel: Channel,
    queue: String,
    message: Message,
    attempt: u32,
    persistent: bool,
    timeout: Duration,
    /// Where a delayed nack waits: the subscription's tasks.
    delayed: Weak<Delayed>,
}

/// The outcome of a lapin ack or nack, bounded by `timeout` like every wait
/// on the broker. lapin answers `Ok(false)` for an acker whose channel ended
/// before the ack went out: the broker never saw it and redelivers the
/// message, so it is an error here, not a success.
async fn settled(
    what: &'static str,
    timeout: Duration,
    settle: impl std::future::Future<Output = lapin::Result<bool>>,
) -> Result<(), BrokerError> {
    match tokio::time::timeout(timeout, settle).await {
        Err(_) => Err(BrokerError::timeout(what, timeout)),
        Ok(Err(e)) => Err(connection_error(e)),
        Ok(Ok(true)) => Ok(()),
        Ok(Ok(false)) => Err(connection_error(format!(
            "{what}: the channel closed before it was sent; the broker delivers the message again"
        ))),
    }
}

#[async_trait]
impl Acker for AmqpAcker {
    async fn ack(self: Box<Self>) -> Result<(), BrokerError> {
        settled(
            "amqp ack",
            self.timeout,
            self.acker.ack(BasicAckOptions::default()),
        )
        .await
    }

    async fn nack(self: Box<Self>, delay: Duration) -> Result<(), BrokerError> {
        // Hold the message for its delay, then put it back with the next
        // attempt; the original stays unacked until the copy is confirmed.
        // Once the subscription is closed (or gone) there is no waiting.
        let attempt = self.attempt + 1;
        let acker = match self.delayed.upgrade() {
            Some(delayed) if !delay.is_zero() => match delayed.requeue_later(self, delay) {
                Ok(()) => return Ok(()),
                Err(acker) => acker,
            },
            _ => self,
        };
        acker.requeue(attempt).await
    }

    async fn release(self: Box<Self>) -> Result<(), BrokerError> {
        let attempt = self.attempt;
        self.requeue(attempt).await
    }
}

impl AmqpAcker {
    /// Puts the message back at the end of its queue recording `attempt`,
    /// then acks the original; if the copy cannot be published, nacks the
    /// original with requeue (the broker then marks it redelivered, which
    /// counts one attempt more).
    async fn requeue(self, attempt: u32) -> Result<(), BrokerError> {
        let republished = async {
            let confirm = self
                .channel
                .basic_publish(
                    "".into(),
                    self.queue.as_str().into(),
                    BasicPublishOptions::default(),
                    &self.message.data,
                    to_properties(&self.message, self.persistent, Some(attempt))?,
                )
                .await
                .map_err(connection_error)?;
            wait_confirms(vec![(self.queue.clone(), confirm)], self.timeout).await
        };
        match republished.await {
            Ok(()) => {
                settled(
                    "amqp ack",
                    self.timeout,
                    self.acker.ack(BasicAckOptions::default()),
                )
                .await
            }
            Err(e) => {
                tracing::warn!(queue = %self.queue, "amqp: requeue failed, nacking instead: {e}");
                let requeue = BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                };
                settled("amqp nack", self.timeout, self.acker.nack(requeue)).await
            }
        }
    }
}
