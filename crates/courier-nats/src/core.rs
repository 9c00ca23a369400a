//! Core NATS: broadcast subscriptions and queue groups.
//!
//! Core NATS has no acknowledgements: a message is delivered at most once. So
//! that `abandon-message` and handler failures still lead to redelivery, a
//! nacked message is redelivered in process ([`courier_broker::retry`]); those
//! redeliveries die with the process, as core NATS messages do. Use JetStream
//! for durability.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use courier_broker::backend::{Delivery, Mode, Subscription, SubscriptionSpec};
use courier_broker::retry::{LocalRetries, Next};
use courier_broker::{BrokerError, Message};

use crate::connection_error;
use crate::headers::{from_nats, to_headers};

/// Publishes on core NATS and waits until the server has them (a flush).
pub async fn publish(
    client: &async_nats::Client,
    messages: Vec<Message>,
    timeout: Duration,
) -> Result<(), BrokerError> {
    for m in messages {
        let headers = to_headers(&m, false)?;
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
        retries: LocalRetries::new(),
    }))
}

struct CoreSubscription {
    subscriber: Option<async_nats::Subscriber>,
    retries: Arc<LocalRetries>,
}

#[async_trait]
impl Subscription for CoreSubscription {
    async fn next(&mut self) -> Option<Result<Delivery, BrokerError>> {
        let subscriber = self.subscriber.as_mut()?;
        match self.retries.next_from(subscriber).await {
            Next::Retry(d) => Some(Ok(d)),
            Next::Source(m) => {
                let m = m?;
                let message = from_nats(
                    m.subject.as_str(),
                    m.reply.as_ref().map(|r| r.as_str()),
                    m.headers.as_ref(),
                    m.payload,
                    false,
                );
                Some(Ok(self.retries.delivery(message, 1)))
            }
        }
    }

    async fn close(&mut self) -> Result<(), BrokerError> {
        if let Some(mut s) = self.subscriber.take() {
            s.unsubscribe().await.map_err(connection_error)?;
        }
        self.retries.clear();
        Ok(())
    }
}
