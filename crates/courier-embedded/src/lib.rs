//! The embedded in-process broker: Courier's default, nothing to install.
//!
//! Every subscription reads from a queue. A broadcast subscription has a queue
//! of its own; competing subscriptions with the same group and pattern share
//! one queue, and each message in it goes to one of them. A queue keeps its
//! messages in three places: `ready` (available), `inflight` (acquired, with
//! an ack deadline) and `delayed` (rejected, waiting out its backoff). An
//! acquired message that is neither acked nor nacked before its deadline goes
//! back to `ready` with its attempt counter raised, like a JetStream ack-wait.
//!
//! Without a data directory, messages are kept in memory only: they survive
//! neither a restart nor a crash. With one ([`EmbeddedBroker::open`]), group
//! queues and their unsettled messages are stored on disk ([`store`]) and
//! come back, ready for redelivery, when the broker is opened again.
//!
//! A publish finds the queues of a topic in the [`subjects`] index, a token
//! trie with a cache in front, so its cost does not grow with the number of
//! subscriptions.

#![deny(missing_docs)]

mod factory;
pub mod store;
pub mod subjects;

pub use factory::Embedded;
pub use store::SyncPolicy;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::path::Path;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::time::Instant;

use courier_broker::{
    AckBatch, Acker, Backend, BatchTag, BrokerError, Delivery, Features, Message, Mode, Pattern,
    Subscription, SubscriptionSpec,
};
use rustc_hash::FxHashMap;
use store::{Store, entry_key};
use subjects::Subjects;

/// The embedded broker. Cloning it gives another handle to the same broker.
#[derive(Clone, Default)]
pub struct EmbeddedBroker {
    shared: Arc<Shared>,
}

struct Shared {
    index: Mutex<Index>,
    /// Where group queues are stored, with a data directory.
    store: Option<Arc<Store>>,
    /// Most messages a queue may hold (ready, delayed and in flight).
    max_queued: AtomicUsize,
    /// Messages dropped with a broadcast queue when its last subscriber left.
    discarded: AtomicU64,
}

impl Default for Shared {
    fn default() -> Self {
        Self {
            index: Mutex::default(),
            store: None,
            max_queued: AtomicUsize::new(DEFAULT_MAX_QUEUED),
            discarded: AtomicU64::new(0),
        }
    }
}

/// Most messages a queue holds unless [`EmbeddedBroker::set_max_queued`]
/// says otherwise.
pub const DEFAULT_MAX_QUEUED: usize = 100_000;

