//! Subscriptions: one librdkafka consumer each, in a consumer group.
//!
//! A point-to-point subscription joins the consumer group named after its
//! group; a pub-sub one makes a group of its own (a unique id) and starts at
//! the time it subscribed (each partition's first record at or after that
//! time, found with `offsets_for_times`), so it sees every record published
//! after `subscribe` returned, also on topics that appear later and match
//! its pattern. A point-to-point group without a committed offset starts at
//! the earliest record; the `start` extension changes either.
//!
//! Offsets are stored (and committed by librdkafka every second, at a
//! revocation and when the consumer closes) only up to each partition's
//! [`watermark`](crate::watermark): the lowest record not yet settled. A
//! rejected record is redelivered in process with the attempt counter
//! raised ([`courier_broker::retry`]) and holds the watermark until it is
//! completed or dead-lettered.
//!
//! When a partition is revoked (another member joined or left), the
//! watermark is committed and the partition forgotten: records of it still
//! with a guest, or waiting for an in-process redelivery, are delivered
//! again by the partition's next owner from the committed offset, and their
//! settlement here moves nothing. A closed subscription keeps its consumer
//! in the group, in the background, until the records it handed out are
//! settled or the ack wait passed, so that a guest that unsubscribes in the
//! middle of a call still settles what it holds.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use courier_broker::backend::{Delivery, Mode, Subscription, SubscriptionSpec};
use courier_broker::retry::{LocalRetries, Next, Settle};
use courier_broker::{BrokerError, Pattern};
use futures::future::BoxFuture;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _, ConsumerContext, StreamConsumer};
use rdkafka::message::BorrowedMessage;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Message as _, Offset, TopicPartitionList};
use tokio::sync::watch;

use crate::options::{KafkaExtensions, Start};
use crate::watermark::{Partition, Ticket, Watermarks};
use crate::{KIND, KafkaBackend, connection_error, headers, topics};

/// A subscription's librdkafka consumer.
pub type Consumer = StreamConsumer<Context>;
type Kafka = Consumer;

/// The closed subscriptions of a client whose consumers still wait, in
/// their groups, for the records they handed out to be settled.
#[derive(Clone, Default)]
pub struct Draining(Arc<Mutex<Vec<Weak<Shared>>>>);

impl Draining {
    fn add(&self, shared: &Arc<Shared>) {
        let mut list = lock(&self.0);
        list.retain(|s| s.strong_count() > 0);
        list.push(Arc::downgrade(shared));
    }

    /// Whether a closed member of `group` in this process still waits for a
    /// settlement: a new member must not wait for the group to rebalance
    /// then, since the settlement may wait for it (a guest that subscribes
    /// again in the middle of a call).
    fn holds(&self, group: &str) -> bool {
        lock(&self.0)
            .iter()
            .filter_map(Weak::upgrade)
            .any(|s| s.group == group && lock(&s.marks).any_pending())
    }
}

/// What a subscription's consumer, its rebalance callbacks and its ackers share.
pub struct Shared {
    group: String,
    marks: Mutex<Watermarks>,
    /// Signalled whenever a record is settled.
    settled: Condvar,
    consumer: OnceLock<Weak<Kafka>>,
    /// Whether offsets are committed (point-to-point groups).
    commit: bool,
    /// Where a pub-sub subscription starts (ms since the epoch), if at a time.
    start_at: Option<i64>,
    /// Where to resume partitions this consumer owned before.
    resume: Mutex<HashMap<Partition, i64>>,
    /// Set once the subscription is closed: a revocation then waits (until
    /// `drain_until`) for the records handed out to be settled.
    closing: AtomicBool,
    drain_until: Mutex<Option<Instant>>,
    /// The deadline of a broker call made in a callback.
    timeout: Duration,
    assigned: watch::Sender<bool>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// A record was settled: store the partition's new watermark.
    fn settle(&self, ticket: &Ticket) {
        let mut marks = lock(&self.marks);
        if let Some(position) = marks.settled(ticket)
            && let Some(consumer) = self.consumer.get().and_then(Weak::upgrade)
        {
            let (topic, partition) = &ticket.partition;
            let mut tpl = TopicPartitionList::new();
            let stored = tpl
                .add_partition_offset(topic, *partition, Offset::Offset(position))
                .and_then(|()| consumer.store_offsets(&tpl));
            if let Err(e) = stored {
                // The partition was revoked meanwhile: its new owner
                // delivers the record again.
                tracing::debug!(%topic, partition, error = %e, "kafka: offset not stored");
            }
        }
        drop(marks);
        self.settled.notify_all();
    }

