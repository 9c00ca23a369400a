//! Every function of `wasi:messaging` and every error case, with real guest
//! components (built from `guests/`) on the embedded broker.
//!
//! Most tests drive the `probe` guest: each message's data is a command, and
//! the probe reports each command's outcome on `probe.result`.

use courier_broker::message::{ATTEMPTS_KEY, LAST_ERROR_KEY, ORIGINAL_TOPIC_KEY};
use courier_broker::{Backend, Message};

mod harness;
mod settlement;
mod shutdown;

use harness::{Harness, PROBE, next, nothing};

/// The `uppercase` guest on `in`, sending to `out` or to a reply channel.
const UPPERCASE: &str = r#"
[guests.uppercase]
component = "{uppercase}"
subscribe = ["in"]
allow-publish = ["out", "replies.>"]
"#;

#[tokio::test]
async fn uppercase_round_trip_keeps_fields_and_uses_reply_to() {
    let h = Harness::start(UPPERCASE).await;
    let mut out = h.watch("out").await;
    let mut replies = h.watch("replies.>").await;
    let mut m = Message::new("in", "hello wörld");
    m.content_type = Some("text/plain".into());
    m.metadata = vec![("trace".into(), "abc".into())];
    h.broker().publish(vec![m.clone()]).await.unwrap();
    let got = next(&mut out).await;
    assert_eq!(got.data, "HELLO WÖRLD");
    assert_eq!(got.content_type.as_deref(), Some("text/plain"));
    assert_eq!(got.meta("trace"), Some("abc"));
    assert_eq!(
        got.meta("courier-delivery-id"),
        None,
        "delivery ids must not leak"
    );

    m.reply_to = Some("replies.1".into());
    h.broker().publish(vec![m]).await.unwrap();
    let got = next(&mut replies).await;
    assert_eq!(got.topic, "replies.1");
    assert_eq!(got.data, "HELLO WÖRLD");
    nothing(&mut out).await;
    h.wait_idle().await;
    let stats = h.runtime.guest("uppercase").unwrap().stats();
    assert_eq!(
        (stats.delivered, stats.accepted),
        (2, 2),
        "auto-ack after ok"
    );
}

/// Every field of every message of a batch reaches the guest as it was
/// published: the host lowers a batch in one pass (`lower.rs` of
/// wasi-messaging), writing each record and its parts itself.
#[tokio::test]
async fn a_batch_reaches_the_guest_field_for_field() {
    let h = Harness::start(&format!(
        "{UPPERCASE}batch-size = 8\nbatch-linger-ms = 200\n"
    ))
    .await;
    let mut out = h.watch("out").await;
    let mut replies = h.watch("replies.>").await;
    let empty = Message::new("in", "");
    let mut full = Message::new("in", "héllo wörld ß");
    full.content_type = Some("text/plain; charset=utf-8".into());
    full.metadata = vec![
        ("a".into(), "1".into()),
        ("script".into(), "日本語".into()),
        ("a".into(), "again".into()),
        ("blank".into(), String::new()),
    ];
    let mut reply = Message::new("in", "abc");
    reply.reply_to = Some("replies.x".into());
    let big = Message::new("in", "z".repeat(64 * 1024));
    h.broker()
        .publish(vec![empty, full.clone(), reply, big])
        .await
        .unwrap();

    let got = next(&mut out).await;
    assert_eq!(
        (got.data.len(), got.content_type, got.metadata.len()),
        (0, None, 0),
        "the empty message"
    );
    let got = next(&mut out).await;
    assert_eq!(got.data, "HÉLLO WÖRLD SS");
    assert_eq!(got.content_type, full.content_type);
    assert_eq!(got.metadata, full.metadata, "pairs, order and repeats kept");
    let got = next(&mut out).await;
    assert_eq!(got.data, "Z".repeat(64 * 1024));
    let got = next(&mut replies).await;
    assert_eq!(
        (got.topic.as_str(), &got.data[..]),
        ("replies.x", &b"ABC"[..])
    );
    nothing(&mut out).await;
}

#[tokio::test]
async fn connect_names_clients_and_refuses_unknown_or_ungranted() {
    let h = Harness::start(PROBE).await;
    let mut r = h.watch("probe.result").await;
    assert_eq!(h.probe(&mut r, "connect -").await, "ok");
    assert_eq!(h.probe(&mut r, "connect default").await, "ok");
    assert_eq!(h.probe(&mut r, "connect other").await, "ok");
    assert_eq!(
        h.probe(&mut r, "connect nope").await,
        "err:connection:no client named `nope`"
    );
    assert_eq!(h.probe(&mut r, "connect secret").await, "err:unauthorized");
}