impl Shared {
    fn index(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Every queue, by key and by pattern. Its lock is taken before a queue's,
/// never while holding one.
#[derive(Default)]
struct Index {
    by_key: HashMap<QueueKey, Arc<Queue>>,
    /// The queues by pattern, under their ids: a topic's queues come in the
    /// order they were made.
    subjects: Subjects<Arc<Queue>>,
    /// The id of the next queue made.
    next_id: u64,
}

impl Index {
    /// Makes a queue and adds it.
    fn add(
        &mut self,
        key: QueueKey,
        pattern: Pattern,
        stored: Option<(Arc<Store>, u64)>,
    ) -> Arc<Queue> {
        let id = self.next_id;
        self.next_id += 1;
        let queue = Arc::new(Queue::new(id, key.clone(), pattern, stored));
        self.subjects.insert(&queue.pattern, id, queue.clone());
        self.by_key.insert(key, queue.clone());
        queue
    }

    /// Takes `queue` out, if it is still in.
    fn remove(&mut self, queue: &Arc<Queue>) {
        if self
            .by_key
            .get(&queue.key)
            .is_some_and(|q| Arc::ptr_eq(q, queue))
        {
            self.by_key.remove(&queue.key);
            self.subjects.remove(&queue.pattern, queue.id);
        }
    }

    fn queues(&self) -> impl Iterator<Item = &Arc<Queue>> {
        self.by_key.values()
    }
}

/// Messages on one topic, in a publish, with the queues they go to.
type Run = (Arc<[Arc<Queue>]>, Vec<Message>);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum QueueKey {
    /// A broadcast queue, by its queue id.
    Broadcast(u64),
    Group {
        group: String,
        pattern: String,
    },
}

struct Queue {
    /// Unique in the broker, in the order the queues were made.
    id: u64,
    key: QueueKey,
    pattern: Pattern,
    state: Mutex<QueueState>,
    notify: Notify,
    /// The store and this queue's id in it, for a stored group queue.
    stored: Option<(Arc<Store>, u64)>,
}

impl Queue {
    fn new(id: u64, key: QueueKey, pattern: Pattern, stored: Option<(Arc<Store>, u64)>) -> Self {
        Self {
            id,
            key,
            pattern,
            state: Mutex::new(QueueState::default()),
            notify: Notify::new(),
            stored,
        }
    }
}

#[derive(Default)]
struct QueueState {
    ready: VecDeque<Entry>,
    delayed: Vec<(Instant, Entry)>,
    /// Acquired entries by delivery tag, with their ack deadline.
    inflight: FxHashMap<u64, (Instant, Entry)>,
    /// The ack deadlines of `inflight`, soonest first; settled tags are
    /// skipped when they surface, and the heap is rebuilt when they pile up.
    deadlines: BinaryHeap<Reverse<(Instant, u64)>>,
    consumers: usize,
    next_tag: u64,
}

#[derive(Clone)]
struct Entry {
    message: Message,
    attempt: u32,
    /// Sequence number in the store; 0 for a queue that is not stored.
    seq: u64,
}

impl QueueState {
    fn push(&mut self, message: Message, seq: u64) {
        self.ready.push_back(Entry {
            message,
            attempt: 1,
            seq,
        });
    }

    /// Moves due delayed entries and expired in-flight entries back to ready,
    /// and returns when the next one falls due.
    fn promote(&mut self, now: Instant) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut i = 0;
        while i < self.delayed.len() {
            if self.delayed[i].0 <= now {
                let (_, entry) = self.delayed.swap_remove(i);
                self.ready.push_back(entry);
            } else {
                next = Some(next.map_or(self.delayed[i].0, |n| n.min(self.delayed[i].0)));
                i += 1;
            }
        }
        while let Some(&Reverse((deadline, tag))) = self.deadlines.peek() {
            if deadline > now {
                next = Some(next.map_or(deadline, |n| n.min(deadline)));
                break;
            }
            self.deadlines.pop();
            if let Some((_, mut entry)) = self.inflight.remove(&tag) {
                entry.attempt += 1;
                self.ready.push_back(entry);
            }
        }
        next
    }

    /// Hands out the next ready entry under a fresh tag, due back by `deadline`.
    fn acquire(&mut self, deadline: Instant) -> Option<(u64, Message, u32)> {
        let entry = self.ready.pop_front()?;
        // Each acquisition gets a fresh tag, so a late settle of an
        // earlier (expired) delivery of the same message fails.
        self.next_tag += 1;
        let tag = self.next_tag;
        let out = (tag, entry.message.clone(), entry.attempt);
        self.inflight.insert(tag, (deadline, entry));
        self.deadlines.push(Reverse((deadline, tag)));
        if self.deadlines.len() > 2 * self.inflight.len() + 1024 {
            self.deadlines = self
                .inflight
                .iter()
                .map(|(tag, (deadline, _))| Reverse((*deadline, *tag)))
                .collect();
        }
        Some(out)
    }

    fn unsettled(&self) -> u64 {
        (self.ready.len() + self.delayed.len() + self.inflight.len()) as u64
    }
}

impl EmbeddedBroker {
    /// A new, empty broker that keeps messages in memory only.
    pub fn new() -> Self {
        Self::default()
    }