    /// Partitions were assigned: a new epoch each; a pub-sub subscription
    /// starts at its subscription time, or where it was before.
    fn assigned(&self, base: &BaseConsumer<Context>, tpl: &mut TopicPartitionList) {
        let mut at_time = TopicPartitionList::new();
        {
            let mut marks = lock(&self.marks);
            let resume = lock(&self.resume);
            let partitions: Vec<Partition> = tpl
                .elements()
                .iter()
                .map(|e| (e.topic().to_string(), e.partition()))
                .collect();
            for p in partitions {
                marks.assign(p.clone());
                if let Some(&offset) = resume.get(&p) {
                    let _ = tpl.set_partition_offset(&p.0, p.1, Offset::Offset(offset));
                } else if let Some(t0) = self.start_at {
                    let _ = at_time.add_partition_offset(&p.0, p.1, Offset::Offset(t0));
                }
            }
        }
        if at_time.count() > 0 {
            match base.offsets_for_times(at_time, self.timeout) {
                Ok(found) => {
                    for e in found.elements() {
                        let offset = match e.offset() {
                            Offset::Offset(o) => Offset::Offset(o),
                            _ => Offset::End,
                        };
                        let _ = tpl.set_partition_offset(e.topic(), e.partition(), offset);
                    }
                }
                Err(e) => tracing::warn!(
                    error = %e,
                    "kafka: cannot find the offsets of the subscription time; starting at the latest"
                ),
            }
        }
        if let Err(e) = base.assign(tpl) {
            tracing::warn!(error = %e, "kafka: assigning partitions failed");
        }
        self.assigned.send_replace(true);
    }

    /// Partitions were revoked: commit their watermarks and forget them.
    fn revoked(&self, base: &BaseConsumer<Context>, tpl: &TopicPartitionList) {
        let partitions: Vec<Partition> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect();
        let mut marks = lock(&self.marks);
        if self.closing.load(Ordering::SeqCst)
            && let Some(until) = *lock(&self.drain_until)
        {
            while partitions.iter().any(|p| marks.has_pending(p)) {
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                marks = self
                    .settled
                    .wait_timeout(marks, left)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        }
        let mut commit = TopicPartitionList::new();
        let mut resume = lock(&self.resume);
        for p in &partitions {
            if let Some(position) = marks.revoke(p) {
                resume.insert(p.clone(), position);
                let _ = commit.add_partition_offset(&p.0, p.1, Offset::Offset(position));
            }
        }
        drop((marks, resume));
        if self.commit && commit.count() > 0 {
            // Stored offsets are committed on revocation too; committing
            // here makes sure the watermark is what the next owner reads.
            if let Err(e) = base.commit(&commit, CommitMode::Sync) {
                tracing::warn!(error = %e, "kafka: committing offsets at a revocation failed");
            }
        }
        if let Err(e) = base.unassign() {
            tracing::warn!(error = %e, "kafka: unassigning partitions failed");
        }
    }
}

/// The consumer's context: it runs the rebalance callbacks.
pub struct Context {
    shared: Arc<Shared>,
}

impl ClientContext for Context {}

impl ConsumerContext for Context {
    fn rebalance(
        &self,
        base: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => self.shared.assigned(base, tpl),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => self.shared.revoked(base, tpl),
            other => {
                tracing::warn!(error = ?other, "kafka: rebalance failed");
                self.shared.revoked(base, &TopicPartitionList::new());
            }
        }
    }
}

