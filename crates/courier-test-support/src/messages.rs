//! Reading what arrives on a subscription: the next message, everything
//! until a quiet spell, or the proof that nothing arrives.

use std::time::Duration;

use courier_broker::{Backend, Delivery, Message, Pattern, Subscription, SubscriptionSpec};

/// How long [`next`] waits for a message before the test fails.
pub const WAIT: Duration = Duration::from_secs(20);

/// A broadcast subscription to `channel` (a pattern) on `backend`.
pub async fn watch(backend: &dyn Backend, channel: &str) -> Box<dyn Subscription> {
    let pattern = Pattern::parse(channel).unwrap_or_else(|e| panic!("`{channel}`: {e}"));
    backend
        .subscribe(SubscriptionSpec::broadcast(pattern))
        .await
        .unwrap_or_else(|e| panic!("watching `{channel}`: {e}"))
}

/// The next delivery on `sub`, not settled; panics after [`WAIT`].
pub async fn next_delivery(sub: &mut Box<dyn Subscription>) -> Delivery {
    tokio::time::timeout(WAIT, sub.next())
        .await
        .expect("a message within the deadline")
        .expect("subscription open")
        .expect("delivery")
}

/// The next message on `sub`, acked; panics after [`WAIT`].
pub async fn next(sub: &mut Box<dyn Subscription>) -> Message {
    let d = next_delivery(sub).await;
    let m = d.message.clone();
    d.acker.ack().await.expect("ack");
    m
}

/// Everything arriving on `sub` (acked) until nothing came for `quiet`.
pub async fn drain(sub: &mut Box<dyn Subscription>, quiet: Duration) -> Vec<Message> {
    let mut got = Vec::new();
    while let Ok(Some(Ok(d))) = tokio::time::timeout(quiet, sub.next()).await {
        got.push(d.message.clone());
        d.acker.ack().await.expect("ack");
    }
    got
}

/// Panics if anything arrives on `sub` within `quiet`.
pub async fn nothing(sub: &mut Box<dyn Subscription>, quiet: Duration) {
    if let Ok(Some(Ok(d))) = tokio::time::timeout(quiet, sub.next()).await {
        panic!(
            "unexpected message on {}: {:?}",
            d.message.topic,
            text(&d.message)
        );
    }
}

/// A message's data as text (invalid UTF-8 replaced).
pub fn text(m: &Message) -> String {
    String::from_utf8_lossy(&m.data).into_owned()
}
