//! In-process redelivery, for brokers that cannot redeliver by themselves.
//!
//! Core NATS and Redis pub/sub have no acknowledgements. So that a rejected
//! message is still redelivered, its subscription keeps it in memory and hands
//! it out again after the delay, with the attempt counter raised. These
//! redeliveries die with the process, like the broker's own at-most-once
//! delivery; durable backends use the broker's native mechanism instead.
//! A backend that must still tell the broker when the message is finally
//! settled (MQTT's PUBACK) passes a [`Settle`] action along.

use std::pin::pin;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;
use futures::{Stream, StreamExt};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::backend::{Acker, Delivery};
use crate::{BrokerError, Message};

/// What settling a message means to the broker, for a backend that must
/// still tell the broker (MQTT's PUBACK). It travels with the message
/// through its in-process redeliveries.
pub trait Settle: Send + Sync + 'static {
    /// Runs once, when the delivery or one of its redeliveries is finally
    /// acked or termed.
    fn settle(self: Box<Self>) -> BoxFuture<'static, Result<(), BrokerError>>;

    /// The message is to be handed out again in process, at `attempt`
    /// (a nack raised it; a release kept it). The default does nothing.
    fn retrying(&self, attempt: u32) {
        let _ = attempt;
    }
}

/// A rejected message waiting for its redelivery.
struct Waiting {
    due: Instant,
    message: Message,
    attempt: u32,
    settle: Option<Box<dyn Settle>>,
}

/// Rejected messages of one subscription, waiting to be handed out again.
#[derive(Default)]
pub struct LocalRetries {
    queue: Mutex<Vec<Waiting>>,
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

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Waiting>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A delivery of `message` whose nack comes back here.
    pub fn delivery(self: &Arc<Self>, message: Message, attempt: u32) -> Delivery {
        self.delivery_settling(message, attempt, None)
    }

    /// A delivery whose final ack or term runs `settle`.
    pub fn delivery_settling(
        self: &Arc<Self>,
        message: Message,
        attempt: u32,
        settle: Option<Box<dyn Settle>>,
    ) -> Delivery {
        Delivery {
            message: message.clone(),
            attempt,
            acker: Box::new(LocalAcker {
                retries: Arc::downgrade(self),
                message,
                attempt,
                settle,
            }),
        }
    }

    /// A due retry, or when the next one falls due.
    fn due(&self, now: Instant) -> Result<Waiting, Option<Instant>> {
        let mut q = self.lock();
        let Some(i) = (0..q.len()).min_by_key(|&i| q[i].due) else {
            return Err(None);
        };
        if q[i].due <= now {
            Ok(q.remove(i))
        } else {
            Err(Some(q[i].due))
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
                Ok(w) => {
                    return Next::Retry(self.delivery_settling(w.message, w.attempt, w.settle));
                }
                Err(wake) => wake,
            };
            // A timer only while a retry waits: with none, nothing but the
            // source or a new retry can end the wait.
            let due = async {
                match wake {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                item = source.next() => return Next::Source(item),
                _ = due => {}
                _ = notified => {}
            }
        }
    }

    /// Forgets every pending retry (the subscription is closing).
    pub fn clear(&self) {
        self.lock().clear();
    }
}

/// Settles a delivery redelivered in process: `ack` and `term` run the
/// broker's settle action (if any), `nack` queues the message again with
/// its attempt raised, `release` without.
struct LocalAcker {
    retries: Weak<LocalRetries>,
    message: Message,
    attempt: u32,
    settle: Option<Box<dyn Settle>>,
}

impl LocalAcker {
    /// Queues the message again, due after `delay`, at `attempt`.
    /// With its subscription closed, a message the broker still holds
    /// (one with a settle action) comes again from the broker, at the
    /// attempt told; any other is gone.
    fn again(self, delay: Duration, attempt: u32) -> Result<(), BrokerError> {
        if let Some(settle) = &self.settle {
            settle.retrying(attempt);
        }
        let Some(retries) = self.retries.upgrade() else {
            return match self.settle {
                Some(_) => Ok(()),
                None => Err(BrokerError::settled("the subscription is closed")),
            };
        };
        retries.lock().push(Waiting {
            due: Instant::now() + delay,
            message: self.message,
            attempt,
            settle: self.settle,
        });
        retries.notify.notify_waiters();
        Ok(())
    }
}

#[async_trait]
impl Acker for LocalAcker {
    async fn ack(self: Box<Self>) -> Result<(), BrokerError> {
        match self.settle {
            Some(settle) => settle.settle().await,
            None => Ok(()),
        }
    }

    async fn nack(self: Box<Self>, delay: Duration) -> Result<(), BrokerError> {
        let attempt = self.attempt + 1;
        self.again(delay, attempt)
    }

    /// The guest never saw it: it comes again at once, at the same attempt.
    async fn release(self: Box<Self>) -> Result<(), BrokerError> {
        let attempt = self.attempt;
        self.again(Duration::ZERO, attempt)
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
    async fn a_release_comes_back_at_once_at_the_same_attempt() {
        let retries = LocalRetries::new();
        let mut source = futures::stream::pending::<u32>();
        let d = retries.delivery(Message::new("t", "x"), 3);
        d.acker.release().await.unwrap();
        match retries.next_from(&mut source).await {
            Next::Retry(d) => assert_eq!(d.attempt, 3),
            Next::Source(_) => panic!("the source is empty"),
        }
    }

    #[tokio::test]
    async fn a_nack_during_an_idle_wait_ends_it() {
        // Waiting with no retry pending (no timer): a nack meanwhile wakes
        // the wait, which then hands the message out once it is due.
        let retries = LocalRetries::new();
        let mut source = futures::stream::pending::<u32>();
        let d = retries.delivery(Message::new("t", "x"), 1);
        let nack = async {
            tokio::task::yield_now().await;
            d.acker.nack(Duration::from_millis(10)).await.unwrap();
        };
        let (next, ()) = tokio::join!(retries.next_from(&mut source), nack);
        match next {
            Next::Retry(d) => assert_eq!(d.attempt, 2),
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
