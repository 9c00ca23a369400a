//! Crash tests in the style of a Jepsen queue workload: a client publishes N
//! numbered messages through a `courier run` host's HTTP ingress while the
//! host is killed with SIGKILL at random moments and restarted, several times.
//! The `uppercase` guest handles each message (point-to-point) and sends the
//! result to an output channel that the host prints (`--print`, through a
//! stored queue on a durable broker). A checker then reads every line any
//! run printed: each message whose publish was answered `202 Accepted` must
//! have been handled at least once; duplicates are counted and reported.
//!
//! Run on the durable embedded broker (`--data-dir`), JetStream, Redis
//! Streams, RabbitMQ and Kafka. `COURIER_CRASH_N` (default 2000) and
//! `COURIER_CRASH_KILLS` (default 3) size the run, `COURIER_CRASH_SEED` makes
//! the kill points (random counts of accepted messages) repeatable:
//!
//! ```sh
//! COURIER_CRASH_N=10000 cargo test -p courier-cli --test crash
//! ```
//!
//! A broker that is not listening makes its test ignored with the reason
//! (failed when `CI=true`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use courier_test_support::{Broker, Need, Trials, free_port, unique};
use rand::{Rng, SeedableRng};

const COURIER: &str = env!("CARGO_BIN_EXE_courier");

fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// POSTs one message to the host's ingress; the HTTP status, or an error if
/// the host did not answer (down, or killed mid-request).
fn post(port: u16, channel: &str, body: &str) -> std::io::Result<u16> {
    let mut s = TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(1),
    )?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "POST /v1/channels/{channel} HTTP/1.1\r\nHost: courier\r\nContent-Type: text/plain\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    s.read_to_string(&mut response)?;
    response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no HTTP status in {response:?}")))
}

struct Workload<'a> {
    name: &'a str,
    /// The `[clients.default]` body.
    client: String,
    /// Extra `[host]` lines.
    host: String,
    ns: String,
}

/// One run of the host; its printed lines go to `lines`.
fn spawn_host(
    config: &Path,
    port: u16,
    ns: &str,
    log: &Path,
    lines: mpsc::Sender<String>,
) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let mut child = Command::new(COURIER)
        .args(["run", "--config"])
        .arg(config)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--print", &format!("{ns}.out")])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("spawn courier");
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    child
}

/// One workload at a time: each runs its own host and broker traffic, and
/// the machine has two cores.
static SERIAL: Mutex<()> = Mutex::new(());

