//! The backend trait: what Courier needs from a message broker.
//!
//! It is shaped for every broker Courier targets. `publish` returns once the
//! broker has accepted the messages with the durability the backend was
//! configured for (JetStream ack, MQTT PUBACK, AMQP publisher confirm, Kafka
//! ack). `subscribe` opens a stream of [`Delivery`]s, broadcast or competing
//! ([`Mode`]); each delivery is settled exactly once through its [`Acker`]:
//! `ack`, `nack` (redeliver after a delay) or `term` (never redeliver — Courier
//! has dead-lettered it). Redelivery policy (backoff, `max-attempts`, dead
//! letters) lives in the dispatcher and is the same on every backend; each
//! backend maps it to its native mechanism.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

use crate::{BrokerError, Message, Pattern};

/// How long an acquired message may stay unsettled before the broker takes it
/// back and redelivers it, unless configured otherwise.
pub const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(30);

/// How the messages of a subscription are shared.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Publish-subscribe: every subscription gets every message.
    Broadcast,
    /// Point-to-point: each message goes to one member of the named group of
    /// competing consumers (NATS queue group, Kafka consumer group, RabbitMQ
    /// queue, Redis Streams group, MQTT shared subscription).
    Competing {
        /// The group's name; subscriptions with the same group share messages.
        group: String,
    },
}

/// What a backend promises; the conformance suite asserts exactly these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    /// Accepted messages survive a restart of the broker or of Courier.
    pub durable: bool,
    /// `content-type`, `reply-to` and `metadata` travel natively and come back unchanged.
    pub native_headers: bool,
    /// Messages on one channel arrive in the order they were published
    /// (first deliveries; redeliveries may come later).
    pub ordered: bool,
    /// A nack makes the broker redeliver the message (else it is lost).
    pub redelivery: bool,
    /// Point-to-point subscriptions (competing consumers) are possible.
    pub competing: bool,
    /// Subscriptions may use the wildcards `*` and `>`.
    pub wildcards: bool,
}

impl Features {
    /// Everything: what the embedded broker and JetStream offer.
    pub const ALL: Features = Features {
        durable: true,
        native_headers: true,
        ordered: true,
        redelivery: true,
        competing: true,
        wildcards: true,
    };
}

/// What to subscribe to, and how.
#[derive(Debug, Clone)]
pub struct SubscriptionSpec {
    /// The channel pattern, NATS syntax.
    pub pattern: Pattern,
    /// Broadcast or competing consumers.
    pub mode: Mode,
    /// How long an unsettled delivery stays acquired before redelivery.
    pub ack_wait: Duration,
    /// How many unsettled deliveries the consumer can hold at once (its
    /// queue and batches); backends with a prefetch window size it from this.
    pub prefetch: usize,
    /// Backend-specific extensions (`durable`, `qos`, `offset`, ...), as
    /// text; each backend reads them into its typed struct with
    /// [`crate::extensions::parse`].
    pub options: BTreeMap<String, String>,
}

impl SubscriptionSpec {
    /// A broadcast subscription with default settings.
    pub fn broadcast(pattern: Pattern) -> Self {
        Self {
            pattern,
            mode: Mode::Broadcast,
            ack_wait: DEFAULT_ACK_WAIT,
            prefetch: 100,
            options: BTreeMap::new(),
        }
    }

    /// A competing-consumer subscription in `group`, with default settings.
    pub fn competing(pattern: Pattern, group: impl Into<String>) -> Self {
        Self {
            mode: Mode::Competing {
                group: group.into(),
            },
            ..Self::broadcast(pattern)
        }
    }
}

/// A message broker as Courier sees it.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// The backend kind, as written in configuration (`embedded`, `nats`, ...).
    fn kind(&self) -> &'static str;

    /// What this backend promises.
    fn features(&self) -> Features;

    /// Publishes `messages`, each on its own topic, returning once the broker
    /// accepted all of them.
    async fn publish(&self, messages: Vec<Message>) -> Result<(), BrokerError>;

    /// Opens a subscription.
    async fn subscribe(&self, spec: SubscriptionSpec)
    -> Result<Box<dyn Subscription>, BrokerError>;

    /// Messages accepted by the broker and not yet settled, where the backend
    /// can know it cheaply (the embedded broker can; remote ones say `None`).
    /// Used to tell when a finite run has drained.
    fn unsettled(&self) -> Option<u64> {
        None
    }
}

impl fmt::Debug for dyn Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Backend({})", self.kind())
    }
}

/// An open subscription: a stream of deliveries.
#[async_trait]
pub trait Subscription: Send {
    /// The next delivery; `None` once the subscription is closed. An `Err` is
    /// a transient failure (the backend keeps reconnecting); the caller logs it
    /// and asks again.
    async fn next(&mut self) -> Option<Result<Delivery, BrokerError>>;

    /// At least one and at most `max` deliveries, waiting for the first like
    /// [`Subscription::next`]. Backends that can hand over several at once
    /// (one lock, one round trip) override it; it must be cancel-safe too.
    async fn next_batch(&mut self, max: usize) -> Option<Result<Vec<Delivery>, BrokerError>> {
        let _ = max;
        self.next().await.map(|r| r.map(|d| vec![d]))
    }

    /// Marks the subscription as going away, at once and without I/O, just
    /// before [`Subscription::close`]: a subscription made again from now on
    /// may take over what this one holds at the broker (MQTT: its session).
    /// The default does nothing.
    fn begin_close(&mut self) {}

    /// Stops delivery. Unsettled deliveries go back to the broker.
    async fn close(&mut self) -> Result<(), BrokerError>;

    /// Stops delivery because the host shuts down: like
    /// [`Subscription::close`], except that a subscription whose membership
    /// lives in a session of its own (MQTT) keeps it, so the broker goes on
    /// keeping messages for it until the host comes back.
    async fn detach(&mut self) -> Result<(), BrokerError> {
        self.close().await
    }
}

/// One message handed out by a subscription, to be settled exactly once.
pub struct Delivery {
    /// The message as it arrived.
    pub message: Message,
    /// 1 for the first delivery, counting redeliveries.
    pub attempt: u32,
    /// Settles this delivery with the broker.
    pub acker: Box<dyn Acker>,
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("topic", &self.message.topic)
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

/// Settles one delivery.
#[async_trait]
pub trait Acker: Send + Sync {
    /// Accepted: the broker may forget the message.
    async fn ack(self: Box<Self>) -> Result<(), BrokerError>;
    /// Rejected, to be redelivered after `delay` with the attempt counter raised.
    async fn nack(self: Box<Self>, delay: Duration) -> Result<(), BrokerError>;
    /// Rejected for good: never redeliver (Courier dead-lettered or dropped it).
    async fn term(self: Box<Self>) -> Result<(), BrokerError> {
        self.ack().await
    }
    /// Handed back untouched (the guest never saw it): available again at
    /// once, without counting an attempt where the broker allows that. The
    /// default is a nack without delay, for brokers that count every
    /// delivery themselves.
    async fn release(self: Box<Self>) -> Result<(), BrokerError> {
        self.nack(Duration::ZERO).await
    }
    /// Where this delivery can be accepted together with others, for
    /// [`ack_all`](crate::batch::ack_all): a delivery accepted that way is
    /// not accepted again through this acker, which is dropped. `None` (the
    /// default): it is accepted alone, with [`Acker::ack`].
    fn batch(&self) -> Option<crate::batch::BatchTag> {
        None
    }
}
