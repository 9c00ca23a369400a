//! Two `courier` hosts share a JetStream stream as competing consumers; one
//! is killed with SIGKILL mid-stream and the other completes every message
//! the dead one had not acknowledged.
//!
//! The binary needs the `nats` feature (`required-features` in `Cargo.toml`);
//! without a NATS server listening its test is ignored with the reason
//! (failed when `CI=true`).

use std::process::ExitCode;
use std::time::Duration;

use courier_test_support::{Broker, Need, Trials, unique};
use futures::StreamExt;

const COURIER: &str = env!("CARGO_BIN_EXE_courier");
const N: usize = 1000;

async fn survivor_completes_the_killed_hosts_messages() {
    let ns = unique("takeover");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("courier.toml");
    let group = format!("g{}", ns.replace('.', "_"));
    let client = format!(
        "{}\noptions = {{ jetstream = true, stream = \"COURIER_TAKEOVER\", subjects = \"takeover.>\" }}",
        Broker::Nats.client()
    );
    std::fs::write(
        &config,
        courier_test_support::takeover::config(&client, &ns, &group),
    )
    .unwrap();

    let plain = async_nats::connect(Broker::Nats.url()).await.unwrap();
    let mut out = plain.subscribe(format!("{ns}.out")).await.unwrap();
    plain.flush().await.unwrap();
    // The stream must exist before publishing: the first host creates it, so
    // create it here the same way for a clean start.
    let js = async_nats::jetstream::new(plain.clone());
    let stream = js
        .get_or_create_stream(async_nats::jetstream::stream::Config {
            name: "COURIER_TAKEOVER".into(),
            subjects: vec!["takeover.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let mut acks = Vec::new();
    for i in 0..N {
        acks.push(
            js.publish(format!("{ns}.in"), format!("m{i}").into())
                .await
                .unwrap(),
        );
    }
    for a in acks {
        a.await.unwrap();
    }

    courier_test_support::takeover::two_hosts_one_killed(
        "takeover",
        COURIER,
        &config,
        N,
        Duration::from_secs(90),
        async || match tokio::time::timeout(Duration::from_secs(5), out.next()).await {
            Ok(Some(m)) => Some(String::from_utf8_lossy(&m.payload).into_owned()),
            _ => None,
        },
    )
    .await;
    // Leave the shared stream as it was.
    let consumer = courier_nats::jetstream::consumer_name(&group, &format!("{ns}.in"));
    stream.delete_consumer(&consumer).await.unwrap();
    stream.purge().filter(format!("{ns}.>")).await.unwrap();
}

fn main() -> ExitCode {
    let mut trials = Trials::new();
    trials.tokio(
        "survivor_completes_the_killed_hosts_messages",
        &[Need::Broker(Broker::Nats)],
        survivor_completes_the_killed_hosts_messages,
    );
    trials.run()
}
