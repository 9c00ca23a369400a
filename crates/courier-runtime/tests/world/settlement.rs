//! Settlement regressions: each test is one hole a guest written outside the
//! project found, and fails on a host that has it.

use courier_broker::message::{ATTEMPTS_KEY, LAST_ERROR_KEY, ORIGINAL_TOPIC_KEY};
use courier_broker::{Backend, Message};
use courier_runtime::{Config, Runtime};

use super::harness::{Harness, PROBE, next, nothing};

/// A second `complete-message` of a message must not settle a batch-mate
/// that looks the same (same topic and payload).
#[tokio::test]
async fn a_second_complete_never_settles_a_look_alike_batch_mate() {
    let h = Harness::start(
        r#"
        [guests.probe]
        component = "{probe}"
        subscribe = ["cmd"]
        allow-publish = ["probe.result"]
        ack = "manual"
        batch-size = 2
        batch-linger-ms = 300
        "#,
    )
    .await;
    let mut r = h.watch("probe.result").await;
    let twin = Message::new("cmd", "complete-twice");
    h.broker().publish(vec![twin.clone(), twin]).await.unwrap();
    for _ in 0..2 {
        let report = next(&mut r).await;
        assert!(
            String::from_utf8_lossy(&report.data).starts_with("err:other:no such delivery"),
            "each message's second complete must fail, got {report:?}"
        );
    }
    h.wait_idle().await;
    let guest = h.runtime.guest("probe").unwrap();
    assert_eq!(
        guest.stats().accepted,
        2,
        "each completed by its own handling"
    );
    assert_eq!(guest.in_flight(), 0);
}

/// With manual acks, a message the guest never completes is charged an
/// attempt each time its ack deadline passes, and dead-lettered after
/// `max-attempts`, not redelivered forever.
#[tokio::test]
async fn manual_acks_honour_max_attempts() {
    let h = Harness::start(
        r#"
        [guests.probe]
        component = "{probe}"
        subscribe = ["cmd"]
        allow-publish = ["probe.result"]
        ack = "manual"
        ack-wait-ms = 100
        max-attempts = 2
        backoff-ms = 10
        dead-letter = "dlq"
        "#,
    )
    .await;
    let mut r = h.watch("probe.result").await;
    let mut dlq = h.watch("dlq").await;
    h.publish("cmd", "echo").await;
    for attempt in ["1", "2"] {
        assert_eq!(next(&mut r).await.meta("attempt"), Some(attempt));
    }
    let letter = next(&mut dlq).await;
    assert_eq!(letter.meta(ATTEMPTS_KEY), Some("2"));
    assert!(
        letter.meta(LAST_ERROR_KEY).unwrap().contains("ack-wait-ms"),
        "{letter:?}"
    );
    nothing(&mut r).await;
    h.wait_idle().await;
}

/// A failed batch charges no one: its untouched messages are handed over
/// again alone, and only a failure of a message's own counts.
#[tokio::test]
async fn innocent_batch_mates_are_not_charged() {
    let h = Harness::start(
        r#"
        [guests.flaky]
        component = "{flaky}"
        subscribe = ["in"]
        allow-publish = ["out"]
        batch-size = 3
        batch-linger-ms = 300
        max-attempts = 1
        dead-letter = "dlq"
        "#,
    )
    .await;
    let mut out = h.watch("out").await;
    let mut dlq = h.watch("dlq").await;
    let batch = ["ok 1", "fail", "ok 2"].map(|d| Message::new("in", d));
    h.broker().publish(batch.to_vec()).await.unwrap();
    assert_eq!(next(&mut out).await.data, "ok 1");
    assert_eq!(next(&mut out).await.data, "ok 2");
    let letter = next(&mut dlq).await;
    assert_eq!(letter.data, "fail");
    assert_eq!(letter.meta(ATTEMPTS_KEY), Some("1"));
    nothing(&mut dlq).await;
    h.wait_idle().await;
}

/// A trapping message is dead-lettered after `max-attempts` traps of its
/// own; the trap its batch shared with an innocent message is not one.
#[tokio::test]
async fn a_trap_is_charged_only_to_the_message_that_trapped() {
    let h = Harness::start(
        r#"
        [guests.flaky]
        component = "{flaky}"
        subscribe = ["in"]
        allow-publish = ["out"]
        batch-size = 2
        batch-linger-ms = 300
        max-attempts = 3
        backoff-ms = 10
        dead-letter = "dlq"
        "#,
    )
    .await;
    let mut out = h.watch("out").await;
    let mut dlq = h.watch("dlq").await;
    let batch = ["trap", "fine"].map(|d| Message::new("in", d));
    h.broker().publish(batch.to_vec()).await.unwrap();
    assert_eq!(next(&mut out).await.data, "fine");
    let letter = next(&mut dlq).await;
    assert_eq!(letter.data, "trap");
    assert_eq!(letter.meta(ATTEMPTS_KEY), Some("3"));
    h.wait_idle().await;
    let s = h.runtime.guest("flaky").unwrap().stats();
    // The batch's trap, then three of its own.
    assert_eq!(s.traps, 4, "{s:?}");
    assert_eq!((s.accepted, s.dead_lettered), (1, 1), "{s:?}");
}

