//! Clustered brokers: nodes of a cluster killed and restarted at random
//! while a guest consumes point-to-point, and nothing accepted is lost.
//!
//! `nats_cluster_survives_random_node_kills` starts a 3-node nats-server
//! cluster with JetStream on loopback (`courier_test_support::cluster`), and
//! a Courier runtime whose client lists the three nodes and keeps its stream
//! with 3 replicas (`replicas = 3`). The `uppercase` guest consumes
//! `cluster.in` point-to-point and republishes every message upper-cased on
//! `cluster.out`, where a collector counts them. A publisher sends numbered
//! messages while a chaos thread, as in nats-server's own JetStream chaos
//! tests, kills a random node with SIGKILL at random intervals, keeps it
//! down for a random while, and starts it again on the same ports and data
//! — one node down at a time, so the R3 stream keeps its quorum; the first
//! kill is of a node Courier is connected to (`/connz`), so the client
//! always fails over at least once. A publish
//! refused during a leader election is retried; a message is accepted (and
//! counted as published once) when its publish returned `Ok`. At the end
//! every accepted message must have come out of the guest (0 lost);
//! duplicates are counted.
//!
//! `rabbitmq_cluster_survives_random_node_kills` does the same on a 3-node
//! RabbitMQ cluster (`RabbitCluster`), the client's url listing the three
//! nodes and its queues declared as quorum queues (`queue-type = "quorum"`,
//! checked to have all three nodes as members), with two kills: an Erlang
//! node is slow to start (the three form a cluster in 14–20 s here).
//!
//! The run prints its seed; `COURIER_CLUSTER_SEED=…` replays the same kill
//! intervals and choices (the timing of the cluster and which node the
//! client picks still vary).
//!
//! ```sh
//! cargo test -p courier-runtime --test cluster -- --nocapture
//! ```
//!
//! A missing nats-server makes the test ignored with the reason (and fails
//! it when `CI=true`).

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use courier_broker::{Backend, Message, Pattern, SubscriptionSpec};
use courier_runtime::{Config, Runtime};
use courier_test_support::cluster::{Chaos, NatsCluster, RabbitCluster};
use courier_test_support::collector::{Collector, Tally};
use courier_test_support::{Broker, Need, Trials, eventually_async};
use rand::{Rng, SeedableRng};

/// Messages published at least (more while the chaos thread still runs).
const N: usize = 2000;
/// The client's `timeout-ms` (and `connect-timeout-ms`).
const TIMEOUT: Duration = Duration::from_millis(2000);
/// Slack on top of `TIMEOUT` for a refused publish to come back.
const SLACK: Duration = Duration::from_millis(1500);
/// Bound on the cluster electing a meta leader after a restart.
const ELECTION: Duration = Duration::from_secs(20);
/// Bound on waiting for all accepted messages to come out.
const DRAIN: Duration = Duration::from_secs(60);

fn payload(i: usize) -> String {
    format!("c-{i:05}")
}

/// What the publisher saw.
#[derive(Default)]
struct Published {
    accepted: BTreeSet<usize>,
    /// Publishes that failed (and were retried), by error kind.
    refused: BTreeMap<String, usize>,
    slowest_refusal: Duration,
}

