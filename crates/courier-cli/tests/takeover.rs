//! Two `courier` hosts share a JetStream stream as competing consumers; one
//! is killed with SIGKILL mid-stream and the other completes every message
//! the dead one had not acknowledged.
//!
//! The binary needs the `nats` feature (`required-features` in `Cargo.toml`);
//! without a NATS server listening its test is ignored with the reason
//! (failed when `CI=true`).

use std::collections::BTreeMap;
use std::io::Read;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use courier_test_support::{Broker, Need, Trials, unique};
use futures::StreamExt;

const COURIER: &str = env!("CARGO_BIN_EXE_courier");
const N: usize = 1000;

fn host(config: &std::path::Path) -> Child {
    Command::new(COURIER)
        .args(["run", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn courier")
}

async fn survivor_completes_the_killed_hosts_messages() {
    let ns = unique("takeover");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("courier.toml");
    let group = format!("g{}", ns.replace('.', "_"));
    std::fs::write(
        &config,
        format!(
            r#"
[host]
summary-secs = 0

[clients.default]
{client}
options = {{ jetstream = true, stream = "COURIER_TAKEOVER", subjects = "takeover.>" }}

[guests.up]
component = "{component}"
subscribe = ["{ns}.in"]
allow-publish = ["{ns}.>"]
mode = "point-to-point"
group = "{group}"
batch-size = 10
ack-wait-ms = 2000
env = {{ OUT = "{ns}.out", DELAY_MS = "20" }}
"#,
            component = test_programs::UPPERCASE,
            client = Broker::Nats.client(),
        ),
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

    let mut a = host(&config);
    let mut b = host(&config);
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut killed = false;
    while seen.len() < N && Instant::now() < deadline {
        if !killed && seen.len() >= N / 5 {
            a.kill().unwrap(); // SIGKILL
            killed = true;
        }
        if let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(5), out.next()).await {
            *seen
                .entry(String::from_utf8_lossy(&m.payload).into_owned())
                .or_default() += 1;
        }
    }
    let _ = a.kill();
    a.wait().unwrap();
    // Stop the survivor gracefully and read its summary.
    let _ = Command::new("kill")
        .args(["-TERM", &b.id().to_string()])
        .status();
    let mut stderr = String::new();
    b.stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    b.wait().unwrap();
    // Leave the shared stream as it was.
    let consumer = courier_nats::jetstream::consumer_name(&group, &format!("{ns}.in"));
    stream.delete_consumer(&consumer).await.unwrap();
    stream.purge().filter(format!("{ns}.>")).await.unwrap();

    assert!(
        killed,
        "the first host was never killed (saw {})",
        seen.len()
    );
    let missing: Vec<String> = (0..N)
        .map(|i| format!("M{i}"))
        .filter(|m| !seen.contains_key(m))
        .collect();
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    eprintln!(
        "takeover: {N} published, {} handled, {} duplicates, {} missing",
        seen.len(),
        duplicates,
        missing.len()
    );
    assert!(missing.is_empty(), "never handled: {missing:?}");
    let delivered: usize = stderr
        .lines()
        .find_map(|l| l.split("done: ").nth(1))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no summary from the survivor:\n{stderr}"));
    assert!(
        delivered < N,
        "the survivor handled everything ({delivered}); the killed host did no work"
    );
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
