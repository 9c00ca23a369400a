//! Redis pub/sub: `PUBLISH` and `(P)SUBSCRIBE`.
//!
//! Broadcast only, at most once; a message is its payload alone, since Redis
//! pub/sub has no headers (content-type, reply-to and metadata are dropped;
//! use Streams to keep them). Patterns become Redis globs (`*` for both NATS
//! wildcards) and are then matched exactly in NATS syntax. A rejected message
//! is redelivered in process ([`courier_broker::retry`]).

use std::sync::Arc;

use async_trait::async_trait;
use courier_broker::backend::{Delivery, Mode, Subscription, SubscriptionSpec};
use courier_broker::retry::{LocalRetries, Next};
use courier_broker::{BrokerError, Message, Pattern};
use redis::aio::{ConnectionManager, PubSubStream};

use crate::options::RedisExtensions;
use crate::{KIND, connection_error};

/// Publishes each message's payload on its topic.
pub async fn publish(
    conn: &mut ConnectionManager,
    messages: Vec<Message>,
) -> Result<(), BrokerError> {
    let mut pipe = redis::pipe();
    for m in &messages {
        pipe.cmd("PUBLISH").arg(&m.topic).arg(&m.data[..]).ignore();
    }
    pipe.query_async::<()>(conn).await.map_err(connection_error)
}

/// The Redis glob for a NATS-syntax pattern (wider than the pattern: `*`
/// also matches dots), with glob characters in literals escaped.
pub fn to_glob(pattern: &Pattern) -> String {
    let mut glob = String::new();
    for (i, token) in pattern.as_str().split('.').enumerate() {
        if i > 0 {
            glob.push('.');
        }
        match token {
            "*" | ">" => glob.push('*'),
            literal => {
                for c in literal.chars() {
                    if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                        glob.push('\\');
                    }
                    glob.push(c);
                }
            }
        }
    }
    glob
}

/// Pub/sub takes no subscription extensions: they are Streams settings.
pub fn no_extensions(extensions: &RedisExtensions) -> Result<(), BrokerError> {
    if extensions.is_empty() {
        Ok(())
    } else {
        Err(BrokerError::invalid(
            "subscription extensions `durable` and `start` need a Streams client (options.streams = true)",
        ))
    }
}

/// Subscribes to a pattern (broadcast only).
pub async fn subscribe(
    client: &redis::Client,
    spec: SubscriptionSpec,
) -> Result<Box<dyn Subscription>, BrokerError> {
    if let Mode::Competing { .. } = spec.mode {
        return Err(BrokerError::unsupported(
            KIND,
            "point-to-point subscriptions on pub/sub (set options.streams = true)",
        ));
    }
    let extensions: RedisExtensions = courier_broker::extensions::parse(KIND, &spec.options)?;
    no_extensions(&extensions)?;
    let mut sub = PubSubSubscription {
        client: client.clone(),
        pattern: spec.pattern,
        stream: None,
        retries: LocalRetries::new(),
    };
    sub.connect().await?;
    Ok(Box::new(sub))
}

struct PubSubSubscription {
    client: redis::Client,
    pattern: Pattern,
    stream: Option<PubSubStream>,
    retries: Arc<LocalRetries>,
}

impl PubSubSubscription {
    async fn connect(&mut self) -> Result<(), BrokerError> {
        let mut pubsub = self
            .client
            .get_async_pubsub()
            .await
            .map_err(connection_error)?;
        if self.pattern.is_literal() {
            pubsub.subscribe(self.pattern.as_str()).await
        } else {
            pubsub.psubscribe(to_glob(&self.pattern)).await
        }
        .map_err(connection_error)?;
        self.stream = Some(pubsub.into_on_message());
        Ok(())
    }
}

#[async_trait]
impl Subscription for PubSubSubscription {
    async fn next(&mut self) -> Option<Result<Delivery, BrokerError>> {
        loop {
            let Some(stream) = self.stream.as_mut() else {
                // The connection dropped: subscribe again (messages published
                // meanwhile are lost, as pub/sub promises no more).
                if let Err(e) = self.connect().await {
                    return Some(Err(e));
                }
                tracing::info!(pattern = %self.pattern, "redis: subscribed again");
                continue;
            };
            match self.retries.next_from(stream).await {
                Next::Retry(d) => return Some(Ok(d)),
                Next::Source(None) => {
                    self.stream = None;
                    return Some(Err(connection_error("pub/sub connection closed")));
                }
                Next::Source(Some(msg)) => {
                    let channel = msg.get_channel_name();
                    if self.pattern.matches(channel) {
                        let m = Message::new(channel, msg.get_payload_bytes().to_vec());
                        return Some(Ok(self.retries.delivery(m, 1)));
                    }
                }
            }
        }
    }

    async fn close(&mut self) -> Result<(), BrokerError> {
        self.stream = None;
        self.retries.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        let g = |p: &str| to_glob(&Pattern::parse(p).unwrap());
        assert_eq!(g("a.*.c"), "a.*.c");
        assert_eq!(g("a.>"), "a.*");
        assert_eq!(g("we?ird[1]"), "we\\?ird\\[1\\]");
    }
}
