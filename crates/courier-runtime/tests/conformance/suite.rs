//! The cases of the conformance suite, each run on every backend (see
//! [`CASES`]).

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use courier_broker::message::{ATTEMPTS_KEY, LAST_ERROR_KEY, ORIGINAL_TOPIC_KEY};
use courier_broker::{
    Backend, ErrorKind, Features, Message, Pattern, Subscription, SubscriptionSpec,
};
use courier_runtime::{Config, Runtime};
use courier_test_support::messages::{drain, next, text, watch};
use courier_test_support::{guests, unique};

/// A case of the suite, run on one backend's [`Target`].
pub type Case = fn(Target) -> Pin<Box<dyn Future<Output = ()>>>;

/// Every case, by name: each backend's tests are `BACKEND::NAME`.
macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        pub const CASES: &[(&str, Case)] = &[
            $((stringify!($name), |target| Box::pin(async move { $name(&target).await }))),*
        ];
    };
}

cases!(
    round_trip_keeps_message_fields,
    broadcast_reaches_every_subscriber,
    competing_consumers_share_work,
    ack_nack_redelivery_and_dead_letter,
    unsubscribe_stops_delivery_and_wildcards_match,
    ordering_and_ten_thousand_messages,
    restart_keeps_working,
    guests_stay_inside_their_grants,
    settling_after_unsubscribing_mid_call,
    channels_valid_nowhere_are_refused,
);

/// A backend under test: its `[clients.default]` body, and the first token
/// of every channel its tests use (backends sharing a broker must not share
/// channels: a JetStream stream would capture the other's subjects).
#[derive(Default)]
pub struct Target {
    pub client: String,
    pub prefix: &'static str,
    /// A data directory the target's config refers to, removed at the end.
    pub _data: Option<tempfile::TempDir>,
}

impl Target {
    /// The host's config: `[clients.default]` of this target, then `guests`
    /// with `{ns}` replaced by `ns` and the guest placeholders filled.
    fn config(&self, ns: &str, guests: &str) -> String {
        guests::fill(&format!("[clients.default]\n{}\n{guests}", self.client)).replace("{ns}", ns)
    }
}

/// A runtime on one backend, with channels unique to the test.
pub struct Bench {
    pub runtime: Runtime,
    pub backend: std::sync::Arc<dyn Backend>,
    /// Prefix of every channel of this test.
    pub ns: String,
}

impl Bench {
    /// Starts the guests of `guests` (TOML; `{ns}` is the test's channel
    /// prefix, `{probe}` etc. the guest components) on the backend `client`.
    pub async fn start(target: &Target, guests: &str) -> Self {
        Self::try_start(target, guests).await.expect("start")
    }

    /// Like [`Bench::start`], but returns the error of a refused start.
    pub async fn try_start(target: &Target, guests: &str) -> Result<Self, String> {
        let ns = unique(target.prefix);
        let toml = target.config(&ns, guests);
        let runtime = Runtime::new(Config::from_toml(&toml).map_err(|e| e.to_string())?)
            .map_err(|e| format!("{e:#}"))?;
        let backend = runtime
            .clients()
            .get("default")
            .await
            .map_err(|e| e.to_string())?;
        runtime.start().await.map_err(|e| format!("{e:#}"))?;
        Ok(Self {
            runtime,
            backend,
            ns,
        })
    }

    pub fn features(&self) -> Features {
        self.backend.features()
    }

    pub fn ch(&self, name: &str) -> String {
        format!("{}.{name}", self.ns)
    }

    pub async fn watch(&self, name: &str) -> Box<dyn Subscription> {
        watch(self.backend.as_ref(), &self.ch(name)).await
    }

    pub async fn send(&self, name: &str, data: &str) {
        self.send_message(Message::new(self.ch(name), data.to_string()))
            .await
    }

    pub async fn send_message(&self, m: Message) {
        self.backend.publish(vec![m]).await.expect("publish");
    }
}

/// The features of the target's backend.
pub async fn target_features(target: &Target) -> Features {
    let toml = format!("[clients.default]\n{}\n", target.client);
    let runtime = Runtime::new(Config::from_toml(&toml).unwrap()).unwrap();
    runtime.clients().get("default").await.unwrap().features()
}