/// Publishes `i` until a publish of it returns `Ok`.
async fn publish_until_accepted(
    backend: &Arc<dyn Backend>,
    i: usize,
    published: &Mutex<Published>,
) {
    loop {
        let started = Instant::now();
        let m = Message::new("cluster.in", payload(i));
        match tokio::time::timeout(TIMEOUT + SLACK, backend.publish(vec![m])).await {
            Ok(Ok(())) => {
                published.lock().unwrap().accepted.insert(i);
                return;
            }
            Ok(Err(e)) => {
                {
                    let mut p = published.lock().unwrap();
                    *p.refused.entry(format!("{:?}", e.kind())).or_default() += 1;
                    p.slowest_refusal = p.slowest_refusal.max(started.elapsed());
                }
                // A client backs off before it retries (part of the scenario).
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(_) => panic!("publish hung for more than {:?}", TIMEOUT + SLACK),
        }
    }
}

/// The chaos thread: `kills` times, after a random pause, kill a random
/// node, keep it down for a random while, start it again and wait for the
/// cluster to be whole. Returns the cluster and the kills as (node,
/// accepted messages when killed).
fn chaos<C: Chaos>(
    mut cluster: C,
    case: &Case<C>,
    seed: u64,
    published: Arc<Mutex<Published>>,
) -> (C, Vec<(String, usize)>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut kills = Vec::new();
    for _ in 0..case.kills {
        // Random pauses are the scenario, not synchronization.
        std::thread::sleep(Duration::from_millis(rng.random_range(500..2500)));
        // The first kill is of a node Courier is connected to, so that
        // every run has the client fail over to another node.
        let connected: Vec<usize> = (0..cluster.size())
            .filter(|i| cluster.clients_of(*i).is_some_and(|n| n > 0))
            .collect();
        let node = if kills.is_empty() && !connected.is_empty() {
            connected[rng.random_range(0..connected.len())]
        } else {
            rng.random_range(0..cluster.size())
        };
        let accepted = published.lock().unwrap().accepted.len();
        cluster.kill_node(node);
        kills.push((cluster.node_name(node), accepted));
        std::thread::sleep(Duration::from_millis(rng.random_range(300..2000)));
        cluster.restart_node(node);
        cluster.wait_whole(case.whole_within);
    }
    (cluster, kills)
}

/// A clustered broker to run the scenario on.
struct Case<C> {
    name: &'static str,
    start: fn() -> C,
    /// The `[clients.default]` lines but `timeout-ms`.
    client: fn(&C) -> String,
    /// `Ok` once the stream or queues are held by every node.
    replicated: fn(&C) -> Result<(), String>,
    kills: u32,
    /// Bound on the cluster being whole again after a restart.
    whole_within: Duration,
}

fn nats() -> Case<NatsCluster> {
    Case {
        name: "nats",
        start: || NatsCluster::start(3),
        client: |c| {
            format!(
                "{}\noptions = {{ jetstream = true, stream = \"CLUSTER\", subjects = \"cluster.>\", \
                 storage = \"file\", replicas = 3, connect-timeout-ms = {} }}",
                c.client(),
                TIMEOUT.as_millis()
            )
        },
        replicated: |c| {
            let everyone: Vec<String> = (0..3).map(|i| c.name(i).to_string()).collect();
            match c.stream_peers("CLUSTER") {
                Some(peers) if peers == everyone => Ok(()),
                other => Err(format!("the stream is held by {other:?}")),
            }
        },
        kills: 4,
        whole_within: ELECTION,
    }
}

fn rabbitmq() -> Case<RabbitCluster> {
    Case {
        name: "rabbitmq",
        start: || RabbitCluster::start(3),
        client: |c| {
            format!(
                "{}\noptions = {{ exchange = \"courier.cluster\", queue-type = \"quorum\", \
                 connect-timeout-ms = {} }}",
                c.client(),
                TIMEOUT.as_millis()
            )
        },
        replicated: |c| {
            let everyone = c.node_names();
            let queues = c.queues(0).ok_or("list_queues failed")?;
            let named: Vec<_> = queues
                .iter()
                .filter(|(name, _, _)| name.starts_with("courier."))
                .collect();
            let whole = named.len() >= 2
                && named
                    .iter()
                    .all(|(_, kind, members)| kind == "quorum" && *members == everyone);
            if whole {
                Ok(())
            } else {
                Err(format!("the queues are {queues:?}"))
            }
        },
        kills: 2,
        whole_within: Duration::from_secs(60),
    }
}

async fn run<C: Chaos>(case: Case<C>) {
    let name = case.name;
    let planned = case.kills;
    let seed = std::env::var("COURIER_CLUSTER_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    println!("cluster {name}: seed {seed} (COURIER_CLUSTER_SEED={seed} replays the kill choices)");
    let cluster = (case.start)();
    let ms = TIMEOUT.as_millis();
    let toml = format!(
        r#"
[clients.default]
{client}
timeout-ms = {ms}

[guests.upper]
component = "{upper}"
subscribe = ["cluster.in"]
mode = "point-to-point"
allow-publish = ["cluster.out"]
env = {{ OUT = "cluster.out" }}
max-attempts = 10000
ack-wait-ms = 5000
backoff-ms = 100
backoff-max-ms = 1000
batch-size = 50
"#,
        client = (case.client)(&cluster),
        upper = test_programs::UPPERCASE,
    );
    let runtime = Runtime::new(Config::from_toml(&toml).expect("config")).expect("runtime");
    let backend = runtime.clients().get("default").await.expect("connect");
    let collector = Collector::start(
        backend
            .subscribe(SubscriptionSpec {
                ack_wait: Duration::from_secs(5),
                ..SubscriptionSpec::competing(Pattern::parse("cluster.out").unwrap(), "collector")
            })
            .await
            .expect("collector"),
    );
    runtime.start().await.expect("start");
    // What Courier declared is held by all three nodes.
    eventually_async(case.whole_within, || (case.replicated)(&cluster).is_ok()).await;
    if let Err(e) = (case.replicated)(&cluster) {
        panic!("not replicated on the three nodes: {e}");
    }

    let published: Arc<Mutex<Published>> = Arc::default();
    let chaos_done = Arc::new(AtomicBool::new(false));
    let chaos = {
        let published = published.clone();
        let chaos_done = chaos_done.clone();
        tokio::task::spawn_blocking(move || {
            let out = chaos(cluster, &case, seed, published);
            chaos_done.store(true, Ordering::SeqCst);
            out
        })
    };
    // The publisher: at least N messages, and on while the chaos lasts.
    let publishing = {
        let backend = backend.clone();
        let published = published.clone();
        let chaos_done = chaos_done.clone();
        tokio::spawn(async move {
            let mut i = 0;
            while i < N || !chaos_done.load(Ordering::SeqCst) {
                assert!(i < 20 * N, "the chaos thread never finished");
                publish_until_accepted(&backend, i, &published).await;
                i += 1;
                // Paced (part of the scenario), so that the kills fall in
                // the middle of the stream.
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        })
    };
    let (cluster, kills) = chaos.await.expect("chaos thread");
    tokio::time::timeout(Duration::from_secs(120), publishing)
        .await
        .expect("the publisher finished")
        .expect("publisher task");

    let accepted = published.lock().unwrap().accepted.clone();
    let expected: BTreeSet<String> = accepted
        .iter()
        .map(|i| payload(*i).to_uppercase())
        .collect();
    let drained_at = Instant::now();
    collector.wait_for(&expected, DRAIN).await;
    let drain = drained_at.elapsed();
    // Late duplicates (redelivered after an ack was lost) may still trickle
    // in: a second to count them. Only the duplicate count depends on it;
    // what was lost is decided above.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let Tally {
        handled,
        duplicates,
        missing,
    } = collector.tally(&expected);
    runtime.stop().await;
    drop(collector);

    let p = published.lock().unwrap();
    let stats = courier_broker::reconnect::stats(backend.kind());
    println!(
        "cluster {name}: {} published, {handled} handled, {duplicates} duplicates, {} lost, \
         {} SIGKILLs of 3 nodes, seed {seed}",
        accepted.len(),
        missing.len(),
        cluster.kills(),
    );
    println!(
        "cluster {name} details: kills (node, accepted so far) {kills:?}; {} publishes refused and \
         retried {:?} (slowest {:?}); drained {drain:?} after the last publish; \
         {} disconnects and {} reconnects counted",
        p.refused.values().sum::<usize>(),
        p.refused,
        p.slowest_refusal,
        stats.disconnects,
        stats.reconnects,
    );
    assert_eq!(cluster.kills(), planned, "every planned kill happened");
    assert!(
        stats.disconnects >= 1 && stats.reconnects >= 1,
        "the client lost its node and connected to another"
    );
    assert!(accepted.len() >= N, "every message was accepted in the end");
    assert!(
        missing.is_empty(),
        "{} accepted messages were lost, e.g. {:?} (seed {seed})",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    drop(cluster);
}

fn main() -> ExitCode {
    let mut trials = Trials::new();
    trials.tokio(
        "nats_cluster_survives_random_node_kills",
        &[Need::Installed(Broker::Nats)],
        || run(nats()),
    );
    trials.tokio(
        "rabbitmq_cluster_survives_random_node_kills",
        &[Need::Installed(Broker::RabbitMq)],
        || run(rabbitmq()),
    );
    trials.run()
}