    /// A broker whose group (point-to-point) queues are stored in `dir`: what
    /// was published and not yet acknowledged when the last process using
    /// `dir` stopped or crashed is there again, ready for redelivery. One
    /// process at a time can hold a data directory.
    pub fn open(dir: &Path, sync: SyncPolicy) -> Result<Self, BrokerError> {
        let (store, recovered) = Store::open(dir, sync)?;
        let store = Arc::new(store);
        let mut index = Index::default();
        let mut messages = 0usize;
        for q in recovered {
            let pattern = Pattern::parse(&q.pattern).map_err(|e| {
                BrokerError::other(format!("stored queue `{}`: bad pattern", q.pattern))
                    .with_backend("embedded")
                    .with_source(e)
            })?;
            let queue = index.add(
                QueueKey::Group {
                    group: q.group,
                    pattern: q.pattern,
                },
                pattern,
                Some((store.clone(), q.id)),
            );
            {
                let mut state = lock(&queue);
                messages += q.entries.len();
                for (seq, attempt, message) in q.entries {
                    state.ready.push_back(Entry {
                        message,
                        attempt,
                        seq,
                    });
                }
            }
        }
        tracing::info!(
            dir = %dir.display(),
            queues = index.by_key.len(),
            messages,
            "embedded broker: opened its data directory"
        );
        Ok(Self {
            shared: Arc::new(Shared {
                index: Mutex::new(index),
                store: Some(store),
                ..Shared::default()
            }),
        })
    }

    /// Bounds every queue to `max` messages (ready, delayed and in flight):
    /// a publish that would take a matching queue past it is refused as
    /// [`busy`](courier_broker::ErrorKind::Busy), and none of its messages
    /// is queued anywhere. The bound is checked before the messages are
    /// queued, so concurrent publishers may pass it by a batch each.
    pub fn set_max_queued(&self, max: usize) {
        self.shared.max_queued.store(max.max(1), Ordering::Relaxed);
    }

    /// Messages held in all queues, whether or not anyone consumes them:
    /// what a process without a data directory loses when it exits.
    pub fn held(&self) -> u64 {
        self.shared
            .index()
            .queues()
            .map(|q| lock(q).unsettled())
            .sum()
    }

    /// Messages dropped so far with a broadcast queue when its last
    /// subscriber left without taking them (pub-sub: they were its alone).
    pub fn discarded(&self) -> u64 {
        self.shared.discarded.load(Ordering::Relaxed)
    }

    /// Waits until every write made so far (settlements included) is stored.
    /// Without a data directory there is nothing to wait for.
    pub async fn flush(&self) -> Result<(), BrokerError> {
        match &self.shared.store {
            Some(store) => store.commit().await,
            None => Ok(()),
        }
    }

    /// Refuses `runs` as busy when they would take a queue past its bound.
    fn check_room(&self, runs: &[Run]) -> Result<(), BrokerError> {
        let max = self.shared.max_queued.load(Ordering::Relaxed) as u64;
        // What each queue would get, in the order the queues are met. A
        // queue met again in a later run is found by id, not by a search
        // through the others (quadratic in a wide fan-out); a run's queues
        // are distinct, so with one run there is nothing to find.
        let several = runs.len() > 1;
        let mut adding: Vec<(&Arc<Queue>, u64)> = Vec::new();
        let mut position: HashMap<u64, usize> = HashMap::new();
        for (matching, run) in runs {
            let n = run.len() as u64;
            for queue in matching.iter() {
                if several {
                    if let Some(&at) = position.get(&queue.id) {
                        adding[at].1 += n;
                        continue;
                    }
                    position.insert(queue.id, adding.len());
                }
                adding.push((queue, n));
            }
        }
        for (queue, n) in adding {
            let held = lock(queue).unsettled();
            if held + n > max {
                return Err(BrokerError::busy(
                    "embedded",
                    format!(
                        "queue `{}` holds {held} messages, at most {max}: nothing was published; try again later",
                        queue.pattern
                    ),
                ));
            }
        }
        Ok(())
    }
}

fn lock(queue: &Queue) -> std::sync::MutexGuard<'_, QueueState> {
    queue.state.lock().unwrap_or_else(|e| e.into_inner())
}

