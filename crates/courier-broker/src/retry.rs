//! In-process redelivery, for brokers that cannot redeliver by themselves.
//!
//! Core NATS and Redis pub/sub have no acknowledgements. So that a rejected
//! message is still redelivered, its subscription keeps it in memory and hands
//! it out again after the delay, with the attempt counter raised. These
//! redeliveries die with the process, like the broker's own at-most-once
//! delivery; durable backends use the broker's native mechanism instead.

use std::pin::pin;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use futures::{Stream, StreamExt};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::backend::{Acker, Delivery};
use crate::{BrokerError, Message};

/// Rejected messages of one subscription, waiting to be handed out again.
#[derive(Default)]
pub struct LocalRetries {
    queue: Mutex<Vec<(Instant, Message, u32)>>,
    notify: Notify,
}

/// What [`LocalRetries::next_from`] found first.
pub enum Next<T> {
    /// A rejected message whose delay is over.
    Retry(Delivery),
    /// The next item of the broker's stream.
    Source(T),
}

impl LocalRetries {
    /// An empty set, shared by a subscription and its ackers.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(Instant, Message, u32)>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A delivery of `message` whose nack comes back here.
    pub fn delivery(self: &Arc<Self>, message: Message, attempt: u32) -> Delivery {
        Delivery {
            message: message.clone(),
            attempt,
            acker: Box::new(LocalAcker {
                retries: Arc::downgrade(self),
                message,
                attempt,
            }),
        }
    }

    /// A due retry, or when the next one falls due.
    fn due(&self, now: Instant) -> Result<(Message, u32), Option<Instant>> {
        let mut q = self.lock();
        let Some(i) = (0..q.len()).min_by_key(|&i| q[i].0) else {
            return Err(None);
        };
        if q[i].0 <= now {
            let (_, m, attempt) = q.remove(i);
            Ok((m, attempt))
        } else {
            Err(Some(q[i].0))
        }
    }

    /// Waits for a due retry or the next item of `source`, whichever comes
    /// first. Cancel-safe when `source`'s `next` is.
    pub async fn next_from<S: Stream + Unpin>(
        self: &Arc<Self>,
        source: &mut S,
    ) -> Next<Option<S::Item>> {
        loop {
            let mut notified = pin!(self.notify.notified());
            notified.as_mut().enable();
            let wake = match self.due(Instant::now()) {
                Ok((m, attempt)) => return Next::Retry(self.delivery(m, attempt)),
                Err(wake) => wake,
            };
            let far = Instant::now() + Duration::from_secs(3600);
            tokio::select! {
                item = source.next() => return Next::Source(item),
                _ = tokio::time::sleep_until(wake.unwrap_or(far)) => {}
                _ = notified => {}
            }
        }
    }

    /// Forgets every pending retry (the subscription is closing).
    pub fn clear(&self) {
        self.lock().clear();
    }
}

/// Settles a delivery of an ack-less broker: `ack` and `term` have nothing to
/// do, `nack` queues the message for redelivery.
struct LocalAcker {
    retries: Weak<LocalRetries>,
    message: Message,
    attempt: u32,
}

#[async_trait]
impl Acker for LocalAcker {
    async fn ack(self: Box<Self>) -> Result<(), BrokerError> {
        Ok(())
    }

    async fn nack(self: Box<Self>, delay: Duration) -> Result<(), BrokerError> {
        let retries = self
            .retries
            .upgrade()
            .ok_or_else(|| BrokerError::Settled("the subscription is closed".into()))?;
        retries
            .lock()
            .push((Instant::now() + delay, self.message, self.attempt + 1));
        retries.notify.notify_waiters();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn nack_comes_back_after_the_delay_with_the_next_attempt() {
        let retries = LocalRetries::new();
        let mut source = futures::stream::pending::<u32>();
        let d = retries.delivery(Message::new("t", "x"), 1);
        d.acker.nack(Duration::from_millis(30)).await.unwrap();
        let started = Instant::now();
        match retries.next_from(&mut source).await {
            Next::Retry(d) => {
                assert_eq!(d.attempt, 2);
                assert_eq!(d.message.data, "x");
                assert!(started.elapsed() >= Duration::from_millis(25));
            }
            Next::Source(_) => panic!("the source is empty"),
        }
    }

    #[tokio::test]
    async fn source_items_pass_through() {
        let retries = LocalRetries::new();
        let mut source = futures::stream::iter([7u32]);
        assert!(matches!(
            retries.next_from(&mut source).await,
            Next::Source(Some(7))
        ));
        assert!(matches!(
            retries.next_from(&mut source).await,
            Next::Source(None)
        ));
    }
}
