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
//! Messages are kept in memory: they survive neither a restart nor a crash.

use std::collections::{HashMap, VecDeque};
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::backend::{Acker, Backend, Delivery, Features, Mode, Subscription, SubscriptionSpec};
use crate::{BrokerError, Message, Pattern};

/// The embedded broker. Cloning it gives another handle to the same broker.
#[derive(Clone, Default)]
pub struct EmbeddedBroker {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    queues: Mutex<Vec<Arc<Queue>>>,
    next_queue: AtomicU64,
}

#[derive(Debug, PartialEq, Eq)]
enum QueueKey {
    Broadcast(u64),
    Group { group: String, pattern: String },
}

struct Queue {
    key: QueueKey,
    pattern: Pattern,
    state: Mutex<QueueState>,
    notify: Notify,
}

#[derive(Default)]
struct QueueState {
    ready: VecDeque<Entry>,
    delayed: Vec<(Instant, Entry)>,
    /// Acquired entries by delivery tag, with their ack deadline.
    inflight: HashMap<u64, (Instant, Entry)>,
    consumers: usize,
    next_tag: u64,
}

#[derive(Clone)]
struct Entry {
    message: Message,
    attempt: u32,
}

impl QueueState {
    fn push(&mut self, message: Message) {
        self.ready.push_back(Entry {
            message,
            attempt: 1,
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
        let expired: Vec<u64> = self
            .inflight
            .iter()
            .filter(|(_, (deadline, _))| *deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some((_, mut entry)) = self.inflight.remove(&id) {
                entry.attempt += 1;
                self.ready.push_back(entry);
            }
        }
        for (deadline, _) in self.inflight.values() {
            next = Some(next.map_or(*deadline, |n| n.min(*deadline)));
        }
        next
    }

    fn unsettled(&self) -> u64 {
        (self.ready.len() + self.delayed.len() + self.inflight.len()) as u64
    }
}

impl EmbeddedBroker {
    /// A new, empty broker.
    pub fn new() -> Self {
        Self::default()
    }

    fn queues(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Queue>>> {
        self.shared.queues.lock().unwrap_or_else(|e| e.into_inner())
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
            durable: false,
            ..Features::ALL
        }
    }

    async fn publish(&self, messages: Vec<Message>) -> Result<(), BrokerError> {
        crate::pattern::check_topics(&messages)?;
        let queues = self.queues();
        for message in messages {
            for queue in queues.iter().filter(|q| q.pattern.matches(&message.topic)) {
                lock(queue).push(message.clone());
                queue.notify.notify_waiters();
            }
        }
        Ok(())
    }

    async fn subscribe(
        &self,
        spec: SubscriptionSpec,
    ) -> Result<Box<dyn Subscription>, BrokerError> {
        let key = match &spec.mode {
            Mode::Broadcast => {
                QueueKey::Broadcast(self.shared.next_queue.fetch_add(1, Ordering::Relaxed))
            }
            Mode::Competing { group } => QueueKey::Group {
                group: group.clone(),
                pattern: spec.pattern.as_str().to_string(),
            },
        };
        let mut queues = self.queues();
        let queue = match queues.iter().find(|q| q.key == key) {
            Some(q) => q.clone(),
            None => {
                let q = Arc::new(Queue {
                    key,
                    pattern: spec.pattern.clone(),
                    state: Mutex::new(QueueState::default()),
                    notify: Notify::new(),
                });
                queues.push(q.clone());
                q
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
            self.queues()
                .iter()
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
                if let Some(entry) = state.ready.pop_front() {
                    // Each acquisition gets a fresh tag, so a late settle of an
                    // earlier (expired) delivery of the same message fails.
                    state.next_tag += 1;
                    let tag = state.next_tag;
                    let delivery = Delivery {
                        message: entry.message.clone(),
                        attempt: entry.attempt,
                        acker: Box::new(EmbeddedAcker {
                            queue: Arc::downgrade(&self.queue),
                            tag,
                        }),
                    };
                    state.inflight.insert(tag, (now + self.ack_wait, entry));
                    return Some(Ok(delivery));
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
            let mut queues = shared.queues.lock().unwrap_or_else(|e| e.into_inner());
            queues.retain(|q| !Arc::ptr_eq(q, &self.queue));
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
    fn take(&self) -> Result<(Arc<Queue>, Entry), BrokerError> {
        let queue = self
            .queue
            .upgrade()
            .ok_or_else(|| BrokerError::Settled("the subscription is closed".into()))?;
        let entry = lock(&queue).inflight.remove(&self.tag).map(|(_, e)| e);
        match entry {
            Some(entry) => Ok((queue, entry)),
            None => Err(BrokerError::Settled(format!(
                "delivery {} is no longer in flight (its ack deadline passed)",
                self.tag
            ))),
        }
    }
}

#[async_trait]
impl Acker for EmbeddedAcker {
    async fn ack(self: Box<Self>) -> Result<(), BrokerError> {
        self.take().map(|_| ())
    }

    async fn nack(self: Box<Self>, delay: Duration) -> Result<(), BrokerError> {
        let (queue, mut entry) = self.take()?;
        entry.attempt += 1;
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

    fn pat(s: &str) -> Pattern {
        Pattern::parse(s).unwrap()
    }

    async fn next(sub: &mut Box<dyn Subscription>) -> Delivery {
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
        assert!(matches!(
            first.acker.ack().await,
            Err(BrokerError::Settled(_))
        ));
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
    async fn publish_rejects_wildcards() {
        let b = EmbeddedBroker::new();
        assert!(b.publish(vec![Message::new("a.*", "x")]).await.is_err());
    }
}
