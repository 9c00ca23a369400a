//! Drain and shutdown: `Runtime::drained` resolves once everything is
//! settled, and a runtime stopped with messages in flight settles or hands
//! back every one of them, at once and without charging an attempt to a
//! message the guest never had.

use courier_broker::{Backend, Message, Pattern, SubscriptionSpec};

use super::harness::{Harness, WAIT, next, next_delivery, nothing};

const PUBLISHED: usize = 24;

/// The `uppercase` guest, point-to-point from `in` to `out`, taking
/// `delay_ms` per message, with `more` settings (TOML inline-table pairs).
fn slow_uppercase(delay_ms: u32, more: &str) -> String {
    format!(
        r#"guests.uppercase = {{ component = "{{uppercase}}", subscribe = ["in"], allow-publish = ["out"], mode = "point-to-point", env = {{ DELAY_MS = "{delay_ms}" }} {more} }}"#
    )
}

/// A slow point-to-point guest is stopped after its first batch: what it
/// handled is settled, what was queued for it or still in the broker is
/// there for the next consumer of the same queue right away (not after the
/// broker's ack deadline, over a minute here), at attempt 1, and each
/// message is one or the other, once.
#[tokio::test]
async fn stopping_mid_stream_settles_or_hands_back_every_message() {
    let h = Harness::start(&slow_uppercase(
        50,
        ", concurrency = 2, batch-size = 2, ack-wait-ms = 60000",
    ))
    .await;
    let mut out = h.watch("out").await;
    let keys: Vec<String> = (0..PUBLISHED).map(|i| format!("k{i:02}")).collect();
    let messages = keys.iter().map(|k| Message::new("in", k.clone())).collect();
    h.broker().publish(messages).await.unwrap();
    let lower = |m: Message| String::from_utf8_lossy(&m.data).to_lowercase();
    // Mid-stream: one batch done, the queue full, the rest in the broker.
    let mut settled = vec![lower(next(&mut out).await)];
    tokio::time::timeout(WAIT, h.runtime.stop())
        .await
        .expect("stop finishes with the guest's queue full");
    let stats = h.runtime.guest("uppercase").unwrap().stats();
    assert_eq!(
        stats.delivered, stats.accepted,
        "every message handed to the guest is settled: {stats:?}"
    );
    while (settled.len() as u64) < stats.accepted {
        settled.push(lower(next(&mut out).await));
    }
    nothing(&mut out).await;
    assert!(
        settled.len() < PUBLISHED,
        "the stop came after the last message: nothing was left to hand back"
    );

    let mut again = h
        .broker()
        .subscribe(SubscriptionSpec::competing(
            Pattern::parse("in").unwrap(),
            "uppercase",
        ))
        .await
        .unwrap();
    let mut handed_back = Vec::new();
    while settled.len() + handed_back.len() < PUBLISHED {
        let d = next_delivery(&mut again).await;
        let key = String::from_utf8_lossy(&d.message.data).into_owned();
        assert_eq!(
            d.attempt, 1,
            "{key} never reached the guest, yet an attempt was counted"
        );
        handed_back.push(key);
        d.acker.ack().await.unwrap();
    }
    nothing(&mut again).await;
    assert_eq!(h.broker().unsettled(), Some(0));
    let mut all: Vec<String> = settled.iter().chain(&handed_back).cloned().collect();
    all.sort();
    assert_eq!(
        all, keys,
        "settled {settled:?} and handed back {handed_back:?}: each message once"
    );
}

/// `drained` resolves once the guest has settled everything published,
/// woken by the guest going idle rather than by polling.
#[tokio::test]
async fn drained_resolves_once_every_message_is_settled() {
    let h = Harness::start(&slow_uppercase(20, "")).await;
    let messages = (0..10)
        .map(|i| Message::new("in", format!("m{i}")))
        .collect();
    h.broker().publish(messages).await.unwrap();
    tokio::time::timeout(WAIT, h.runtime.drained())
        .await
        .expect("drained within the deadline");
    assert_eq!(h.runtime.guest("uppercase").unwrap().stats().accepted, 10);
    assert_eq!(h.broker().unsettled(), Some(0));
    assert!(h.runtime.idle());
}
