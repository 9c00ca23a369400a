//! Broker faults: the broker is killed or stopped, and started again, in the
//! middle of a stream, and nothing it accepted is lost.
//!
//! Each test runs a private broker (`courier_test_support::private`) and a Courier
//! runtime with the `uppercase` guest, point-to-point, which republishes
//! every message of `faults.in` upper-cased on `faults.out`. A publisher
//! sends numbered messages through the backend while the broker goes down
//! twice — once killed (SIGKILL, or SIGTERM for brokers that only persist on
//! shutdown), once stopped like a service — and comes back on the same port
//! and data. A message is accepted when its `publish` returned `Ok`; refused
//! ones are published again once the broker is back. At the end every
//! accepted message must have come out of the guest at least once (0 lost);
//! duplicates are counted. While the broker is down, `publish` on the
//! backend and `send` from a guest (the `probe` guest, on the embedded
//! broker, sending to the broken client) must fail with `connection` or
//! `timeout` within the client's timeout. The reconnections must show in
//! the backend's reconnection counts (the `courier_broker_*` metrics).
//!
//! Each test prints a summary line for `docs/reliability.md`:
//! `cargo test -p courier-runtime --test faults -- --test-threads 1`.
//! A broker program that is not installed makes its test ignored with the
//! reason (and fails it when `CI=true`).
//!
//! The binary needs every backend (`required-features` in `Cargo.toml`).

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use courier_broker::{Backend, BrokerError, ErrorKind, Message, Pattern, SubscriptionSpec};
use courier_runtime::{Config, Runtime};
use courier_test_support::collector::{Collector, Tally};
use courier_test_support::private::PrivateBroker;
use courier_test_support::{Broker, Need, Trials, wait_until_async};

/// Messages published per test.
const N: usize = 1500;
/// The clients' `timeout-ms` (and the backends' `connect-timeout-ms`).
const TIMEOUT: Duration = Duration::from_millis(2000);
/// Slack on top of `TIMEOUT` for a refused call to come back.
const SLACK: Duration = Duration::from_millis(1500);
/// How long the broker stays down.
const DOWN: Duration = Duration::from_secs(2);
/// Bound on waiting for all accepted messages to come out.
const DRAIN: Duration = Duration::from_secs(120);
/// The longest the runtime may take to stop at the end (its drain and the
/// subscriptions' close are bounded well below this).
const STOP: Duration = Duration::from_secs(90);

/// How the broker goes down.
#[derive(Debug, Clone, Copy)]
enum Fault {
    Kill,
    Stop,
}

struct Case {
    name: &'static str,
    kind: Broker,
    /// The `options` line of `[clients.default]`.
    options: &'static str,
    /// The collector's subscription on `faults.out`.
    collector: fn() -> SubscriptionSpec,
    faults: [Fault; 2],
    /// `subscribe-options` of the guest's own subscription.
    subscribe_options: &'static str,
}

fn out() -> Pattern {
    Pattern::parse("faults.out").unwrap()
}

fn competing_collector() -> SubscriptionSpec {
    SubscriptionSpec {
        ack_wait: Duration::from_secs(5),
        ..SubscriptionSpec::competing(out(), "collector")
    }
}

/// What the publisher saw.
#[derive(Default)]
struct Published {
    accepted: BTreeSet<usize>,
    refused: Vec<usize>,
    connection_errors: usize,
    timeouts: usize,
    /// Refused because no subscription matched yet (MQTT with
    /// `require-subscribers`, between the broker's restart and the guest's
    /// subscribing again).
    no_subscribers: usize,
    slowest_refusal: Duration,
}

fn record_refusal(p: &mut Published, e: &BrokerError, took: Duration) {
    match e.kind() {
        ErrorKind::Connection => p.connection_errors += 1,
        ErrorKind::Timeout => p.timeouts += 1,
        ErrorKind::Busy => p.no_subscribers += 1,
        _ => {
            panic!("publish while the broker is down failed with {e:?}, not connection or timeout")
        }
    }
    p.slowest_refusal = p.slowest_refusal.max(took);
}

/// Publishes message `i`; `Err` when refused (or not answered in time).
async fn publish_one(
    backend: &Arc<dyn Backend>,
    data: String,
) -> Result<(), (BrokerError, Duration)> {
    let started = Instant::now();
    let m = Message::new("faults.in", data);
    match tokio::time::timeout(TIMEOUT + SLACK, backend.publish(vec![m])).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err((e, started.elapsed())),
        Err(_) => panic!("publish hung for more than {:?}", TIMEOUT + SLACK),
    }
}

fn payload(i: usize) -> String {
    format!("m-{i:05}")
}