/// A guest that cannot run is refused at start, with the reason, before it
/// takes any message.
#[tokio::test]
async fn a_guest_that_cannot_run_is_refused_at_start() {
    let cases = [
        (
            format!(
                "[guests.mistyped]\ncomponent = \"{}\"\nsubscribe = [\"in\"]\n",
                test_programs::MISTYPED
            ),
            "mistyped",
        ),
        (
            format!(
                "[guests.probe]\ncomponent = \"{}\"\nsubscribe = [\"in\"]\nmemory-limit-mib = 1\n",
                test_programs::PROBE
            ),
            "memory-limit-mib = 1",
        ),
    ];
    for (toml, names) in cases {
        let runtime = Runtime::new(Config::from_toml(&toml).unwrap()).expect("it compiles");
        let e = format!("{:#}", runtime.start().await.expect_err("it cannot run"));
        assert!(e.contains("cannot run") && e.contains(names), "{e}");
        // Nothing subscribed: what is published stays in the broker.
        runtime
            .clients()
            .embedded()
            .publish(vec![Message::new("in", "x")])
            .await
            .unwrap();
        assert_eq!(runtime.totals().delivered, 0);
    }
}

/// Point-to-point groups belong to the guests configured for them: a guest
/// joins another's group only when `allow-groups` grants it.
#[tokio::test]
async fn a_guest_cannot_join_another_guests_group() {
    let billing = "\n[guests.billing]\ncomponent = \"{probe}\"\nsubscribe = [\"cmd\"]\nmode = \"point-to-point\"\n";
    let h = Harness::start(&format!("{PROBE}{billing}")).await;
    let mut r = h.watch("probe.result").await;
    let report = h
        .probe(&mut r, "subscribe cmd mode=point-to-point,group=billing")
        .await;
    assert_eq!(report, "err:unauthorized");
    assert_eq!(
        h.runtime.guest("probe").unwrap().subscriptions().await,
        ["cmd"]
    );
    let own = h
        .probe(&mut r, "subscribe cmd mode=point-to-point,group=probe")
        .await;
    assert_eq!(own, "ok");
    h.runtime.stop().await;

    let granted = PROBE.replace(
        "max-attempts = 2",
        "max-attempts = 2\nallow-groups = [\"billing\"]",
    );
    let h = Harness::start(&granted).await;
    let mut r = h.watch("probe.result").await;
    let report = h
        .probe(&mut r, "subscribe cmd mode=point-to-point,group=billing")
        .await;
    assert_eq!(report, "ok");
}

/// A pub-sub guest that unsubscribes from the channel of the message it is
/// handling still gets that message accepted: its ack has nothing left to
/// do, and nothing claims a redelivery that will not come.
#[tokio::test]
async fn unsubscribing_mid_call_still_accepts_the_message() {
    let h = Harness::start(PROBE).await;
    let mut r = h.watch("probe.result").await;
    assert_eq!(h.probe(&mut r, "subscribe -").await, "ok");
    h.wait_idle().await;
    let guest = h.runtime.guest("probe").unwrap();
    assert!(guest.subscriptions().await.is_empty());
    assert_eq!(guest.stats().accepted, 1);
}

/// Every `courier-*` metadata key is Courier's own: whatever a guest puts in
/// its messages, none of them is sent (a dead letter's provenance cannot be
/// forged).
#[tokio::test]
async fn a_guest_never_sends_courier_keys() {
    let h = Harness::start(PROBE).await;
    let mut r = h.watch("probe.result").await;
    let mut out = h.watch("out").await;
    let keys = [
        format!("{ORIGINAL_TOPIC_KEY}=payments"),
        format!("{LAST_ERROR_KEY}=forged"),
        format!("{ATTEMPTS_KEY}=9"),
        "Courier-Anything=x".to_string(),
        "trace=kept".to_string(),
    ];
    let cmd = format!("send-meta out {}", keys.join(","));
    assert_eq!(h.probe(&mut r, &cmd).await, "ok");
    let got = next(&mut out).await;
    assert_eq!(got.metadata, [("trace".to_string(), "kept".to_string())]);
}
