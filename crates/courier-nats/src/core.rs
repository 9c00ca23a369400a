//! Core NATS: broadcast subscriptions and queue groups.
//!
//! Core NATS has no acknowledgements: a message is delivered at most once. So
//! that `abandon-message` and handler failures still lead to redelivery, a
//! nacked message is kept in memory by its subscription and handed out again
//! after the delay, with the attempt counter raised. Those redeliveries die
//! with the process, as core NATS messages do; use JetStream for durability.

use std::pin::pin;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use courier_broker::backend::{Acker, Delivery, Mode, Subscription, SubscriptionSpec};
use courier_broker::{BrokerError, Message};
use futures::StreamExt;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::connection_error;
use crate::headers::{from_nats, to_headers};

/// Publishes on core NATS and waits until the server has them (a flush).
pub async fn publish(
    client: &async_nats::Client,
    messages: Vec<Message>,
    timeout: Duration,
) -> Result<(), BrokerError> {
    for m in messages {
        let headers = to_headers(&m, false);
        let sent = match m.reply_to {
            Some(reply) => {
                client
                    .publish_with_reply_and_headers(m.topic, reply, headers, m.data)
                    .await
            }
            None => client.publish_with_headers(m.topic, headers, m.data).await,
        };
        sent.map_err(connection_error)?;
    }
    match tokio::time::timeout(timeout, client.flush()).await {
        Ok(r) => r.map_err(connection_error),
        Err(_) => Err(BrokerError::Timeout {
            operation: "nats publish",
            after: timeout,
        }),
    }
}

/// Subscribes on core NATS: a plain subscription, or a queue group.
pub async fn subscribe(
    client: &async_nats::Client,
    spec: SubscriptionSpec,
) -> Result<Box<dyn Subscription>, BrokerError> {
    let subject = spec.pattern.as_str().to_string();
    let subscriber = match &spec.mode {
        Mode::Broadcast => client.subscribe(subject).await,
        Mode::Competing { group } => client.queue_subscribe(subject, group.clone()).await,
    }
    .map_err(connection_error)?;
    Ok(Box::new(CoreSubscription {
        subscriber: Some(subscriber),
        retries: Arc::new(Retries::default()),
    }))
}

/// Nacked messages waiting to be handed out again.
#[derive(Default)]
struct Retries {
    queue: Mutex<Vec<(Instant, Message, u32)>>,
    notify: Notify,
}

impl Retries {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(Instant, Message, u32)>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
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
}

struct CoreSubscription {
    subscriber: Option<async_nats::Subscriber>,
    retries: Arc<Retries>,
}

impl CoreSubscription {
    fn delivery(&self, message: Message, attempt: u32) -> Delivery {
        Delivery {
            message: message.clone(),
            attempt,
            acker: Box::new(CoreAcker {
                retries: Arc::downgrade(&self.retries),
                message,
                attempt,
            }),
        }
    }
}

#[async_trait]
impl Subscription for CoreSubscription {
    async fn next(&mut self) -> Option<Result<Delivery, BrokerError>> {
        loop {
            let mut notified = pin!(self.retries.notify.notified());
            notified.as_mut().enable();
            let wake = match self.retries.due(Instant::now()) {
                Ok((m, attempt)) => return Some(Ok(self.delivery(m, attempt))),
                Err(wake) => wake,
            };
            let subscriber = self.subscriber.as_mut()?;
            let far = Instant::now() + Duration::from_secs(3600);
            tokio::select! {
                m = subscriber.next() => {
                    let m = m?;
                    let message = from_nats(
                        m.subject.as_str(),
                        m.reply.as_ref().map(|r| r.as_str()),
                        m.headers.as_ref(),
                        m.payload,
                        false,
                    );
                    return Some(Ok(self.delivery(message, 1)));
                }
                _ = tokio::time::sleep_until(wake.unwrap_or(far)) => {}
                _ = notified => {}
            }
        }
    }

    async fn close(&mut self) -> Result<(), BrokerError> {
        if let Some(mut s) = self.subscriber.take() {
            s.unsubscribe().await.map_err(connection_error)?;
        }
        self.retries.lock().clear();
        Ok(())
    }
}

struct CoreAcker {
    retries: Weak<Retries>,
    message: Message,
    attempt: u32,
}

#[async_trait]
impl Acker for CoreAcker {
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
