//! JetStream: durable publishing and pull consumers with explicit acks.
//!
//! `publish` waits for every message's PubAck. Each subscription reads from
//! a pull consumer filtered on its pattern: competing subscriptions of one
//! group share a durable consumer named after the group and the pattern;
//! a broadcast subscription gets an ephemeral consumer of its own (delivering
//! new messages), or a durable one when the `durable` option names it. Acks
//! are confirmed by the server (double ack); `nack` is a NAK with delay, and
//! `term` stops redelivery. The attempt is the server's delivery count,
//! less the deliveries Courier handed back untouched (released by the host,
//! or pulled ahead and never handed out when a subscription closed): the
//! server counts those too, Courier does not ([`HandedBack`]). A
//! subscription pulls only what the host asks for, one pull request at a
//! time ([`PULL_EXPIRES`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::{self, AckKind, context::PublishErrorKind};
use async_trait::async_trait;
use courier_broker::backend::{Acker, Delivery, Mode, Subscription, SubscriptionSpec};
use courier_broker::{BrokerError, Message};
use futures::{FutureExt, StreamExt};

use crate::connection_error;
use crate::headers::{from_nats, to_headers};
use crate::options::{self, JetStreamOptions, NatsExtensions, Storage};
use crate::progress::{InProgress, Registration};

/// A JetStream context bound to the client's stream.
pub struct JetStream {
    context: jetstream::Context,
    stream: jetstream::stream::Stream,
    timeout: Duration,
    handed_back: HandedBack,
}

/// How many times each message was handed back untouched, by consumer and
/// stream sequence, until it is acked or terminated: the server's delivery
/// count less this is the attempt. Kept in memory: after a restart of
/// Courier, a hand-back before it counts as an attempt (as a crash does).
#[derive(Clone, Default)]
struct HandedBack(Arc<Mutex<HashMap<(String, u64), u32>>>);

impl HandedBack {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, u64), u32>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn count(&self, key: &(String, u64)) -> u32 {
        self.lock().get(key).copied().unwrap_or(0)
    }

    fn add(&self, key: (String, u64)) {
        *self.lock().entry(key).or_default() += 1;
    }

    fn forget(&self, key: &(String, u64)) {
        self.lock().remove(key);
    }
}

impl JetStream {
    /// Finds the stream, creating it when `subjects` are given. Requests
    /// (PubAcks included) time out after `timeout`.
    pub async fn new(
        client: async_nats::Client,
        options: JetStreamOptions,
        timeout: Duration,
    ) -> Result<Self, BrokerError> {
        let mut context = jetstream::new(client);
        context.set_timeout(timeout);
        let stream = if options.subjects.is_empty() {
            context.get_stream(&options.stream).await.map_err(|e| {
                BrokerError::invalid(format!(
                    "jetstream stream `{}` is not there (set options.subjects to let Courier create it)",
                    options.stream
                ))
                .with_backend(crate::KIND)
                .with_source(e)
            })?
        } else {
            let stream = context
                .get_or_create_stream(jetstream::stream::Config {
                    name: options.stream.clone(),
                    subjects: options.subjects.clone(),
                    storage: match options.storage {
                        Storage::File => jetstream::stream::StorageType::File,
                        Storage::Memory => jetstream::stream::StorageType::Memory,
                    },
                    num_replicas: options.replicas,
                    ..Default::default()
                })
                .await
                .map_err(|e| connection_error(e).context(format!("stream `{}`", options.stream)))?;
            // An existing stream must capture the configured subjects too.
            let mut config = stream.cached_info().config.clone();
            let missing: Vec<String> = options
                .subjects
                .iter()
                .filter(|s| !config.subjects.contains(s))
                .cloned()
                .collect();
            if missing.is_empty() {
                stream
            } else {
                tracing::info!(stream = %options.stream, ?missing, "adding subjects to the stream");
                config.subjects.extend(missing);
                context.update_stream(config).await.map_err(|e| {
                    connection_error(e).context(format!("updating stream `{}`", options.stream))
                })?;
                context.get_stream(&options.stream).await.map_err(|e| {
                    connection_error(e).context(format!("stream `{}`", options.stream))
                })?
            }
        };
        Ok(Self {
            context,
            stream,
            timeout,
            handed_back: HandedBack::default(),
        })
    }

    /// Publishes all messages, then waits for all their acks.
    pub async fn publish(&self, messages: Vec<Message>) -> Result<(), BrokerError> {
        let mut acks = Vec::with_capacity(messages.len());
        for m in messages {
            let headers = to_headers(&m, true)?;
            let topic = m.topic.clone();
            let ack = self
                .context
                .publish_with_headers(m.topic, headers, m.data)
                .await
                .map_err(|e| publish_error(&topic, e, self.timeout))?;
            acks.push((topic, ack));
        }
        for (topic, ack) in acks {
            ack.await
                .map_err(|e| publish_error(&topic, e, self.timeout))?;
        }
        Ok(())
    }