/// Opens a subscription on `backend`.
pub async fn subscribe(
    backend: &KafkaBackend,
    spec: SubscriptionSpec,
) -> Result<Box<dyn Subscription>, BrokerError> {
    let extensions: KafkaExtensions = courier_broker::extensions::parse(KIND, &spec.options)?;
    let target = topics::subscription(&spec.pattern)?;
    if spec.pattern.is_literal() {
        backend.ensure_topic(&target).await?;
    }
    let options = backend.options();
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let (group, commit, reset, start_at) = match &spec.mode {
        Mode::Competing { group } => {
            let reset = match extensions.start {
                Some(Start::Latest) => "latest",
                _ => "earliest",
            };
            (group.clone(), true, reset, None)
        }
        Mode::Broadcast => {
            let group = format!("{}-{:016x}", options.client_id, rand::random::<u64>());
            match extensions.start {
                Some(Start::Earliest) => (group, false, "earliest", None),
                Some(Start::Latest) => (group, false, "latest", None),
                None => (group, false, "latest", Some(now_ms)),
            }
        }
    };
    let (assigned, mut on_assigned) = watch::channel(false);
    let shared = Arc::new(Shared {
        group: group.clone(),
        marks: Mutex::new(Watermarks::default()),
        settled: Condvar::new(),
        consumer: OnceLock::new(),
        commit,
        start_at,
        resume: Mutex::new(HashMap::new()),
        closing: AtomicBool::new(false),
        drain_until: Mutex::new(None),
        timeout: options.connect_timeout.get(),
        assigned,
    });
    let session = options.session_timeout_ms.get();
    let consumer: Kafka = crate::base_config(backend.bootstrap_servers(), options)
        .set("group.id", &group)
        .set("enable.auto.commit", if commit { "true" } else { "false" })
        .set("enable.auto.offset.store", "false")
        .set("auto.commit.interval.ms", "1000")
        .set("auto.offset.reset", reset)
        .set("session.timeout.ms", session.to_string())
        .set(
            "heartbeat.interval.ms",
            (session / 3).clamp(100, 3000).to_string(),
        )
        .set(
            "topic.metadata.refresh.interval.ms",
            options.metadata_refresh_ms.to_string(),
        )
        .create_with_context(Context {
            shared: shared.clone(),
        })
        .map_err(connection_error)?;
    let consumer = Arc::new(consumer);
    let _ = shared.consumer.set(Arc::downgrade(&consumer));
    consumer
        .subscribe(&[target.as_str()])
        .map_err(|e| connection_error(e).context(format!("subscribing to `{target}`")))?;
    if !spec.pattern.is_literal() {
        backend.add_wildcard(&consumer);
    }
    let wait_for_partitions = !backend.draining().holds(&group);
    let mut sub = KafkaSubscription {
        draining: backend.draining().clone(),
        consumer: Some(consumer.clone()),
        shared,
        retries: LocalRetries::new(),
        buffered: VecDeque::new(),
        pattern: spec.pattern.clone(),
        ack_wait: spec.ack_wait,
    };
    // Join the group before returning, so that competing members share the
    // partitions from the start; a pattern that matches no topic yet gets
    // no partitions, so it waits less (it starts at its subscription time
    // whenever its topics appear).
    let wait = if spec.pattern.is_literal() {
        options.connect_timeout.get() * 3
    } else {
        options.connect_timeout.get().min(Duration::from_secs(2))
    };
    let wait = if wait_for_partitions {
        wait
    } else {
        Duration::ZERO
    };
    let joined = tokio::time::timeout(wait, async {
        loop {
            tokio::select! {
                r = on_assigned.wait_for(|a| *a) => { let _ = r; break; }
                m = consumer.recv() => match m {
                    Ok(m) => {
                        if let Some(d) = sub.take(&m) {
                            sub.buffered.push_back(d);
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "kafka: while joining the group"),
                },
            }
        }
    })
    .await;
    if joined.is_err() && spec.pattern.is_literal() && wait_for_partitions {
        tracing::warn!(
            group = %group, topic = %target,
            "kafka: no partitions assigned yet; the subscription goes on joining"
        );
    }
    Ok(Box::new(sub))
}

/// Moves a record's partition watermark once the record is completed or
/// dead-lettered.
struct Settled {
    shared: Arc<Shared>,
    ticket: Ticket,
}

impl Settle for Settled {
    fn settle(self: Box<Self>) -> BoxFuture<'static, Result<(), BrokerError>> {
        self.shared.settle(&self.ticket);
        Box::pin(std::future::ready(Ok(())))
    }
}

