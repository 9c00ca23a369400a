//! Two `courier` hosts in one Kafka consumer group share a topic's
//! partitions; one is killed with SIGKILL mid-stream and the other, once
//! the group gives it the dead host's partitions, completes every message
//! the dead one had not committed.
//!
//! The binary needs the `kafka` feature (`required-features` in
//! `Cargo.toml`); without a Kafka broker listening its test is ignored with
//! the reason (failed when `CI=true`).

use std::process::ExitCode;
use std::time::Duration;

use courier_broker::{Backend, Message, Pattern, SubscriptionSpec};
use courier_kafka::{KafkaBackend, KafkaOptions};
use courier_test_support::{Broker, Need, Trials, unique};

const COURIER: &str = env!("CARGO_BIN_EXE_courier");
const N: usize = 1000;

async fn survivor_takes_over_the_killed_hosts_partitions() {
    let ns = unique("kgroup");
    let group = format!("g-{}", ns.replace('.', "-"));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("courier.toml");
    // One record per batch: tansu 0.6.0 returns nothing to a fetch that
    // starts inside a batch (docs/backends.md).
    let options = "{ partitions = 2, session-timeout-ms = 6000, batch-num-messages = 1 }";
    std::fs::write(
        &config,
        courier_test_support::takeover::config(
            &format!("{}\noptions = {options}", Broker::Kafka.client()),
            &ns,
            &group,
        ),
    )
    .unwrap();

    let kafka_options = KafkaOptions {
        partitions: std::num::NonZeroI32::new(2).unwrap(),
        batch_num_messages: std::num::NonZeroU32::new(1).unwrap(),
        ..KafkaOptions::default()
    };
    let kafka = KafkaBackend::connect(&Broker::Kafka.url(), &kafka_options)
        .await
        .unwrap();
    let mut out = kafka
        .subscribe(SubscriptionSpec::broadcast(
            Pattern::parse(&format!("{ns}.out")).unwrap(),
        ))
        .await
        .unwrap();
    // Keyed, so that the records spread over both partitions.
    let messages: Vec<Message> = (0..N)
        .map(|i| {
            let mut m = Message::new(format!("{ns}.in"), format!("m{i}"));
            m.metadata.push(("kafka-key".into(), i.to_string()));
            m
        })
        .collect();
    kafka.publish(messages).await.unwrap();

    courier_test_support::takeover::two_hosts_one_killed(
        "kafka group takeover",
        COURIER,
        &config,
        N,
        Duration::from_secs(120),
        async || match tokio::time::timeout(Duration::from_secs(5), out.next()).await {
            Ok(Some(Ok(d))) => {
                d.acker.ack().await.unwrap();
                Some(String::from_utf8_lossy(&d.message.data).into_owned())
            }
            _ => None,
        },
    )
    .await;
}

fn main() -> ExitCode {
    let mut trials = Trials::new();
    trials
        .tokio(
            "survivor_takes_over_the_killed_hosts_partitions",
            &[Need::Broker(Broker::Kafka)],
            survivor_takes_over_the_killed_hosts_partitions,
        )
        .ignored(courier_test_support::brokers::TANSU_GROUP_TAKEOVER);
    trials.run()
}
