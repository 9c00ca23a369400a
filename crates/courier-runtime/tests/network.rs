//! Network faults between Courier and its broker, through the test
//! support's fault-injecting proxy ([`courier_test_support::proxy`]): a
//! stall (black hole), a reset of every connection mid-stream, and added
//! latency, on the durable backends (JetStream, Redis Streams, AMQP).
//!
//! A guest consumes point-to-point through the proxy; the test publishes
//! and watches directly. During a stall, a `send` through the proxy fails
//! within the client's timeout; after each fault the guest's subscription
//! carries on; every message the broker accepted comes out at least once.

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use courier_broker::{Backend, Message, Pattern, Subscription, SubscriptionSpec};
use courier_runtime::{Config, Runtime};
use courier_test_support::proxy::Proxy;
use courier_test_support::{Broker, Need, Trials, guests, unique};

/// The proxied client's timeout.
const TIMEOUT_MS: u64 = 2000;

/// How long the messages of a phase may take to come out after the fault
/// is lifted.
const RECOVERY: Duration = Duration::from_secs(60);

fn options(broker: Broker) -> &'static str {
    match broker {
        Broker::Nats => {
            r#"{ jetstream = true, stream = "COURIER_NET", subjects = "net.>", storage = "memory", connect-timeout-ms = 2000 }"#
        }
        Broker::Redis => "{ streams = true, connect-timeout-ms = 2000 }",
        _ => "{ connect-timeout-ms = 2000 }",
    }
}

/// What came out, by text, with how many times.
struct Outputs {
    sub: Box<dyn Subscription>,
    seen: BTreeMap<String, u32>,
}

impl Outputs {
    /// Reads outputs until every one of `expected` was seen, or fails after
    /// [`RECOVERY`] naming what is missing.
    async fn until_all(&mut self, expected: &BTreeSet<String>, what: &str) {
        let deadline = Instant::now() + RECOVERY;
        while !expected.iter().all(|e| self.seen.contains_key(e)) {
            let left = deadline.saturating_duration_since(Instant::now());
            let missing: Vec<&String> = expected
                .iter()
                .filter(|e| !self.seen.contains_key(*e))
                .collect();
            assert!(!left.is_zero(), "{what}: never came out: {missing:?}");
            match tokio::time::timeout(left, self.sub.next()).await {
                Ok(Some(Ok(d))) => {
                    let text = String::from_utf8_lossy(&d.message.data).into_owned();
                    *self.seen.entry(text).or_default() += 1;
                    d.acker.ack().await.expect("ack an output");
                }
                Ok(Some(Err(_))) | Err(_) => continue,
                Ok(None) => panic!("{what}: the output subscription ended"),
            }
        }
    }
}

/// Publishes `n` messages `{tag}-{i}` to `channel` directly; returns the
/// outputs they must produce.
async fn publish(direct: &dyn Backend, channel: &str, tag: &str, n: usize) -> BTreeSet<String> {
    let messages: Vec<Message> = (0..n)
        .map(|i| Message::new(channel.to_string(), format!("{tag}-{i}")))
        .collect();
    direct.publish(messages).await.expect("the broker accepts");
    (0..n)
        .map(|i| format!("{tag}-{i}").to_uppercase())
        .collect()
}

async fn faults(broker: Broker) {
    let proxy = Proxy::start(broker.port()).await;
    let ns = format!("net.{}", unique("f").replace('.', "_"));
    let config = guests::fill(&format!(
        r#"
        [clients.default]
        backend = "{backend}"
        url = "{proxied}"
        timeout-ms = {TIMEOUT_MS}
        options = {options}
        [clients.direct]
        backend = "{backend}"
        url = "{direct}"
        options = {options}
        [guests.up]
        component = "{{uppercase}}"
        subscribe = ["{ns}.in"]
        mode = "point-to-point"
        ack-wait-ms = 5000
        allow-publish = ["{ns}.>"]
        env = {{ OUT = "{ns}.out" }}
        "#,
        backend = broker.backend(),
        proxied = broker.url_at(proxy.port()),
        direct = broker.url(),
        options = options(broker),
    ));
    let runtime = Runtime::new(Config::from_toml(&config).unwrap()).unwrap();
    let direct = runtime.clients().get("direct").await.unwrap();
    let proxied = runtime.clients().get("default").await.unwrap();
    let out = Pattern::parse(&format!("{ns}.out")).unwrap();
    let mut outputs = Outputs {
        sub: direct
            .subscribe(SubscriptionSpec::competing(out, "watch"))
            .await
            .unwrap(),
        seen: BTreeMap::new(),
    };
    runtime.start().await.expect("the guest starts");
    let input = format!("{ns}.in");
    let mut all = BTreeSet::new();

    let sent = publish(direct.as_ref(), &input, "before", 10).await;
    outputs.until_all(&sent, "before any fault").await;
    all.extend(sent);

    // A black hole: a send through it fails within the timeout; what the
    // broker took meanwhile comes out once it lifts.
    proxy.stall();
    let started = Instant::now();
    let stalled = tokio::time::timeout(
        Duration::from_millis(10 * TIMEOUT_MS),
        proxied.publish(vec![Message::new(input.clone(), "stalled")]),
    )
    .await
    .unwrap_or_else(|_| panic!("{broker:?}: a send through a black hole hung"));
    let took = started.elapsed();
    assert!(
        stalled.is_err(),
        "{broker:?}: a send through a black hole succeeded"
    );
    assert!(
        took < Duration::from_millis(TIMEOUT_MS + 1000),
        "{broker:?}: a send through a black hole took {took:?}"
    );
    let sent = publish(direct.as_ref(), &input, "stalled", 10).await;
    proxy.pass();
    outputs.until_all(&sent, "after a stall").await;
    all.extend(sent);

    // Every connection reset mid-stream, messages on their way.
    let sent = publish(direct.as_ref(), &input, "reset", 20).await;
    proxy.reset();
    outputs.until_all(&sent, "after a reset").await;
    all.extend(sent);

    // Added latency.
    proxy.delay(Duration::from_millis(50));
    let sent = publish(direct.as_ref(), &input, "slow", 10).await;
    outputs.until_all(&sent, "with 50 ms latency").await;
    all.extend(sent);
    proxy.pass();

    let duplicates: u32 = all
        .iter()
        .map(|m| outputs.seen.get(m).copied().unwrap_or(0).saturating_sub(1))
        .sum();
    eprintln!(
        "{broker:?}: {} published, {} handled, {duplicates} duplicates, 0 lost, 3 faults (stall {took:?} to refuse a send, reset, 50 ms latency)",
        all.len(),
        all.len()
    );
    tokio::time::timeout(RECOVERY, runtime.stop())
        .await
        .unwrap_or_else(|_| panic!("{broker:?}: stopping hung"));
}

fn main() -> ExitCode {
    if let Ok(filter) = std::env::var("COURIER_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    let mut trials = Trials::new();
    for broker in [Broker::Nats, Broker::Redis, Broker::RabbitMq] {
        trials.tokio(broker.backend(), &[Need::Broker(broker)], move || {
            faults(broker)
        });
    }
    trials.run()
}
