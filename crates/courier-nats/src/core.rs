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
use futures::{FutureExt, StreamExt};

use crate::connection_error;
use crate::headers::{from_nats, to_headers};

/// Publishes on core NATS and waits until they are written to the server (a
/// flush; core NATS gives no receipt).
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
        Err(_) => Err(BrokerError::timeout("nats publish", timeout)),
    }
}

/// Waits until the server has processed everything this connection sent so
/// far: a message to an inbox of our own comes back only after it (a flush
/// only writes to the socket; the server reads each connection in order but
/// connections independently of each other).
async fn round_trip(client: &async_nats::Client, timeout: Duration) -> Result<(), BrokerError> {
    let inbox = client.new_inbox();
    let mut echo = client
        .subscribe(inbox.clone())
        .await
        .map_err(connection_error)?;
    client
        .publish(inbox, bytes::Bytes::new())
        .await
        .map_err(connection_error)?;
    match tokio::time::timeout(timeout, echo.next()).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(connection_error(
            "the connection closed during a round trip",
        )),
        Err(_) => Err(BrokerError::timeout("nats subscribe", timeout)),
    }
}

/// Subscribes on core NATS: a plain subscription, or a queue group. Returns
/// once the server has the subscription (a round trip), so that whatever is
/// published after it, from any connection, reaches it.
pub async fn subscribe(
    client: &async_nats::Client,
    spec: SubscriptionSpec,
    timeout: Duration,
) -> Result<Box<dyn Subscription>, BrokerError> {
    let subject = spec.pattern.as_str().to_string();
    let subscriber = match &spec.mode {
        Mode::Broadcast => client.subscribe(subject).await,
        Mode::Competing { group } => client.queue_subscribe(subject, group.clone()).await,
    }
    .map_err(connection_error)?;
    round_trip(client, timeout).await?;
    Ok(Box::new(CoreSubscription {
        subscriber: Some(subscriber),
        retries: LocalRetries::new(),
    }))
}

struct CoreSubscription {
    subscriber: Option<async_nats::Subscriber>,
    retries: Arc<LocalRetries>,
}

impl CoreSubscription {
    /// The next delivery: a due in-process redelivery or the next message;
    /// `None` once the subscription has ended. Cancel-safe.
    async fn arrived(&mut self) -> Option<Delivery> {
        let subscriber = self.subscriber.as_mut()?;
        match self.retries.next_from(subscriber).await {
            Next::Retry(d) => Some(d),
            Next::Source(m) => {
                let m = m?;
                let message = from_nats(
                    m.subject.as_str(),
                    m.reply.as_ref().map(|r| r.as_str()),
                    m.headers.as_ref(),
                    m.payload,
                    false,
                );
                Some(self.retries.delivery(message, 1))
            }
        }
    }
}

#[async_trait]
impl Subscription for CoreSubscription {
    async fn next(&mut self) -> Option<Result<Delivery, BrokerError>> {
        self.arrived().await.map(Ok)
    }

    /// Waits for the first delivery, then takes along those that have
    /// arrived already, up to `max`: the client hands core NATS messages
    /// over one at a time through a channel, and taking what is there
    /// without waiting (a receive, no I/O) saves each one a call of its own
    /// through the host's pump. Cancel-safe: nothing is taken across an
    /// `await` but the first.
    async fn next_batch(&mut self, max: usize) -> Option<Result<Vec<Delivery>, BrokerError>> {
        let mut out = vec![self.arrived().await?];
        while out.len() < max {
            // Nothing ready, or the end: the end comes on the next call.
            match self.arrived().now_or_never().flatten() {
                Some(d) => out.push(d),
                None => break,
            }
        }
        Some(Ok(out))
    }

    async fn close(&mut self) -> Result<(), BrokerError> {
        if let Some(mut s) = self.subscriber.take() {
            s.unsubscribe().await.map_err(connection_error)?;
        }
        self.retries.clear();
        Ok(())
    }
}