#[async_trait]
impl Backend for EmbeddedBroker {
    fn kind(&self) -> &'static str {
        "embedded"
    }

    fn features(&self) -> Features {
        Features {
            durable: self.shared.store.is_some(),
            ..Features::ALL
        }
    }

    async fn publish(&self, messages: Vec<Message>) -> Result<(), BrokerError> {
        courier_broker::pattern::check_topics(&messages)?;
        // Runs of messages on one topic, each with the queues it goes to:
        // matched once, each queue locked and woken once per run.
        let mut runs: Vec<Run> = Vec::new();
        {
            let mut index = self.shared.index();
            let mut messages = messages.into_iter().peekable();
            while let Some(first) = messages.next() {
                let matching = index.subjects.lookup(&first.topic);
                let mut run = vec![first];
                while let Some(m) = messages.next_if(|m| m.topic == run[0].topic) {
                    run.push(m);
                }
                runs.push((matching, run));
            }
        }
        self.check_room(&runs)?;
        // Stored queues first get the messages on disk; only then do they
        // become visible, so nothing is delivered that a crash could lose.
        // Each stored queue of a run gets a block of sequence numbers.
        let mut first_seqs: Vec<Vec<u64>> = Vec::with_capacity(runs.len());
        let mut writes = Vec::new();
        for (matching, run) in &runs {
            first_seqs.push(
                matching
                    .iter()
                    .map(|queue| match &queue.stored {
                        Some((store, id)) => {
                            let first = store.reserve_seqs(run.len());
                            for (seq, m) in (first..).zip(run) {
                                writes.push((entry_key(*id, seq), store::encode(1, m)));
                            }
                            first
                        }
                        None => 0,
                    })
                    .collect(),
            );
        }
        if !writes.is_empty()
            && let Some(store) = &self.shared.store
        {
            store.put_all(writes).await?;
        }
        for ((matching, mut run), first_seqs) in runs.into_iter().zip(first_seqs) {
            for (k, (queue, &first)) in matching.iter().zip(&first_seqs).enumerate() {
                // Sequence 0: the queue is not stored.
                let seq = |i: u64| if first == 0 { 0 } else { first + i };
                let mut state = lock(queue);
                if k + 1 == matching.len() {
                    // The last queue takes the messages, the others copies.
                    for (i, m) in (0..).zip(std::mem::take(&mut run)) {
                        state.push(m, seq(i));
                    }
                } else {
                    for (i, m) in (0..).zip(&run) {
                        state.push(m.clone(), seq(i));
                    }
                }
            }
            for queue in matching.iter() {
                queue.notify.notify_waiters();
            }
        }
        Ok(())
    }

    async fn subscribe(
        &self,
        spec: SubscriptionSpec,
    ) -> Result<Box<dyn Subscription>, BrokerError> {
        let mut index = self.shared.index();
        let key = match &spec.mode {
            // Keyed by the id the new queue gets.
            Mode::Broadcast => QueueKey::Broadcast(index.next_id),
            Mode::Competing { group } => QueueKey::Group {
                group: group.clone(),
                pattern: spec.pattern.as_str().to_string(),
            },
        };
        let queue = match index.by_key.get(&key) {
            Some(q) => q.clone(),
            None => {
                let stored = match (&key, &self.shared.store) {
                    (QueueKey::Group { group, pattern }, Some(store)) => {
                        Some((store.clone(), store.add_queue(group, pattern)?))
                    }
                    _ => None,
                };
                index.add(key, spec.pattern.clone(), stored)
            }
        };
        lock(&queue).consumers += 1;
        Ok(Box::new(EmbeddedSubscription {
            queue,
            broker: Arc::downgrade(&self.shared),
            ack_wait: spec.ack_wait,
            closed: false,
        }))
    }

    fn unsettled(&self) -> Option<u64> {
        Some(
            self.shared
                .index()
                .queues()
                .map(|q| {
                    let s = lock(q);
                    if s.consumers > 0 { s.unsettled() } else { 0 }
                })
                .sum(),
        )
    }
}

struct EmbeddedSubscription {
    queue: Arc<Queue>,
    broker: Weak<Shared>,
    ack_wait: Duration,
    closed: bool,
}