#[tokio::test]
async fn send_overrides_topic_and_enforces_the_allow_list() {
    let h = Harness::start(PROBE).await;
    let mut r = h.watch("probe.result").await;
    let mut out = h.watch("out").await;
    let mut out2 = h.watch("out2").await;
    let mut secret = h.watch("secret").await;

    // Channel argument overrides the message's topic.
    assert_eq!(h.probe(&mut r, "send - out2 x out").await, "ok");
    assert_eq!(next(&mut out2).await.data, "x");
    // An empty channel keeps the message's own topic.
    assert_eq!(h.probe(&mut r, "send - - y out").await, "ok");
    assert_eq!(next(&mut out).await.data, "y");
    // Both empty: an error, not a guess.
    assert!(
        h.probe(&mut r, "send - - z")
            .await
            .starts_with("err:other:no channel")
    );
    // Outside the allow-list: refused, nothing sent.
    assert_eq!(h.probe(&mut r, "send - secret s").await, "err:unauthorized");
    assert_eq!(
        h.probe(&mut r, "send - - s secret").await,
        "err:unauthorized"
    );
    // Wildcards are not channels to publish to.
    assert!(
        h.probe(&mut r, "send - out.* w")
            .await
            .starts_with("err:other:")
    );
    // Sending through another granted client works the same way.
    assert_eq!(h.probe(&mut r, "send other out v").await, "ok");
    assert_eq!(next(&mut out).await.data, "v");
    nothing(&mut secret).await;
    nothing(&mut out).await;
}

#[tokio::test]
async fn oversized_messages_are_refused_both_ways() {
    let h = Harness::start(PROBE).await;
    let mut r = h.watch("probe.result").await;
    let mut out = h.watch("out").await;
    let mut dlq = h.watch("dlq").await;
    let report = h.probe(&mut r, "send-big out 4096").await;
    assert!(
        report.contains("4096 bytes, more than the limit of 1024"),
        "{report}"
    );
    nothing(&mut out).await;
    // An inbound message over the limit never reaches the guest: it is dead-lettered.
    let big = format!("echo {}", "x".repeat(2000));
    h.publish("cmd", &big).await;
    let letter = next(&mut dlq).await;
    assert_eq!(letter.meta(ORIGINAL_TOPIC_KEY), Some("cmd"));
    assert!(
        letter
            .meta(LAST_ERROR_KEY)
            .unwrap()
            .contains("max-message-bytes")
    );
    assert_eq!(h.runtime.guest("probe").unwrap().stats().delivered, 1);
}

#[tokio::test]
async fn update_guest_configuration_is_all_or_nothing() {
    let h = Harness::start(PROBE).await;
    let mut r = h.watch("probe.result").await;
    let guest = h.runtime.guest("probe").unwrap();
    assert_eq!(guest.subscriptions().await, vec!["cmd"]);

    assert_eq!(
        h.probe(&mut r, "subscribe cmd,secret.x").await,
        "err:unauthorized"
    );
    assert_eq!(guest.subscriptions().await, vec!["cmd"], "nothing changed");
    let report = h.probe(&mut r, "subscribe cmd,extra.a bogus=1").await;
    assert!(
        report.starts_with("err:other:") && report.contains("unknown field `bogus`"),
        "{report}"
    );
    assert!(
        h.probe(&mut r, "subscribe cmd mode=sideways")
            .await
            .starts_with("err:other:extension `mode`")
    );
    assert_eq!(guest.subscriptions().await, vec!["cmd"], "nothing changed");

    assert_eq!(h.probe(&mut r, "subscribe cmd,extra.>").await, "ok");
    assert_eq!(guest.subscriptions().await, vec!["cmd", "extra.>"]);
    h.publish("extra.a.b", "echo").await;
    assert_eq!(next(&mut r).await.data, "ok");

    // Omitting a channel unsubscribes from it.
    assert_eq!(h.probe(&mut r, "subscribe cmd").await, "ok");
    assert_eq!(guest.subscriptions().await, vec!["cmd"]);
    h.publish("extra.a.b", "echo").await;
    nothing(&mut r).await;
}