/// The mode in which the broker holds each message for one consumer until
/// it is settled: `point-to-point` where the backend has competing
/// consumers, else `pub-sub`.
async fn queue_mode(target: &Target) -> &'static str {
    if target_features(target).await.competing {
        "point-to-point"
    } else {
        "pub-sub"
    }
}

/// How long after a settle a broker that did not get it hands the message
/// over again, for a guest with these `ack-wait-ms` and
/// `handler-timeout-ms` (the deadline the host gives the broker), and a
/// margin: listening this long for a redelivery that must not come makes a
/// lost settle show.
fn redelivery_window(ack_wait_ms: u64, handler_timeout_ms: u64) -> Duration {
    courier_runtime::dispatcher::broker_ack_wait(
        Duration::from_millis(ack_wait_ms),
        Duration::from_millis(handler_timeout_ms),
    ) + Duration::from_millis(500)
}

pub async fn round_trip_keeps_message_fields(target: &Target) {
    let b = Bench::start(
        target,
        r#"
        [guests.up]
        component = "{uppercase}"
        env = { OUT = "{ns}.out" }
        subscribe = ["{ns}.in"]
        allow-publish = ["{ns}.>"]
        "#,
    )
    .await;
    let mut out = b.watch("out").await;
    let mut replies = b.watch("replies").await;
    let mut m = Message::new(b.ch("in"), "hello");
    m.content_type = Some("text/plain; charset=utf-8".into());
    m.metadata = vec![
        ("trace-id".into(), "42".into()),
        ("tenant".into(), "acme".into()),
    ];
    b.send_message(m.clone()).await;
    let got = next(&mut out).await;
    assert_eq!(text(&got), "HELLO");
    if b.features().native_headers {
        assert_eq!(got.content_type, m.content_type);
        assert_eq!(got.meta("trace-id"), Some("42"));
        assert_eq!(got.meta("tenant"), Some("acme"));
        // reply-to reaches the guest, which answers there.
        m.reply_to = Some(b.ch("replies"));
        b.send_message(m).await;
        let reply = next(&mut replies).await;
        assert_eq!(text(&reply), "HELLO");
    } else {
        assert_eq!(got.meta("trace-id"), None, "documented: no native headers");
    }
}

pub async fn broadcast_reaches_every_subscriber(target: &Target) {
    let b = Bench::start(
        target,
        r#"
        [guests.a]
        component = "{uppercase}"
        env = { OUT = "{ns}.out" }
        subscribe = ["{ns}.bcast"]
        allow-publish = ["{ns}.>"]
        [guests.b]
        component = "{uppercase}"
        env = { OUT = "{ns}.out" }
        subscribe = ["{ns}.bcast"]
        allow-publish = ["{ns}.>"]
        "#,
    )
    .await;
    let mut out = b.watch("out").await;
    for i in 0..20 {
        b.send("bcast", &format!("b{i}")).await;
    }
    let got = drain(&mut out, Duration::from_secs(2)).await;
    assert_eq!(
        got.len(),
        40,
        "every broadcast subscriber gets every message"
    );
    let a = b.runtime.guest("a").unwrap().stats().delivered;
    assert_eq!(a, 20);
}

/// Two competing consumers that take a while per batch, so neither can take
/// all the work before the other starts.
const COMPETING: &str = r#"
    [guests.c]
    component = "{uppercase}"
    env = { OUT = "{ns}.out", DELAY_MS = "20" }
    batch-size = 10
    subscribe = ["{ns}.work"]
    allow-publish = ["{ns}.>"]
    mode = "point-to-point"
    group = "workers"
    [guests.d]
    component = "{uppercase}"
    env = { OUT = "{ns}.out", DELAY_MS = "20" }
    batch-size = 10
    subscribe = ["{ns}.work"]
    allow-publish = ["{ns}.>"]
    mode = "point-to-point"
    group = "workers"
    "#;

pub async fn competing_consumers_share_work(target: &Target) {
    if !target_features(target).await.competing {
        let err = Bench::try_start(target, COMPETING)
            .await
            .err()
            .expect("refused");
        assert!(err.contains("not supported"), "{err}");
        return;
    }
    let b = Bench::start(target, COMPETING).await;
    let mut out = b.watch("out").await;
    for i in 0..200 {
        b.send("work", &format!("w{i}")).await;
    }
    let got = drain(&mut out, Duration::from_secs(2)).await;
    let work: BTreeSet<String> = got.iter().map(text).collect();
    assert_eq!(work.len(), 200, "every work item handled");
    let c = b.runtime.guest("c").unwrap().stats().delivered;
    let d = b.runtime.guest("d").unwrap().stats().delivered;
    assert_eq!(c + d, 200, "each work item went to one consumer");
    assert!(
        c > 0 && d > 0,
        "both competing consumers got work ({c}/{d})"
    );
}