    /// Opens a pull consumer for `spec`.
    pub async fn subscribe(
        &self,
        spec: SubscriptionSpec,
    ) -> Result<Box<dyn Subscription>, BrokerError> {
        let filter = spec.pattern.as_str();
        let extensions: NatsExtensions =
            courier_broker::extensions::parse(crate::KIND, &spec.options)?;
        let name = match (&spec.mode, &extensions.durable) {
            (Mode::Competing { group }, _) => Some(consumer_name(group, filter)),
            (Mode::Broadcast, Some(durable)) => Some(consumer_name(durable, filter)),
            (Mode::Broadcast, None) => None,
        };
        let deliver_policy = match extensions.deliver_policy {
            None if name.is_some() => DeliverPolicy::All,
            None => DeliverPolicy::New,
            Some(options::DeliverPolicy::All) => DeliverPolicy::All,
            Some(options::DeliverPolicy::New) => DeliverPolicy::New,
            Some(options::DeliverPolicy::Last) => DeliverPolicy::Last,
        };
        let max_ack_pending = match extensions.max_ack_pending {
            None => i64::try_from(spec.prefetch).unwrap_or(i64::MAX).max(1000),
            Some(n) => n.get(),
        };
        let config = pull::Config {
            durable_name: name.clone(),
            deliver_policy,
            ack_policy: AckPolicy::Explicit,
            ack_wait: spec.ack_wait,
            filter_subject: filter.to_string(),
            max_ack_pending,
            inactive_threshold: if name.is_some() {
                Duration::ZERO
            } else {
                Duration::from_secs(300)
            },
            ..Default::default()
        };
        let consumer: jetstream::consumer::PullConsumer = match &name {
            Some(n) => self.stream.get_or_create_consumer(n, config).await,
            None => self.stream.create_consumer(config).await,
        }
        .map_err(|e| connection_error(e).context(format!("creating consumer on `{filter}`")))?;
        let consumer_name = consumer.cached_info().name.clone();
        let ephemeral = name.is_none().then(|| consumer_name.clone());
        Ok(Box::new(JsSubscription {
            consumer,
            progress: InProgress::start(self.context.client(), spec.ack_wait),
            batch: None,
            closed: false,
            stream: self.stream.clone(),
            ephemeral,
            name: consumer_name,
            handed_back: self.handed_back.clone(),
        }))
    }
}

fn publish_error(
    topic: &str,
    e: jetstream::context::PublishError,
    timeout: Duration,
) -> BrokerError {
    match e.kind() {
        PublishErrorKind::TimedOut => BrokerError::timeout("jetstream publish", timeout),
        // "No responders": no stream captures the subject — or JetStream is
        // not answering yet, right after a server restart. The client's
        // stream was there at connect, so treat it as the broker's fault.
        PublishErrorKind::StreamNotFound => connection_error(e).context(format!("JetStream did not answer for `{topic}` (no stream captures it, or JetStream is restarting)")),
        _ => connection_error(e).context(format!("publishing to `{topic}`")),
    }
}

/// A durable consumer name from a group (or durable) name and the pattern:
/// stable across restarts, and distinct per pattern.
pub fn consumer_name(group: &str, filter: &str) -> String {
    let clean: String = group
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    // FNV-1a: stable across Rust versions, unlike std's hasher.
    let hash = filter.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    format!("{clean}_{:08x}", hash as u32)
}

/// How long one pull request waits for messages. A subscription has at
/// most one open, for at most what the host asked for; closing waits for it
/// to end (the server says when) so that nothing it brings is lost.
const PULL_EXPIRES: Duration = Duration::from_secs(1);

struct JsSubscription {
    consumer: jetstream::consumer::PullConsumer,
    /// Deliveries handed out and unsettled, kept from the server's deadline.
    progress: InProgress,
    /// The open pull request, kept across cancelled calls.
    batch: Option<pull::Batch>,
    closed: bool,
    stream: jetstream::stream::Stream,
    ephemeral: Option<String>,
    /// The consumer's name, for [`HandedBack`].
    name: String,
    handed_back: HandedBack,
}

/// The key of a message in [`HandedBack`], and its attempt.
fn attempt(name: &str, handed_back: &HandedBack, m: &jetstream::Message) -> ((String, u64), u32) {
    let (sequence, delivered) = m
        .info()
        .map(|i| (i.stream_sequence, u32::try_from(i.delivered).unwrap_or(1)))
        .unwrap_or((0, 1));
    let key = (name.to_string(), sequence);
    let attempt = delivered.saturating_sub(handed_back.count(&key)).max(1);
    (key, attempt)
}