#[tokio::test]
async fn forged_foreign_and_double_acks_are_errors() {
    let h = Harness::start(&format!(
        "{PROBE}\n[guests.other]\ncomponent = \"{{probe}}\"\nsubscribe = [\"cmd2\"]\nallow-publish = [\"probe.result\"]\nack = \"manual\"\n"
    ))
    .await;
    let mut r = h.watch("probe.result").await;
    let report = h.probe(&mut r, "complete-forged").await;
    assert!(report.starts_with("err:other:no such delivery"), "{report}");
    let report = h.probe(&mut r, "complete-twice").await;
    assert!(report.starts_with("err:other:no such delivery"), "{report}");
    assert_eq!(h.probe(&mut r, "complete-self").await, "ok");
    assert_eq!(h.probe(&mut r, "abandon-self").await, "ok");
    // The abandoned command comes back (attempt 2) and reports again.
    let again = next(&mut r).await;
    assert_eq!(
        (again.meta("cmd"), again.meta("attempt")),
        (Some("abandon-self"), Some("2"))
    );

    // A live delivery of another guest is not this guest's to settle: the
    // other guest acks manually, so its delivery stays held while we try.
    h.publish("cmd2", "echo").await;
    let other = next(&mut r).await;
    assert_eq!(other.data, "ok");
    let foreign = other
        .meta("delivery-id")
        .expect("probe reports its delivery id");
    let report = h
        .probe(&mut r, &format!("complete-foreign {foreign}"))
        .await;
    assert!(report.starts_with("err:other:no such delivery"), "{report}");
    let held = h.runtime.guest("other").unwrap();
    assert_eq!(held.stats().accepted, 0);
    assert_eq!(
        held.in_flight(),
        1,
        "the other guest still holds its delivery"
    );
}

#[tokio::test]
async fn failing_messages_are_redelivered_then_dead_lettered() {
    let h = Harness::start(
        r#"
        [guests.flaky]
        component = "{flaky}"
        subscribe = ["in"]
        allow-publish = ["out"]
        max-attempts = 3
        backoff-ms = 10
        batch-size = 1
        dead-letter = "dlq.flaky"
        "#,
    )
    .await;
    let mut out = h.watch("out").await;
    let mut dlq = h.watch("dlq.flaky").await;
    let mut m = Message::new("in", "fail: bad input");
    m.metadata = vec![("k".into(), "v".into())];
    h.broker().publish(vec![m]).await.unwrap();
    h.publish("in", "fine").await;
    let letter = next(&mut dlq).await;
    assert_eq!(letter.data, "fail: bad input");
    assert_eq!(letter.meta(ORIGINAL_TOPIC_KEY), Some("in"));
    assert_eq!(letter.meta(ATTEMPTS_KEY), Some("3"));
    assert_eq!(letter.meta("k"), Some("v"));
    assert!(
        letter
            .meta(LAST_ERROR_KEY)
            .unwrap()
            .contains("flaky: failed"),
        "{letter:?}"
    );
    // The stream goes on: the good message was handled.
    assert_eq!(next(&mut out).await.data, "fine");
    h.wait_idle().await;
    let s = h.runtime.guest("flaky").unwrap().stats();
    assert_eq!((s.redelivered, s.dead_lettered), (2, 1));

    // abandon-message rejects one message of a batch the same way.
    h.publish("in", "abandon me").await;
    let letter = next(&mut dlq).await;
    assert_eq!(letter.data, "abandon me");
    assert!(letter.meta(LAST_ERROR_KEY).unwrap().contains("abandoned"));
}

#[tokio::test]
async fn trap_loop_and_memory_hog_are_contained() {
    let h = Harness::start(PROBE).await;
    let mut r = h.watch("probe.result").await;
    let mut dlq = h.watch("dlq").await;
    for (cmd, why) in [
        ("trap", "guest trapped"),
        ("loop", "deadline"),
        ("alloc 64", "guest trapped"),
    ] {
        h.publish("cmd", cmd).await;
        let letter = next(&mut dlq).await;
        assert_eq!(letter.data, cmd);
        assert_eq!(letter.meta(ATTEMPTS_KEY), Some("2"));
        let error = letter.meta(LAST_ERROR_KEY).unwrap();
        assert!(error.contains(why), "{cmd}: {error}");
        // The host keeps serving with a fresh instance.
        assert_eq!(h.probe(&mut r, "echo").await, "ok");
    }
    assert_eq!(h.probe(&mut r, "alloc 4").await, "ok");
    assert_eq!(h.runtime.guest("probe").unwrap().stats().traps, 6);
}

/// A guest busy in a loop yields at every epoch tick: on a one-thread
/// runtime the host's other work (timers here; broker connections and other
/// guests in a host) goes on while it runs, instead of waiting out its
/// whole deadline (500 ms).
#[tokio::test(flavor = "current_thread")]
async fn a_looping_guest_does_not_stall_the_runtime() {
    let h = Harness::start(PROBE).await;
    let mut dlq = h.watch("dlq").await;
    h.publish("cmd", "loop").await;
    let mut ticks = 0u32;
    let mut late = Vec::new();
    let letter = loop {
        let asked = std::time::Instant::now();
        tokio::select! {
            l = next(&mut dlq) => break l,
            _ = tokio::time::sleep(std::time::Duration::from_millis(20)) => {
                ticks += 1;
                let took = asked.elapsed();
                if took > std::time::Duration::from_millis(250) {
                    late.push(took);
                }
            }
        }
    };
    assert_eq!(letter.data, "loop");
    // Two attempts of 500 ms each passed; the timer kept firing meanwhile.
    assert!(late.is_empty(), "a 20 ms timer fired late: {late:?}");
    assert!(
        ticks >= 10,
        "only {ticks} timer ticks while the guest looped"
    );
}