async fn run(case: Case) {
    let mut broker = PrivateBroker::start(case.kind);
    let ms = TIMEOUT.as_millis();
    let client = format!("{}\n{}", broker.client(), case.options);
    let toml = format!(
        r#"
[clients.default]
{client}
timeout-ms = {ms}

[clients.local]
backend = "embedded"
timeout-ms = {ms}

[guests.upper]
component = "{upper}"
subscribe = ["faults.in"]
subscribe-options = {subscribe_options}
mode = "point-to-point"
allow-publish = ["faults.out"]
env = {{ OUT = "faults.out" }}
max-attempts = 10000
ack-wait-ms = 5000
backoff-ms = 100
backoff-max-ms = 1000
batch-size = 50

[guests.probe]
component = "{probe}"
client = "local"
clients = ["local", "default"]
subscribe = ["probe.cmd"]
allow-publish = ["probe.result", "faults.in"]
"#,
        upper = test_programs::UPPERCASE,
        probe = test_programs::PROBE,
        subscribe_options = case.subscribe_options,
    );
    let runtime = Runtime::new(Config::from_toml(&toml).expect("config")).expect("runtime");
    let backend = runtime.clients().get("default").await.expect("connect");
    let local = runtime.clients().get("local").await.expect("embedded");
    let mut results = local
        .subscribe(SubscriptionSpec::broadcast(
            Pattern::parse("probe.result").unwrap(),
        ))
        .await
        .expect("probe results");

    // The collector: every output, acked, counted by payload.
    let collector = Collector::start(
        backend
            .subscribe((case.collector)())
            .await
            .expect("collector"),
    );
    runtime.start().await.expect("start");

    // The publisher: N numbered messages, paced, through the faults.
    let published: Arc<Mutex<Published>> = Arc::default();
    let publishing = {
        let backend = backend.clone();
        let published = published.clone();
        tokio::spawn(async move {
            for i in 0..N {
                match publish_one(&backend, payload(i)).await {
                    Ok(()) => {
                        published.lock().unwrap().accepted.insert(i);
                    }
                    Err((e, took)) => {
                        {
                            let mut p = published.lock().unwrap();
                            record_refusal(&mut p, &e, took);
                            p.refused.push(i);
                        }
                        // A client backs off too (part of the scenario).
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                // Paced (part of the scenario), so that the faults fall in
                // the middle of the stream.
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        })
    };

    let mut kills = 0;
    let mut stops = 0;
    for (k, fault) in case.faults.iter().enumerate() {
        let at = N * (k + 1) / 3;
        // Each fault comes once the stream flows again: `at` messages accepted.
        wait_until_async(
            Duration::from_secs(120),
            &format!("the publisher is stuck: {at} messages accepted"),
            || published.lock().unwrap().accepted.len() >= at,
        )
        .await;
        tokio::task::block_in_place(|| match fault {
            Fault::Kill => broker.kill(),
            Fault::Stop => broker.stop(),
        });
        match fault {
            Fault::Kill => kills += 1,
            Fault::Stop => stops += 1,
        }
        let down_since = Instant::now();
        // Publishing on the backend while the broker is down.
        let data = format!("direct-{k}");
        match publish_one(&backend, data).await {
            Ok(()) => panic!(
                "publish succeeded while the broker was down ({fault:?}, listening: {})",
                broker.listening()
            ),
            Err((e, took)) => {
                assert!(
                    took <= TIMEOUT + SLACK,
                    "publish took {took:?} to fail while the broker was down"
                );
                let mut p = published.lock().unwrap();
                record_refusal(&mut p, &e, took);
            }
        }
        // A guest's `send` while the broker is down.
        let cmd = format!("send default faults.in guest-{k}");
        local
            .publish(vec![Message::new("probe.cmd", cmd.clone())])
            .await
            .expect("probe command");
        let report = tokio::time::timeout(TIMEOUT + SLACK + Duration::from_secs(2), async {
            loop {
                let d = results.next().await.expect("results open").expect("result");
                let m = d.message.clone();
                let _ = d.acker.ack().await;
                if m.metadata.iter().any(|(k, v)| k == "cmd" && *v == cmd) {
                    return String::from_utf8_lossy(&m.data).into_owned();
                }
            }
        })
        .await
        .expect("the guest's send came back while the broker was down");
        assert!(
            report.starts_with("err:connection") || report.starts_with("err:timeout"),
            "a guest's send while the broker is down gave `{report}`"
        );
        // The broker stays down for a while (part of the scenario).
        if let Some(rest) = DOWN.checked_sub(down_since.elapsed()) {
            tokio::time::sleep(rest).await;
        }
        tokio::task::block_in_place(|| broker.restart());
    }

    tokio::time::timeout(Duration::from_secs(300), publishing)
        .await
        .expect("the publisher finished")
        .expect("publisher task");

    // Publish again what was refused, now that the broker is back.
    let refused = std::mem::take(&mut published.lock().unwrap().refused);
    let retried = refused.len();
    for i in refused {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match publish_one(&backend, payload(i)).await {
                Ok(()) => break,
                Err((e, _)) => {
                    assert!(Instant::now() < deadline, "the broker never came back: {e}");
                    // The backend is still reconnecting: publishing is the
                    // signal; a client retries after a pause.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        published.lock().unwrap().accepted.insert(i);
    }

    // Wait until every accepted message came out, or DRAIN passed.
    let accepted = published.lock().unwrap().accepted.clone();
    let expected: BTreeSet<String> = accepted
        .iter()
        .map(|i| payload(*i).to_uppercase())
        .collect();
    collector.wait_for(&expected, DRAIN).await;
    // Late duplicates (redelivered after an ack was lost) may still trickle
    // in: a second to count them. Only the duplicate count depends on it;
    // what was lost is decided above.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let Tally {
        handled: handled_count,
        duplicates,
        missing,
    } = collector.tally(&expected);
    let upper = runtime.guest("upper").expect("the guest");
    let before_stop = format!(
        "{:?}, {} held, idle: {}",
        upper.stats(),
        upper.in_flight(),
        upper.idle()
    );
    // Stopping is bounded (in-flight batches get their drain deadline, every
    // settlement its own): a stop that does not end is a failure that says
    // what the guest was doing, not a hang.
    tokio::time::timeout(STOP, runtime.stop())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "faults {}: the runtime did not stop within {STOP:?}; before the stop: {before_stop}; \
                 {handled_count} handled, {} missing",
                case.name,
                missing.len()
            )
        });
    drop(collector);

    let p = published.lock().unwrap();
    let stats = courier_broker::reconnect::stats(backend.kind());
    println!(
        "faults {}: {} published, {handled_count} handled, {duplicates} duplicates, {} lost, {} broker restarts",
        case.name,
        accepted.len(),
        missing.len(),
        kills + stops,
    );
    println!(
        "faults {} details: {kills} killed with SIGKILL, {stops} stopped; {} publishes refused while down \
         ({} connection, {} timeout, slowest {:?}), {} refused for want of a subscriber, \
         {retried} published again; \
         {} disconnects and {} reconnects counted",
        case.name,
        p.connection_errors + p.timeouts,
        p.connection_errors,
        p.timeouts,
        p.slowest_refusal,
        p.no_subscribers,
        stats.disconnects,
        stats.reconnects,
    );
    assert_eq!(accepted.len(), N, "every message was accepted in the end");
    assert!(
        missing.is_empty(),
        "{} accepted messages were lost, e.g. {:?}; the guest before the stop: {before_stop}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert!(
        stats.reconnects >= 2,
        "the backend counted {} reconnects, expected one per broker restart at least",
        stats.reconnects
    );
    assert_eq!(broker.faults, 2);
}

fn nats_jetstream() -> Case {
    Case {
        name: "nats",
        kind: Broker::Nats,
        options: "options = { jetstream = true, stream = \"FAULTS\", subjects = \"faults.>\", \
                  storage = \"file\", connect-timeout-ms = 2000 }",
        collector: competing_collector,
        faults: [Fault::Kill, Fault::Stop],
        subscribe_options: "{}",
    }
}

fn redis_streams() -> Case {
    Case {
        name: "redis",
        kind: Broker::Redis,
        options: "options = { streams = true, connect-timeout-ms = 2000 }",
        collector: competing_collector,
        faults: [Fault::Kill, Fault::Stop],
        subscribe_options: "{}",
    }
}

fn rabbitmq() -> Case {
    Case {
        name: "rabbitmq",
        kind: Broker::RabbitMq,
        options: "options = { exchange = \"courier.faults\", connect-timeout-ms = 2000 }",
        collector: competing_collector,
        faults: [Fault::Kill, Fault::Stop],
        subscribe_options: "{}",
    }
}

// The guest's point-to-point subscription keeps its persistent session by
// default, so what mosquitto had queued for it when it stopped is delivered
// after the restart; the collector's broadcast one names a `durable` session.
// Mosquitto 2.0.11 restores the sessions but not their shared subscriptions:
// until the guest has subscribed again, nothing takes `faults.in`, and with
// `require-subscribers` a publish in that window is refused (and published
// again) rather than accepted and dropped by the broker.
fn mosquitto() -> Case {
    Case {
        name: "mosquitto",
        kind: Broker::Mosquitto,
        options: "options = { qos = 1, connect-timeout-ms = 2000, require-subscribers = true }",
        collector: || {
            let mut spec = SubscriptionSpec::broadcast(out());
            spec.options.insert(
                "durable".into(),
                format!("courier-faults-collector-{}", std::process::id()),
            );
            spec
        },
        // Mosquitto writes its persistence file on shutdown (and every
        // autosave interval): a SIGKILL loses what it accepted since.
        faults: [Fault::Stop, Fault::Stop],
        subscribe_options: "{}",
    }
}

/// Adds the test `name` of `case`, which needs the broker's program.
fn add<'a>(trials: &'a mut Trials, name: &str, case: Case) -> &'a mut Trials {
    trials.tokio(name, &[Need::Installed(case.kind)], || run(case))
}

fn main() -> ExitCode {
    let mut trials = Trials::new();
    add(
        &mut trials,
        "nats_jetstream_survives_broker_restarts",
        nats_jetstream(),
    );
    add(
        &mut trials,
        "redis_streams_survive_broker_restarts",
        redis_streams(),
    );
    add(&mut trials, "rabbitmq_survives_broker_restarts", rabbitmq());
    add(
        &mut trials,
        "mosquitto_survives_broker_restarts",
        mosquitto(),
    );
    trials.run()
}