fn delivery(
    name: &str,
    handed_back: &HandedBack,
    progress: &InProgress,
    m: jetstream::Message,
) -> Delivery {
    let (key, attempt) = attempt(name, handed_back, &m);
    let held = progress.hold(m.reply.clone());
    let (m, acker) = m.split();
    let message = from_nats(
        m.subject.as_str(),
        None,
        m.headers.as_ref(),
        m.payload,
        true,
    );
    Delivery {
        message,
        attempt,
        acker: Box::new(JsAcker {
            acker,
            key,
            handed_back: handed_back.clone(),
            _held: held,
        }),
    }
}

#[async_trait]
impl Subscription for JsSubscription {
    async fn next(&mut self) -> Option<Result<Delivery, BrokerError>> {
        self.next_batch(1)
            .await
            .map(|r| r.map(|mut batch| batch.remove(0)))
    }

    /// Waits for a message of the open pull request (opening one for `max`
    /// messages when there is none), then takes what else it has brought.
    /// Cancel-safe: the request stays open in `self`.
    async fn next_batch(&mut self, max: usize) -> Option<Result<Vec<Delivery>, BrokerError>> {
        loop {
            if self.closed {
                return None;
            }
            let batch = match &mut self.batch {
                Some(batch) => batch,
                None => {
                    let opened = self
                        .consumer
                        .batch()
                        .max_messages(max.max(1))
                        .expires(PULL_EXPIRES)
                        .messages()
                        .await;
                    match opened {
                        Ok(batch) => self.batch.insert(batch),
                        Err(e) => {
                            return Some(Err(connection_error(e).context("jetstream pull")));
                        }
                    }
                }
            };
            let first = match batch.next().await {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    self.batch = None;
                    return Some(Err(connection_error(e).context("jetstream")));
                }
                // The request expired or is complete: open another.
                None => {
                    self.batch = None;
                    continue;
                }
            };
            let mut out = vec![delivery(
                &self.name,
                &self.handed_back,
                &self.progress,
                first,
            )];
            while out.len() < max {
                match batch.next().now_or_never() {
                    Some(Some(Ok(m))) => {
                        out.push(delivery(&self.name, &self.handed_back, &self.progress, m))
                    }
                    _ => break,
                }
            }
            return Some(Ok(out));
        }
    }

    /// Stops pulling, and waits for the open pull request to end: what it
    /// brings is handed back (a NAK, not counted as an attempt). Deliveries
    /// handed out stay settleable, their acks going through the client's
    /// connection.
    async fn close(&mut self) -> Result<(), BrokerError> {
        self.closed = true;
        if let Some(mut batch) = self.batch.take() {
            let mut handed = 0;
            while let Some(Ok(m)) = batch.next().await {
                let (key, _) = attempt(&self.name, &self.handed_back, &m);
                self.handed_back.add(key);
                let _ = m.ack_with(AckKind::Nak(None)).await;
                handed += 1;
            }
            tracing::debug!(consumer = %self.name, handed, "jetstream: pulled messages handed back");
        }
        if let Some(name) = self.ephemeral.take() {
            self.stream
                .delete_consumer(&name)
                .await
                .map_err(|e| connection_error(e).context(format!("deleting consumer `{name}`")))?;
        }
        Ok(())
    }
}

struct JsAcker {
    acker: jetstream::message::Acker,
    key: (String, u64),
    handed_back: HandedBack,
    /// Keeps the server from redelivering until this is settled or dropped.
    _held: Registration,
}

fn settle_error(e: async_nats::Error) -> BrokerError {
    connection_error(e).context("jetstream ack")
}

#[async_trait]
impl Acker for JsAcker {
    async fn ack(self: Box<Self>) -> Result<(), BrokerError> {
        self.acker.double_ack().await.map_err(settle_error)?;
        self.handed_back.forget(&self.key);
        Ok(())
    }

    async fn nack(self: Box<Self>, delay: Duration) -> Result<(), BrokerError> {
        let delay = (!delay.is_zero()).then_some(delay);
        self.acker
            .ack_with(AckKind::Nak(delay))
            .await
            .map_err(settle_error)
    }

    async fn term(self: Box<Self>) -> Result<(), BrokerError> {
        self.acker
            .ack_with(AckKind::Term)
            .await
            .map_err(settle_error)?;
        self.handed_back.forget(&self.key);
        Ok(())
    }

    async fn release(self: Box<Self>) -> Result<(), BrokerError> {
        self.handed_back.add(self.key.clone());
        self.acker
            .ack_with(AckKind::Nak(None))
            .await
            .map_err(settle_error)
    }
}