pub async fn ack_nack_redelivery_and_dead_letter(target: &Target) {
    let b = Bench::start(
        target,
        r#"
        [guests.flaky]
        component = "{flaky}"
        env = { OUT = "{ns}.out" }
        subscribe = ["{ns}.in"]
        allow-publish = ["{ns}.>"]
        max-attempts = 3
        backoff-ms = 20
        batch-size = 1
        dead-letter = "{ns}.dlq"
        ack-wait-ms = 100
        handler-timeout-ms = 500
        "#,
    )
    .await;
    let mut out = b.watch("out").await;
    let mut dlq = b.watch("dlq").await;
    b.send("in", "ok-1").await;
    b.send("in", "abandon-1").await;
    b.send("in", "fail-1").await;
    b.send("in", "ok-2").await;
    let mut letters = [next(&mut dlq).await, next(&mut dlq).await];
    letters.sort_by_key(text);
    for (letter, data, error) in [
        (&letters[0], "abandon-1", "abandoned"),
        (&letters[1], "fail-1", "flaky: failed"),
    ] {
        assert_eq!(text(letter), data);
        if b.features().native_headers {
            assert_eq!(letter.meta(ORIGINAL_TOPIC_KEY), Some(b.ch("in").as_str()));
            assert_eq!(letter.meta(ATTEMPTS_KEY), Some("3"));
            assert!(letter.meta(LAST_ERROR_KEY).unwrap().contains(error));
        } else {
            assert!(letter.metadata.is_empty(), "documented: no headers");
        }
    }
    let outs: BTreeSet<String> = drain(&mut out, Duration::from_millis(500))
        .await
        .iter()
        .map(text)
        .collect();
    assert!(outs.contains("ok-1") && outs.contains("ok-2"), "{outs:?}");
    let s = b.runtime.guest("flaky").unwrap().stats();
    assert_eq!(s.dead_lettered, 2);
    assert_eq!(s.redelivered, 4, "two redeliveries of each bad message");
    // Acked messages are not delivered again: an ack the broker did not get
    // would bring its message back within the broker's ack deadline
    // (handler timeout + ack wait + 1 s = 1.6 s here), and the guest would
    // publish it again. This fails on the backends with an ack deadline
    // (embedded, JetStream, Redis Streams) when the host drops the ack of
    // `ok-1`; core NATS, Redis pub/sub, RabbitMQ and MQTT hand nothing over
    // again while the connection lives, so there it cannot.
    let again = drain(&mut out, redelivery_window(100, 500)).await;
    assert!(again.is_empty(), "delivered again: {again:?}");
    let s2 = b.runtime.guest("flaky").unwrap().stats();
    assert_eq!(s.delivered, s2.delivered);
}

pub async fn unsubscribe_stops_delivery_and_wildcards_match(target: &Target) {
    let b = Bench::start(
        target,
        r#"
        [guests.probe]
        component = "{probe}"
        env = { RESULTS = "{ns}.result" }
        subscribe = ["{ns}.cmd"]
        allow-subscribe = ["{ns}.>"]
        allow-publish = ["{ns}.result"]
        "#,
    )
    .await;
    let mut r = b.watch("result").await;
    let ns = &b.ns;
    if b.features().wildcards {
        b.send("cmd", &format!("subscribe {ns}.cmd,{ns}.one.*,{ns}.many.>"))
            .await;
        assert_eq!(text(&next(&mut r).await), "ok");
        b.send("one.x", "echo").await;
        b.send("one.x.y", "echo").await; // does not match `one.*`
        b.send("many.x.y", "echo").await;
        let got = drain(&mut r, Duration::from_secs(1)).await;
        assert_eq!(got.len(), 2, "`*` is one token, `>` the rest: {got:?}");
    } else {
        b.send("cmd", &format!("subscribe {ns}.cmd,{ns}.one.*"))
            .await;
        let report = text(&next(&mut r).await);
        assert!(report.contains("not supported"), "{report}");
    }
    b.send("cmd", &format!("subscribe {ns}.cmd,{ns}.one.x"))
        .await;
    assert_eq!(text(&next(&mut r).await), "ok");
    b.send("one.x", "echo").await;
    assert_eq!(text(&next(&mut r).await), "ok");
    b.send("cmd", &format!("subscribe {ns}.cmd")).await;
    assert_eq!(text(&next(&mut r).await), "ok");
    b.send("one.x", "echo").await;
    assert!(
        drain(&mut r, Duration::from_secs(1)).await.is_empty(),
        "unsubscribed"
    );
}