fn crash_workload(w: Workload) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let n = env_usize("COURIER_CRASH_N", 2000);
    let kills = env_usize("COURIER_CRASH_KILLS", 3);
    let seed = std::env::var("COURIER_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("courier.toml");
    let log = dir.path().join("courier.log");
    let ns = &w.ns;
    std::fs::write(
        &config,
        format!(
            r#"
[host]
summary-secs = 0
{host}

[clients.default]
{client}

[guests.up]
component = "{component}"
subscribe = ["{ns}.in"]
allow-publish = ["{ns}.out"]
mode = "point-to-point"
group = "crash"
batch-size = 20
ack-wait-ms = 3000
env = {{ OUT = "{ns}.out" }}
"#,
            host = w.host,
            client = w.client,
            component = test_programs::UPPERCASE,
        ),
    )
    .unwrap();
    let port = free_port();
    let (tx, rx) = mpsc::channel::<String>();

    // The client: every message is retried until the host answers 202.
    let accepted = Arc::new(Mutex::new(Vec::<usize>::new()));
    let attempts = Arc::new(AtomicUsize::new(0));
    let publisher = {
        let (accepted, attempts, ns) = (accepted.clone(), attempts.clone(), ns.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(180);
            for i in 0..n {
                loop {
                    assert!(Instant::now() < deadline, "publishing m{i} never succeeded");
                    attempts.fetch_add(1, Ordering::Relaxed);
                    match post(port, &format!("{ns}.in"), &format!("m{i}")) {
                        Ok(202) => {
                            accepted.lock().unwrap().push(i);
                            break;
                        }
                        Ok(code) => panic!("the ingress answered {code} for m{i}"),
                        // Down, starting, or killed mid-request (the
                        // scenario): a client retries after a pause.
                        Err(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
            }
        })
    };

    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let take = |seen: &mut BTreeMap<String, usize>, wait: Duration| {
        if let Ok(line) = rx.recv_timeout(wait) {
            *seen.entry(line).or_default() += 1;
        }
        while let Ok(line) = rx.try_recv() {
            *seen.entry(line).or_default() += 1;
        }
    };
    let mut host = spawn_host(&config, port, ns, &log, tx.clone());
    // Kill points: random numbers of accepted messages, so that every kill
    // falls in the middle of the stream, whatever the broker's speed.
    let mut thresholds: Vec<usize> = (0..kills)
        .map(|_| rng.random_range(n / 10..n * 9 / 10))
        .collect();
    thresholds.sort_unstable();
    let mut kill_points = Vec::new();
    for threshold in thresholds {
        let until = Instant::now() + Duration::from_secs(60);
        while accepted.lock().unwrap().len() < threshold && Instant::now() < until {
            take(&mut seen, Duration::from_millis(5));
        }
        host.kill().unwrap(); // SIGKILL
        host.wait().unwrap();
        take(&mut seen, Duration::from_millis(50));
        kill_points.push((accepted.lock().unwrap().len(), seen.len()));
        host = spawn_host(&config, port, ns, &log, tx.clone());
    }
    publisher.join().expect("publisher");
    let accepted: Vec<usize> = accepted.lock().unwrap().clone();
    let deadline = Instant::now() + Duration::from_secs(120);
    let handled = |seen: &BTreeMap<String, usize>| {
        accepted
            .iter()
            .filter(|i| seen.contains_key(&format!("M{i}")))
            .count()
    };
    while handled(&seen) < accepted.len() && Instant::now() < deadline {
        take(&mut seen, Duration::from_millis(200));
    }
    let _ = Command::new("kill")
        .args(["-TERM", &host.id().to_string()])
        .status();
    host.wait().unwrap();
    drop(tx);
    take(&mut seen, Duration::from_millis(200));

    let lost: Vec<usize> = accepted
        .iter()
        .copied()
        .filter(|i| !seen.contains_key(&format!("M{i}")))
        .collect();
    let duplicates: usize = seen.values().map(|c| c - 1).sum();
    let strangers: Vec<&String> = seen
        .keys()
        .filter(|l| {
            l.strip_prefix('M')
                .and_then(|i| i.parse::<usize>().ok())
                .is_none_or(|i| i >= n)
        })
        .collect();
    println!(
        "crash {}: {} published, {} handled, {} duplicates, {} lost, {} kills at (accepted, handled) {:?}, {} publish attempts, seed {seed}",
        w.name,
        accepted.len(),
        handled(&seen),
        duplicates,
        lost.len(),
        kills,
        kill_points,
        attempts.load(Ordering::Relaxed),
    );
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(accepted.len(), n, "every message is accepted in the end");
    assert!(
        lost.is_empty(),
        "{} accepted messages were never handled, e.g. {:?}\nhost log:\n{}",
        lost.len(),
        &lost[..lost.len().min(10)],
        &log_text[log_text.len().saturating_sub(4000)..]
    );
    assert!(strangers.is_empty(), "unexpected output: {strangers:?}");
    assert!(
        kill_points.iter().any(|&(a, h)| a > 0 && h < n),
        "no kill hit the workload mid-stream: {kill_points:?}"
    );
}

fn durable_embedded_broker_loses_nothing_under_sigkill() {
    let data = tempfile::tempdir().unwrap();
    crash_workload(Workload {
        name: "embedded",
        client: "backend = \"embedded\"".into(),
        host: format!("data-dir = \"{}\"", data.path().display()),
        ns: unique("crash"),
    });
}

#[cfg(feature = "nats")]
fn jetstream_loses_nothing_under_sigkill() {
    crash_workload(Workload {
        name: "jetstream",
        client: format!(
            "{}\noptions = {{ jetstream = true, stream = \"COURIER_CRASH\", \
             subjects = \"crash.>\", storage = \"memory\" }}",
            Broker::Nats.client()
        ),
        host: String::new(),
        ns: unique("crash"),
    });
}

#[cfg(feature = "redis")]
fn redis_streams_lose_nothing_under_sigkill() {
    crash_workload(Workload {
        name: "redis-streams",
        client: format!("{}\noptions = {{ streams = true }}", Broker::Redis.client()),
        host: String::new(),
        ns: unique("crash"),
    });
}

#[cfg(feature = "amqp")]
fn rabbitmq_loses_nothing_under_sigkill() {
    crash_workload(Workload {
        name: "rabbitmq",
        client: format!(
            "{}\noptions = {{ exchange = \"courier.crash\" }}",
            Broker::RabbitMq.client()
        ),
        host: String::new(),
        ns: unique("crash"),
    });
}

#[cfg(feature = "kafka")]
fn kafka_loses_nothing_under_sigkill() {
    crash_workload(Workload {
        name: "kafka",
        // One record per batch: tansu 0.6.0 returns nothing to a fetch
        // that starts inside a batch, so a host resuming from a committed
        // offset in the middle of one would wait forever (docs/backends.md).
        client: format!(
            "{}\noptions = {{ batch-num-messages = 1 }}",
            Broker::Kafka.client()
        ),
        host: String::new(),
        ns: unique("crash"),
    });
}

fn main() -> ExitCode {
    let mut trials = Trials::new();
    trials.test(
        "durable_embedded_broker_loses_nothing_under_sigkill",
        &[],
        durable_embedded_broker_loses_nothing_under_sigkill,
    );
    #[cfg(feature = "nats")]
    trials.test(
        "jetstream_loses_nothing_under_sigkill",
        &[Need::Broker(Broker::Nats)],
        jetstream_loses_nothing_under_sigkill,
    );
    #[cfg(feature = "redis")]
    trials.test(
        "redis_streams_lose_nothing_under_sigkill",
        &[Need::Broker(Broker::Redis)],
        redis_streams_lose_nothing_under_sigkill,
    );
    #[cfg(feature = "amqp")]
    trials.test(
        "rabbitmq_loses_nothing_under_sigkill",
        &[Need::Broker(Broker::RabbitMq)],
        rabbitmq_loses_nothing_under_sigkill,
    );
    #[cfg(feature = "kafka")]
    trials
        .test(
            "kafka_loses_nothing_under_sigkill",
            &[Need::Broker(Broker::Kafka)],
            kafka_loses_nothing_under_sigkill,
        )
        .ignored(courier_test_support::brokers::TANSU_GROUP_TAKEOVER);
    trials.run()
}