#[tokio::test]
async fn handler_error_rejects_the_batch() {
    let h = Harness::start(PROBE).await;
    let mut dlq = h.watch("dlq").await;
    h.publish("cmd", "fail").await;
    let letter = next(&mut dlq).await;
    assert!(
        letter
            .meta(LAST_ERROR_KEY)
            .unwrap()
            .contains("probe: fail requested")
    );
    let s = h.runtime.guest("probe").unwrap().stats();
    assert_eq!((s.errors, s.redelivered, s.dead_lettered), (2, 1, 1));
}

#[tokio::test]
async fn guests_see_no_host_files_or_environment() {
    // SAFETY: set before any other thread of this test reads the environment.
    unsafe { std::env::set_var("COURIER_TEST_SECRET", "x") };
    let h = Harness::start(PROBE).await;
    let mut r = h.watch("probe.result").await;
    assert!(
        h.probe(&mut r, "read-file /etc/hostname")
            .await
            .starts_with("err:")
    );
    assert_eq!(h.probe(&mut r, "env").await, "ok:0");
}

#[tokio::test]
async fn router_publishes_only_inside_its_allow_list() {
    let h = Harness::start(
        r#"
        [guests.router]
        component = "{router}"
        subscribe = ["in"]
        allow-publish = ["routes.>"]
        max-attempts = 1
        dead-letter = "dlq"
        "#,
    )
    .await;
    let mut routed = h.watch("routes.>").await;
    let mut secret = h.watch("secret").await;
    let mut dlq = h.watch("dlq").await;
    let routed_to = |route: &str, data: &str| {
        let mut m = Message::new("in", data.to_string());
        m.metadata = vec![("route".into(), route.into())];
        m
    };
    h.broker()
        .publish(vec![routed_to("routes.eu", "a")])
        .await
        .unwrap();
    let got = next(&mut routed).await;
    assert_eq!(
        (got.topic.as_str(), &got.data[..]),
        ("routes.eu", &b"a"[..])
    );

    h.broker()
        .publish(vec![routed_to("secret", "b")])
        .await
        .unwrap();
    let letter = next(&mut dlq).await;
    assert_eq!(letter.data, "b");
    assert_eq!(
        letter.meta(LAST_ERROR_KEY),
        Some("handler returned error: unauthorized")
    );
    h.publish("in", "no route").await;
    let letter = next(&mut dlq).await;
    assert!(
        letter
            .meta(LAST_ERROR_KEY)
            .unwrap()
            .contains("no `route` metadata")
    );
    nothing(&mut secret).await;
}

#[tokio::test]
async fn transform_enriches_orders_and_sets_bad_ones_aside() {
    let h = Harness::start(
        r#"
        [guests.transform]
        component = "{transform}"
        subscribe = ["orders.in"]
        allow-publish = ["orders.enriched", "orders.rejected"]
        env = { OUT = "orders.enriched", REJECTED = "orders.rejected" }
        "#,
    )
    .await;
    let mut enriched = h.watch("orders.enriched").await;
    let mut rejected = h.watch("orders.rejected").await;
    let bad = r#"{"id":"o-1","customer":"c","country":"de","currency":"EUR","items":[]}"#;
    // One batch: a good order beside a bad one.
    h.broker()
        .publish(vec![
            Message::new("orders.in", orders::sample(1)),
            Message::new("orders.in", bad),
        ])
        .await
        .unwrap();
    let got = next(&mut enriched).await;
    // The guest computes what the same code computes natively.
    assert_eq!(got.data, orders::transform(&orders::sample(1)).unwrap());
    assert_eq!(got.content_type.as_deref(), Some("application/json"));
    let v: serde_json::Value = serde_json::from_slice(&got.data).unwrap();
    assert_eq!(v["id"], "ord-00000001");
    assert_eq!(v["priority"], "normal");
    let set_aside = next(&mut rejected).await;
    assert_eq!(set_aside.data, bad);
    assert_eq!(
        set_aside.meta("error"),
        Some("invalid order: country is not an ISO 3166 alpha-2 code")
    );
    h.wait_idle().await;
    let s = h.runtime.guest("transform").unwrap().stats();
    assert_eq!((s.accepted, s.dead_lettered), (2, 0));
}