pub async fn ordering_and_ten_thousand_messages(target: &Target) {
    let b = Bench::start(
        target,
        r#"
        [guests.up]
        component = "{uppercase}"
        env = { OUT = "{ns}.out" }
        subscribe = ["{ns}.in"]
        allow-publish = ["{ns}.>"]
        batch-size = 100
        "#,
    )
    .await;
    let mut out = b.watch("out").await;
    const N: usize = 10_000;
    let batch: Vec<Message> = (0..N)
        .map(|i| Message::new(b.ch("in"), format!("m{i}")))
        .collect();
    // A producer that stays at most one chunk ahead of the consumer, as
    // brokers bound what they queue per client (Mosquitto drops QoS 1
    // messages past `max_queued_messages`, 1000 by default).
    const CHUNK: usize = 250;
    let mut got = Vec::with_capacity(N);
    for (i, chunk) in batch.chunks(CHUNK).enumerate() {
        while got.len() + CHUNK < i * CHUNK {
            got.push(text(&next(&mut out).await));
        }
        b.backend.publish(chunk.to_vec()).await.expect("publish");
    }
    while got.len() < N {
        got.push(text(&next(&mut out).await));
    }
    let unique: BTreeSet<&String> = got.iter().collect();
    assert_eq!(unique.len(), N, "none lost");
    if b.features().ordered {
        let expected: Vec<String> = (0..N).map(|i| format!("M{i}")).collect();
        assert_eq!(got, expected, "in order");
    }
}

pub async fn restart_keeps_working(target: &Target) {
    let mode = queue_mode(target).await;
    let guests = &format!(
        r#"
        [guests.up]
        component = "{{uppercase}}"
        env = {{ OUT = "{{ns}}.out" }}
        subscribe = ["{{ns}}.in"]
        allow-publish = ["{{ns}}.>"]
        mode = "{mode}"
        "#
    );
    let b = Bench::start(target, guests).await;
    let mut out = b.watch("out").await;
    b.send("in", "before").await;
    assert_eq!(text(&next(&mut out).await), "BEFORE");
    b.runtime.stop().await;
    let durable = b.features().durable;
    if durable {
        // Published while no host runs: kept for the group.
        b.send("in", "between").await;
    }
    // The first host is gone (an embedded broker's data directory is
    // released with it).
    let Bench {
        runtime,
        backend,
        ns,
    } = b;
    drop((out, runtime, backend));
    let ch = |name: &str| format!("{ns}.{name}");
    let again = Runtime::new(Config::from_toml(&target.config(&ns, guests)).unwrap()).unwrap();
    // A fresh host on the same broker (the embedded broker is per host, so
    // watch through the new host's client).
    let backend = again.clients().get("default").await.unwrap();
    let mut out = backend
        .subscribe(SubscriptionSpec::broadcast(
            Pattern::parse(&ch("out")).unwrap(),
        ))
        .await
        .unwrap();
    again.start().await.unwrap();
    backend
        .publish(vec![Message::new(ch("in"), "after")])
        .await
        .unwrap();
    let mut seen = BTreeSet::new();
    let expected = if durable { 2 } else { 1 };
    while seen.len() < expected {
        seen.insert(text(&next(&mut out).await));
    }
    assert!(seen.contains("AFTER"));
    again.stop().await;
}

/// Sends a command to the `probe` guest and returns its report.
async fn probe(b: &Bench, results: &mut Box<dyn Subscription>, cmd: &str) -> Message {
    b.send("cmd", cmd).await;
    next(results).await
}