/// An open Kafka subscription.
struct KafkaSubscription {
    draining: Draining,
    consumer: Option<Arc<Kafka>>,
    shared: Arc<Shared>,
    retries: Arc<LocalRetries>,
    /// Deliveries received while joining the group.
    buffered: VecDeque<Delivery>,
    pattern: Pattern,
    ack_wait: Duration,
}

impl KafkaSubscription {
    /// The delivery of a record, tracked by the watermark; `None` (and
    /// settled at once) for a record outside the pattern.
    fn take(&self, m: &BorrowedMessage<'_>) -> Option<Delivery> {
        let ticket =
            lock(&self.shared.marks).delivered((m.topic().to_string(), m.partition()), m.offset());
        // Records older than a pub-sub subscription: tansu answers
        // `offsets_for_times` with the earliest offset (not the end) when no
        // record is as new as the time asked, so they are skipped here.
        let older = self
            .shared
            .start_at
            .zip(m.timestamp().to_millis())
            .is_some_and(|(t0, ts)| ts < t0);
        if older || !self.pattern.matches(m.topic()) {
            self.shared.settle(&ticket);
            return None;
        }
        let data = Bytes::copy_from_slice(m.payload().unwrap_or_default());
        // rdkafka panics on a header name that is not UTF-8 (another
        // client may write one): such a record is delivered without headers.
        let message = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            headers::from_record(m.topic(), m.headers(), m.key(), data.clone())
        }))
        .unwrap_or_else(|_| {
            tracing::warn!(
                topic = m.topic(),
                partition = m.partition(),
                offset = m.offset(),
                "kafka: a record has a header name that is not UTF-8; delivered without its headers"
            );
            let no_headers: Option<&rdkafka::message::OwnedHeaders> = None;
            headers::from_record(m.topic(), no_headers, m.key(), data)
        });
        let settle = Settled {
            shared: self.shared.clone(),
            ticket,
        };
        Some(
            self.retries
                .delivery_settling(message, 1, Some(Box::new(settle))),
        )
    }
}

#[async_trait]
impl Subscription for KafkaSubscription {
    async fn next(&mut self) -> Option<Result<Delivery, BrokerError>> {
        if let Some(d) = self.buffered.pop_front() {
            return Some(Ok(d));
        }
        let consumer = self.consumer.clone()?;
        loop {
            let mut stream = consumer.stream();
            match self.retries.next_from(&mut stream).await {
                Next::Retry(d) => return Some(Ok(d)),
                Next::Source(None) => return None,
                Next::Source(Some(Err(e))) => return Some(Err(connection_error(e))),
                Next::Source(Some(Ok(m))) => {
                    if let Some(d) = self.take(&m) {
                        return Some(Ok(d));
                    }
                }
            }
        }
    }

    async fn close(&mut self) -> Result<(), BrokerError> {
        self.retries.clear();
        self.buffered.clear();
        let Some(consumer) = self.consumer.take() else {
            return Ok(());
        };
        let shared = self.shared.clone();
        let until = Instant::now() + self.ack_wait;
        *lock(&shared.drain_until) = Some(until);
        shared.closing.store(true, Ordering::SeqCst);
        self.draining.add(&shared);
        // In the background: the consumer stays in its group (and answers
        // rebalances) until what it handed out is settled or the ack wait
        // passed, then leaves it, committing the stored offsets.
        let handle = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            loop {
                let drained = !lock(&shared.marks).any_pending();
                if drained || Instant::now() >= until {
                    break;
                }
                // Polling serves the group; records fetched now are past
                // the watermark and go to the next owner.
                let _ = handle.block_on(tokio::time::timeout(
                    Duration::from_millis(100),
                    consumer.recv(),
                ));
            }
            consumer.unsubscribe();
            drop(consumer);
        });
        Ok(())
    }
}
