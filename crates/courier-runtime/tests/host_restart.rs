//! The host stops (as at SIGTERM) and starts again while a guest consumes
//! point-to-point in its default configuration, and nothing accepted is
//! lost: what the broker had handed out and not seen settled, what it still
//! queued, and what was published while no host ran all come out after the
//! restart.
//!
//! The `uppercase` guest (20 ms per message, one per batch) republishes
//! `hr.in` upper-cased on `hr.out`; the test publishes and collects through
//! a client of its own. It stops the host once a tenth of the messages came
//! out, publishes more while the host is down, starts a new host with the
//! same configuration and waits for every message. Each broker runs
//! privately (`courier_test_support::private`); a broker program that is not
//! installed makes its test ignored with the reason (failed when `CI=true`).
//! Each test prints a summary line for `docs/reliability.md`:
//! `cargo test -p courier-runtime --test host_restart`.

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::time::Duration;

use courier_broker::{Message, Pattern, SubscriptionSpec};
use courier_runtime::{Config, Runtime};
use courier_test_support::collector::{Collector, Tally};
use courier_test_support::private::PrivateBroker;
use courier_test_support::{Broker, Need, Trials, wait_until_async};

/// Messages published while the first host runs.
const N: usize = 100;
/// Messages published while no host runs.
const WHILE_DOWN: usize = 20;

struct Case {
    name: &'static str,
    kind: Broker,
    /// The `options` line of the client.
    options: &'static str,
    /// Subscription extensions of the test's collector on `hr.out`.
    collector: &'static [(&'static str, &'static str)],
}

fn host(client: &str) -> Runtime {
    let toml = format!(
        r#"
[clients.default]
{client}
timeout-ms = 2000

[guests.upper]
component = "{upper}"
subscribe = ["hr.in"]
mode = "point-to-point"
allow-publish = ["hr.out"]
env = {{ OUT = "hr.out", DELAY_MS = "20" }}
batch-size = 1
"#,
        upper = test_programs::UPPERCASE,
    );
    Runtime::new(Config::from_toml(&toml).expect("config")).expect("runtime")
}

async fn run(case: Case) {
    let broker = PrivateBroker::start(case.kind);
    let client = format!("{}\n{}", broker.client(), case.options);
    let tools = Runtime::new(
        Config::from_toml(&format!("[clients.default]\n{client}\n")).expect("tools config"),
    )
    .expect("tools runtime");
    let backend = tools.clients().get("default").await.expect("connect");

    let mut spec = SubscriptionSpec::broadcast(Pattern::parse("hr.out").unwrap());
    for (k, v) in case.collector {
        spec.options.insert((*k).into(), (*v).into());
    }
    let collector = Collector::start(backend.subscribe(spec).await.expect("collector"));
    let all = N + WHILE_DOWN;
    let expected: BTreeSet<String> = (0..all).map(|i| format!("M-{i:04}")).collect();
    let count = || collector.tally(&expected).handled;
    let publish = |from: usize, to: usize| {
        let backend = backend.clone();
        async move {
            for i in from..to {
                backend
                    .publish(vec![Message::new("hr.in", format!("m-{i:04}"))])
                    .await
                    .expect("publish");
            }
        }
    };

    let first = host(&client);
    first.start().await.expect("start");
    publish(0, N).await;
    wait_until_async(Duration::from_secs(60), "a tenth came out", || {
        count() >= N / 10
    })
    .await;
    first.stop().await;
    drop(first);
    let at_stop = count();

    publish(N, N + WHILE_DOWN).await;
    let second = host(&client);
    second.start().await.expect("restart");
    collector.wait_for(&expected, Duration::from_secs(60)).await;
    second.stop().await;

    let Tally {
        handled,
        duplicates,
        missing: lost,
    } = collector.tally(&expected);
    println!(
        "host restart {}: {all} published ({WHILE_DOWN} while no host ran), {handled} handled \
         ({at_stop} before the stop), {duplicates} duplicates, {} lost",
        case.name,
        lost.len()
    );
    assert!(
        at_stop < N,
        "the stop came after every message was handled: nothing was tested"
    );
    assert!(
        lost.is_empty(),
        "{} accepted messages were lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
}

fn main() -> ExitCode {
    let mut trials = Trials::new();
    let cases = [
        Case {
            name: "mosquitto",
            kind: Broker::Mosquitto,
            options: "options = { qos = 1 }",
            collector: &[("durable", "courier-hr-collector")],
        },
        Case {
            name: "nats_jetstream",
            kind: Broker::Nats,
            options: r#"options = { jetstream = true, stream = "HR", subjects = "hr.>" }"#,
            collector: &[],
        },
        Case {
            name: "redis_streams",
            kind: Broker::Redis,
            options: "options = { streams = true }",
            collector: &[],
        },
    ];
    for case in cases {
        let name = format!("{}_keeps_what_it_held_across_a_host_restart", case.name);
        trials.tokio(name, &[Need::Installed(case.kind)], move || run(case));
    }
    trials.run()
}