/// What a guest may do is what its config grants, on every backend: channels
/// to send to and subscribe to, clients to connect, its own deliveries to
/// settle; it sees no host file and no host environment.
pub async fn guests_stay_inside_their_grants(target: &Target) {
    let b = Bench::start(
        target,
        r#"
        [clients.spare]
        backend = "embedded"
        [guests.probe]
        component = "{probe}"
        env = { RESULTS = "{ns}.result" }
        subscribe = ["{ns}.cmd"]
        allow-publish = ["{ns}.result", "{ns}.ok"]
        [guests.other]
        component = "{probe}"
        env = { RESULTS = "{ns}.result" }
        subscribe = ["{ns}.cmd2"]
        allow-publish = ["{ns}.result"]
        ack = "manual"
        "#,
    )
    .await;
    let mut r = b.watch("result").await;
    let mut secret = b.watch("secret").await;
    let mut ok = b.watch("ok").await;
    let ns = b.ns.clone();
    let report = |m: Message| text(&m);
    // Publishing: inside the allow-list works, outside is refused and sends nothing.
    assert_eq!(
        report(probe(&b, &mut r, &format!("send - {ns}.ok fine")).await),
        "ok"
    );
    assert_eq!(text(&next(&mut ok).await), "fine");
    assert_eq!(
        report(probe(&b, &mut r, &format!("send - {ns}.secret s")).await),
        "err:unauthorized"
    );
    // Subscribing outside the allow-list, or wider than it, is refused.
    for channels in [format!("{ns}.elsewhere"), format!("{ns}.>"), ">".into()] {
        assert_eq!(
            report(probe(&b, &mut r, &format!("subscribe {channels}")).await),
            "err:unauthorized",
            "subscribe {channels}"
        );
    }
    // A client the host has but did not grant this guest.
    assert_eq!(
        report(probe(&b, &mut r, "connect spare").await),
        "err:unauthorized"
    );
    // No host file, no host environment.
    let read = report(probe(&b, &mut r, "read-file /etc/hostname").await);
    assert!(read.starts_with("err:"), "{read}");
    // Only the one variable its config grants (RESULTS).
    assert_eq!(report(probe(&b, &mut r, "env").await), "ok:1");
    // Another guest's live delivery cannot be settled from here. The other
    // guest acks manually, so its delivery stays held while we try; its id
    // reaches us in the report's metadata where the backend carries headers.
    b.send("cmd2", "echo").await;
    let held = next(&mut r).await;
    assert_eq!(text(&held), "ok");
    let foreign = match held.meta("delivery-id") {
        Some(id) => id.to_string(),
        None => {
            assert!(!b.features().native_headers);
            // Without headers the id cannot travel; a well-formed id of this
            // host that is not this guest's must still be refused.
            "0000000000000000-1".into()
        }
    };
    let refused = report(probe(&b, &mut r, &format!("complete-foreign {foreign}")).await);
    assert!(
        refused.starts_with("err:other:no such delivery"),
        "{refused}"
    );
    let other = b.runtime.guest("other").unwrap();
    assert_eq!(other.stats().accepted, 0);
    assert_eq!(
        other.in_flight(),
        1,
        "the other guest still holds its delivery"
    );
    let leaked = drain(&mut secret, Duration::from_millis(300)).await;
    assert!(leaked.is_empty(), "nothing reached the refused channel");
}

/// The `start` and `end` reports of one `scripted` handler call, in that
/// order. They are two messages on one channel, which a backend that spreads
/// a channel over partitions (Kafka here) may hand over in either order.
async fn call_reports(log: &mut Box<dyn Subscription>) -> (String, String) {
    let first = text(&next(log).await).trim_end().to_string();
    let second = text(&next(log).await).trim_end().to_string();
    if second.starts_with("start\n") {
        (second, first)
    } else {
        (first, second)
    }
}