#[async_trait]
impl Subscription for EmbeddedSubscription {
    async fn next(&mut self) -> Option<Result<Delivery, BrokerError>> {
        self.next_batch(1)
            .await
            .map(|r| r.map(|mut ds| ds.pop().expect("at least one")))
    }

    async fn next_batch(&mut self, max: usize) -> Option<Result<Vec<Delivery>, BrokerError>> {
        loop {
            if self.closed {
                return None;
            }
            let mut notified = pin!(self.queue.notify.notified());
            notified.as_mut().enable();
            let wake = {
                let mut state = lock(&self.queue);
                let now = Instant::now();
                let wake = state.promote(now);
                let mut out = Vec::with_capacity(max.clamp(1, state.ready.len().max(1)));
                while out.len() < max.max(1)
                    && let Some((tag, message, attempt)) = state.acquire(now + self.ack_wait)
                {
                    out.push(Delivery {
                        message,
                        attempt,
                        acker: Box::new(EmbeddedAcker {
                            queue: Arc::downgrade(&self.queue),
                            tag,
                        }),
                    });
                }
                if !out.is_empty() {
                    return Some(Ok(out));
                }
                wake
            };
            match wake {
                Some(at) => {
                    tokio::select! {
                        _ = notified => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    async fn close(&mut self) -> Result<(), BrokerError> {
        self.detach();
        Ok(())
    }
}

impl EmbeddedSubscription {
    fn detach(&mut self) {
        if std::mem::replace(&mut self.closed, true) {
            return;
        }
        let remaining = {
            let mut state = lock(&self.queue);
            state.consumers -= 1;
            state.consumers
        };
        // A broadcast queue belongs to this subscription alone; a group queue
        // outlives its consumers and keeps collecting messages for the group.
        if remaining == 0
            && matches!(self.queue.key, QueueKey::Broadcast(_))
            && let Some(shared) = self.broker.upgrade()
        {
            let waiting = {
                let state = lock(&self.queue);
                (state.ready.len() + state.delayed.len()) as u64
            };
            shared.discarded.fetch_add(waiting, Ordering::Relaxed);
            shared.index().remove(&self.queue);
        }
        self.queue.notify.notify_waiters();
    }
}

impl Drop for EmbeddedSubscription {
    fn drop(&mut self) {
        self.detach();
    }
}

struct EmbeddedAcker {
    queue: Weak<Queue>,
    tag: u64,
}

impl EmbeddedAcker {
    /// The queue, or `None` when it is gone: only a broadcast queue goes
    /// away, once its subscription is closed, and with it every message it
    /// held — nothing is redelivered.
    fn take(&self) -> Result<Option<(Arc<Queue>, Entry)>, BrokerError> {
        let Some(queue) = self.queue.upgrade() else {
            return Ok(None);
        };
        let entry = lock(&queue).inflight.remove(&self.tag).map(|(_, e)| e);
        match entry {
            Some(entry) => Ok(Some((queue, entry))),
            None => Err(not_in_flight(self.tag)),
        }
    }
}

/// The error of a settlement whose delivery is no longer in flight.
fn not_in_flight(tag: u64) -> BrokerError {
    BrokerError::settled(format!(
        "delivery {tag} is no longer in flight (its ack deadline passed): \
         the broker redelivers it"
    ))
}

impl Queue {
    /// Forgets an acknowledged entry (in the store too).
    fn acked(&self, entry: Entry) {
        if let Some((store, id)) = &self.stored {
            store.remove(entry_key(*id, entry.seq));
        }
    }
}

/// A batch's acks on one queue: taken out of flight under one lock.
#[async_trait]
impl AckBatch for Queue {
    async fn ack_tags(&self, tags: &[u64]) -> Vec<Result<(), BrokerError>> {
        let entries: Vec<Option<Entry>> = {
            let mut state = lock(self);
            tags.iter()
                .map(|tag| state.inflight.remove(tag).map(|(_, e)| e))
                .collect()
        };
        tags.iter()
            .zip(entries)
            .map(|(&tag, entry)| match entry {
                Some(entry) => {
                    self.acked(entry);
                    Ok(())
                }
                None => Err(not_in_flight(tag)),
            })
            .collect()
    }
}

#[async_trait]
impl Acker for EmbeddedAcker {
    async fn ack(self: Box<Self>) -> Result<(), BrokerError> {
        // A closed broadcast subscription: nothing is left to acknowledge.
        let Some((queue, entry)) = self.take()? else {
            return Ok(());
        };
        queue.acked(entry);
        Ok(())
    }

    /// The queue's batch, while the queue is there (a closed broadcast
    /// subscription's acks are taken alone: there is nothing to settle).
    fn batch(&self) -> Option<BatchTag> {
        let queue: Arc<dyn AckBatch> = self.queue.upgrade()?;
        Some(BatchTag {
            batch: queue,
            tag: self.tag,
        })
    }

    async fn nack(self: Box<Self>, delay: Duration) -> Result<(), BrokerError> {
        self.give_back(delay, true)
    }

    async fn release(self: Box<Self>) -> Result<(), BrokerError> {
        self.give_back(Duration::ZERO, false)
    }
}

impl EmbeddedAcker {
    /// Makes the entry available again after `delay`, counting an attempt
    /// when `counted`.
    fn give_back(&self, delay: Duration, counted: bool) -> Result<(), BrokerError> {
        let Some((queue, mut entry)) = self.take()? else {
            return Err(BrokerError::settled(
                "the subscription is closed: the message is not redelivered",
            ));
        };
        if !counted {
            lock(&queue).ready.push_front(entry);
            queue.notify.notify_waiters();
            return Ok(());
        }
        entry.attempt += 1;
        if let Some((store, id)) = &queue.stored {
            store.put(
                entry_key(*id, entry.seq),
                store::encode(entry.attempt, &entry.message),
            );
        }
        {
            let mut state = lock(&queue);
            if delay.is_zero() {
                state.ready.push_back(entry);
            } else {
                state.delayed.push((Instant::now() + delay, entry));
            }
        }
        queue.notify.notify_waiters();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use courier_broker::ErrorKind;

    fn pat(s: &str) -> Pattern {
        Pattern::parse(s).unwrap()
    }

    pub(super) async fn next(sub: &mut Box<dyn Subscription>) -> Delivery {
        tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await
            .expect("delivery within 5s")
            .expect("open")
            .expect("ok")
    }

    #[tokio::test]
    async fn broadcast_reaches_every_subscriber() {
        let b = EmbeddedBroker::new();
        let mut s1 = b
            .subscribe(SubscriptionSpec::broadcast(pat("a.*")))
            .await
            .unwrap();
        let mut s2 = b
            .subscribe(SubscriptionSpec::broadcast(pat("a.b")))
            .await
            .unwrap();
        b.publish(vec![Message::new("a.b", "x"), Message::new("c", "y")])
            .await
            .unwrap();
        for s in [&mut s1, &mut s2] {
            let d = next(s).await;
            assert_eq!(d.message.data, "x");
            assert_eq!(d.attempt, 1);
            d.acker.ack().await.unwrap();
        }
        assert_eq!(b.unsettled(), Some(0));
    }

    #[tokio::test]
    async fn competing_consumers_share_messages() {
        let b = EmbeddedBroker::new();
        let mut s1 = b
            .subscribe(SubscriptionSpec::competing(pat("q"), "g"))
            .await
            .unwrap();
        let mut s2 = b
            .subscribe(SubscriptionSpec::competing(pat("q"), "g"))
            .await
            .unwrap();
        b.publish(vec![Message::new("q", "1"), Message::new("q", "2")])
            .await
            .unwrap();
        let d1 = next(&mut s1).await;
        let d2 = next(&mut s2).await;
        assert_ne!(d1.message.data, d2.message.data);
        d1.acker.ack().await.unwrap();
        d2.acker.ack().await.unwrap();
        assert_eq!(b.unsettled(), Some(0));
    }

    #[tokio::test]
    async fn nack_redelivers_with_attempt_and_double_settle_fails() {
        let b = EmbeddedBroker::new();
        let mut s = b
            .subscribe(SubscriptionSpec::broadcast(pat("t")))
            .await
            .unwrap();
        b.publish(vec![Message::new("t", "x")]).await.unwrap();
        let d = next(&mut s).await;
        d.acker.nack(Duration::from_millis(20)).await.unwrap();
        let d = next(&mut s).await;
        assert_eq!(d.attempt, 2);
        d.acker.ack().await.unwrap();
        assert_eq!(b.unsettled(), Some(0));
    }

    #[tokio::test]
    async fn ack_wait_expiry_redelivers() {
        let b = EmbeddedBroker::new();
        let mut spec = SubscriptionSpec::broadcast(pat("t"));
        spec.ack_wait = Duration::from_millis(30);
        let mut s = b.subscribe(spec).await.unwrap();
        b.publish(vec![Message::new("t", "x")]).await.unwrap();
        let first = next(&mut s).await;
        let second = next(&mut s).await;
        assert_eq!(second.attempt, 2);
        assert_eq!(
            first.acker.ack().await.unwrap_err().kind(),
            ErrorKind::Settled
        );
        second.acker.ack().await.unwrap();
    }

    #[tokio::test]
    async fn close_stops_delivery_and_drops_broadcast_queue() {
        let b = EmbeddedBroker::new();
        let mut s = b
            .subscribe(SubscriptionSpec::broadcast(pat("t")))
            .await
            .unwrap();
        s.close().await.unwrap();
        b.publish(vec![Message::new("t", "x")]).await.unwrap();
        assert!(s.next().await.is_none());
        assert_eq!(b.unsettled(), Some(0));
    }

    #[tokio::test]
    async fn settling_after_a_broadcast_subscription_closed_says_what_happens() {
        let b = EmbeddedBroker::new();
        let mut s = b
            .subscribe(SubscriptionSpec::broadcast(pat("t")))
            .await
            .unwrap();
        b.publish(vec![Message::new("t", "1"), Message::new("t", "2")])
            .await
            .unwrap();
        let d1 = next(&mut s).await;
        let d2 = next(&mut s).await;
        s.close().await.unwrap();
        drop(s);
        // The queue is gone: an ack has nothing to do, a nack cannot redeliver.
        d1.acker.ack().await.unwrap();
        let e = d2.acker.nack(Duration::ZERO).await.unwrap_err();
        assert!(
            e.kind() == ErrorKind::Settled && e.message().contains("not redelivered"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_full_queue_refuses_the_whole_publish_as_busy() {
        let b = EmbeddedBroker::new();
        b.set_max_queued(3);
        let group = |p: &str| SubscriptionSpec::competing(Pattern::parse(p).unwrap(), "g");
        let mut narrow = b.subscribe(group("jobs.a")).await.unwrap();
        let mut wide = b.subscribe(group("jobs.*")).await.unwrap();
        b.publish(vec![
            Message::new("jobs.b", "b1"),
            Message::new("jobs.b", "b2"),
        ])
        .await
        .unwrap();
        // `jobs.*` holds 2: two more `jobs.a` would take it to 4.
        let two = vec![Message::new("jobs.a", "a1"), Message::new("jobs.a", "a2")];
        let e = b.publish(two).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Busy, "{e}");
        assert!(e.to_string().contains("at most 3"), "{e}");
        // Nothing of it was queued, not even in the queue with room.
        assert_eq!(b.held(), 2);
        // Once a message is settled there is room again.
        next(&mut wide).await.acker.ack().await.unwrap();
        b.publish(vec![Message::new("jobs.a", "a3")]).await.unwrap();
        assert_eq!(&next(&mut narrow).await.message.data[..], b"a3");
        assert_eq!(b.held(), 3);
    }

    #[tokio::test]
    async fn the_bound_counts_every_run_of_a_publish() {
        let b = EmbeddedBroker::new();
        b.set_max_queued(3);
        let group = |p: &str| SubscriptionSpec::competing(Pattern::parse(p).unwrap(), "g");
        let _wide = b.subscribe(group("jobs.*")).await.unwrap();
        let _narrow = b.subscribe(group("jobs.a")).await.unwrap();
        // Four runs of one message, all four for `jobs.*`.
        let topics = ["jobs.a", "jobs.b", "jobs.a", "jobs.b"];
        let four = topics.map(|t| Message::new(t, "x")).to_vec();
        let e = b.publish(four).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Busy, "{e}");
        assert!(e.to_string().contains("`jobs.*`"), "{e}");
        assert_eq!(b.held(), 0);
        let three = topics[..3].iter().map(|t| Message::new(*t, "x")).collect();
        b.publish(three).await.unwrap();
        // `jobs.*` has 3, `jobs.a` 2.
        assert_eq!(b.held(), 5);
    }

    #[tokio::test]
    async fn publish_rejects_wildcards() {
        let b = EmbeddedBroker::new();
        assert!(b.publish(vec![Message::new("a.*", "x")]).await.is_err());
    }
}

#[cfg(test)]
mod durable_tests {
    use super::tests::next;
    use super::*;

    fn spec() -> SubscriptionSpec {
        SubscriptionSpec::competing(Pattern::parse("jobs.*").unwrap(), "workers")
    }

    #[tokio::test]
    async fn unsettled_messages_come_back_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let b = EmbeddedBroker::open(dir.path(), SyncPolicy::Always).unwrap();
            assert!(b.features().durable);
            let mut s = b.subscribe(spec()).await.unwrap();
            let msgs = (1..=4).map(|i| {
                let mut m = Message::new("jobs.a", format!("m{i}"));
                m.content_type = Some("text/plain".into());
                m.set_meta("k", "v");
                m
            });
            b.publish(msgs.collect()).await.unwrap();
            // Broadcast queues are not stored.
            let mut bc = b
                .subscribe(SubscriptionSpec::broadcast(
                    Pattern::parse("jobs.a").unwrap(),
                ))
                .await
                .unwrap();
            b.publish(vec![Message::new("jobs.a", "m5")]).await.unwrap();
            next(&mut bc).await.acker.ack().await.unwrap();
            next(&mut s).await.acker.ack().await.unwrap(); // m1 done
            next(&mut s).await.acker.nack(Duration::ZERO).await.unwrap(); // m2 attempt 2
            let _held = next(&mut s).await; // m3 in flight, never settled
            b.flush().await.unwrap();
        }
        let b = EmbeddedBroker::open(dir.path(), SyncPolicy::Always).unwrap();
        // A group queue outlives its consumers: it keeps collecting.
        b.publish(vec![Message::new("jobs.b", "m6")]).await.unwrap();
        let mut s = b.subscribe(spec()).await.unwrap();
        let mut got = Vec::new();
        for _ in 0..5 {
            let d = next(&mut s).await;
            if d.message.meta("k").is_some() {
                assert_eq!(d.message.content_type.as_deref(), Some("text/plain"));
            }
            got.push((
                String::from_utf8(d.message.data.to_vec()).unwrap(),
                d.attempt,
            ));
            d.acker.ack().await.unwrap();
        }
        got.sort();
        assert_eq!(
            got,
            [("m2", 2), ("m3", 1), ("m4", 1), ("m5", 1), ("m6", 1)]
                .map(|(m, a)| (m.to_string(), a))
        );
        b.flush().await.unwrap();
        drop((s, b));
        let b = EmbeddedBroker::open(dir.path(), SyncPolicy::Os).unwrap();
        let mut s = b.subscribe(spec()).await.unwrap();
        let nothing = tokio::time::timeout(Duration::from_millis(200), s.next()).await;
        assert!(nothing.is_err(), "everything was acknowledged before");
    }

    #[tokio::test]
    async fn a_data_directory_has_one_owner() {
        let dir = tempfile::tempdir().unwrap();
        let _first = EmbeddedBroker::open(dir.path(), SyncPolicy::Always).unwrap();
        let second = EmbeddedBroker::open(dir.path(), SyncPolicy::Always);
        assert!(
            second.is_err(),
            "a second open of a held directory must fail"
        );
    }
}