/// A guest that unsubscribes from inside its handler (and subscribes
/// again) still settles the message it holds: it is accepted once, not
/// redelivered, and nothing else is charged an attempt; the subscription
/// made again receives the next message.
pub async fn settling_after_unsubscribing_mid_call(target: &Target) {
    let mode = queue_mode(target).await;
    let b = Bench::start(
        target,
        &format!(
            r#"
            [guests.g]
            component = "{{scripted}}"
            subscribe = ["{{ns}}.in"]
            allow-publish = ["{{ns}}.log"]
            mode = "{mode}"
            batch-size = 1
            max-attempts = 1
            ack-wait-ms = 100
            handler-timeout-ms = 500
            dead-letter = "{{ns}}.dlq"
            env = {{ LOG = "{{ns}}.log", CHANNELS = "{{ns}}.in" }}
            "#
        ),
    )
    .await;
    let mut log = b.watch("log").await;
    let mut dlq = b.watch("dlq").await;
    b.send("in", "k1 resub").await;
    let (start, end) = call_reports(&mut log).await;
    assert!(start.starts_with("start\nk1 1 "), "{start}");
    assert!(end.ends_with("\nk1 resub ok"), "{end}");
    b.send("in", "k2 ok").await;
    let (start, end) = call_reports(&mut log).await;
    assert!(start.starts_with("start\nk2 1 "), "{start}");
    assert!(end.ends_with("\nk2 ok ok"), "{end}");
    // The broker's ack deadline is the handler timeout, the ack wait and a
    // second: a settle that did not reach it would bring k1 back by then.
    let again: Vec<String> = drain(&mut log, redelivery_window(100, 500))
        .await
        .iter()
        .map(text)
        .collect();
    assert!(again.is_empty(), "nothing handed over again: {again:?}");
    assert!(drain(&mut dlq, Duration::from_millis(100)).await.is_empty());
    let s = b.runtime.guest("g").unwrap().stats();
    assert_eq!((s.accepted, s.dead_lettered, s.redelivered), (2, 0, 0));
}

/// A channel name is checked in one place for every way it comes in: too
/// long for any backend (over 255 bytes), with a control character, or with
/// another broker's separator or wildcard (`/`, `+`, `#`) it is refused as
/// invalid — by a guest's `send` and `update-guest-configuration` (an
/// `error::other`, and the guest keeps working) and by the backend itself —
/// never a panic, and nothing is published.
pub async fn channels_valid_nowhere_are_refused(target: &Target) {
    let b = Bench::start(
        target,
        r#"
        [guests.probe]
        component = "{probe}"
        env = { RESULTS = "{ns}.result" }
        subscribe = ["{ns}.cmd"]
        allow-publish = ["{ns}.>"]
        allow-subscribe = ["{ns}.>"]
        "#,
    )
    .await;
    let mut r = b.watch("result").await;
    let mut ok = b.watch("ok").await;
    let ns = b.ns.clone();
    let bad = [
        format!("{ns}.{}", "x".repeat(300)),
        format!("{ns}.a/b"),
        format!("{ns}.a+"),
        format!("{ns}.#"),
    ];
    // Control characters go to the backend only: the probe echoes its
    // command in its report's metadata, which MQTT refuses to carry them in.
    for ch in [format!("{ns}.a\u{1}b"), format!("{ns}.a\u{7f}")] {
        let e = b
            .backend
            .publish(vec![Message::new(ch.clone(), "x")])
            .await
            .expect_err("published to a channel with a control character");
        assert_eq!(e.kind(), ErrorKind::Invalid, "{ch:?}: {e}");
    }
    for ch in &bad {
        let sent = text(&probe(&b, &mut r, &format!("send - {ch} data")).await);
        assert!(sent.starts_with("err:other"), "send to {ch:?}: {sent}");
        let subscribed = text(&probe(&b, &mut r, &format!("subscribe {ch}")).await);
        assert!(
            subscribed.starts_with("err:other"),
            "subscribe to {ch:?}: {subscribed}"
        );
        let e = b
            .backend
            .publish(vec![Message::new(ch.clone(), "x")])
            .await
            .expect_err("published to a channel valid nowhere");
        assert_eq!(e.kind(), ErrorKind::Invalid, "{ch:?}: {e}");
    }
    // The guest is still there, and still subscribed to its commands.
    assert_eq!(
        text(&probe(&b, &mut r, &format!("send - {ns}.ok fine")).await),
        "ok"
    );
    assert_eq!(text(&next(&mut ok).await), "fine");
    // A subscription whose broker-side names would be too long (a long group
    // and pattern make an AMQP queue name over 255 bytes) is refused or
    // made, never a panic.
    let long = Pattern::parse(&format!("{ns}.{}", "y".repeat(200))).unwrap();
    match b
        .backend
        .subscribe(SubscriptionSpec::competing(long, "g".repeat(200)))
        .await
    {
        Ok(mut sub) => sub.close().await.unwrap(),
        Err(e) => assert!(
            matches!(e.kind(), ErrorKind::Invalid | ErrorKind::Unsupported),
            "{e}"
        ),
    }
    b.runtime.stop().await;
}
