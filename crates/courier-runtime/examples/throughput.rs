//! Throughput through a no-op guest, beside a native Rust consumer doing the
//! same work (take each message, acknowledge it) on the same broker, in the
//! same run. Prints messages per second of both and their ratio.
//!
//! ```sh
//! cargo run --release -p courier-runtime --example throughput -- embedded 200000 100
//! cargo run --release -p courier-runtime --example throughput -- nats 100000 100
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use courier_broker::{Backend, Message, Pattern, SubscriptionSpec};
use courier_runtime::{Config, Runtime};

const ROUNDS: usize = 3;

/// Publishes `n` 16-byte messages on `topic`, in chunks.
async fn publish(backend: Arc<dyn Backend>, topic: String, n: usize) {
    let chunk: Vec<Message> = (0..1000)
        .map(|_| Message::new(topic.clone(), vec![b'x'; 16]))
        .collect();
    let mut sent = 0;
    while sent < n {
        let k = chunk.len().min(n - sent);
        backend.publish(chunk[..k].to_vec()).await.expect("publish");
        sent += k;
    }
}

/// Seconds for `n` messages through the guest.
async fn through_guest(
    runtime: &Runtime,
    backend: &Arc<dyn Backend>,
    topic: &str,
    n: usize,
) -> f64 {
    let guest = runtime.guest("noop").expect("guest");
    let before = guest.stats().accepted;
    let start = Instant::now();
    tokio::spawn(publish(backend.clone(), topic.to_string(), n));
    let deadline = start + Duration::from_secs(120);
    while guest.stats().accepted < before + n as u64 {
        // At-most-once brokers may drop messages for a slow consumer.
        assert!(
            Instant::now() < deadline,
            "only {} of {n} messages arrived",
            guest.stats().accepted - before
        );
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    start.elapsed().as_secs_f64()
}

/// Seconds for `n` messages through a native consumer.
async fn through_native(backend: &Arc<dyn Backend>, topic: &str, n: usize) -> f64 {
    let mut spec = SubscriptionSpec::broadcast(Pattern::parse(topic).unwrap());
    spec.prefetch = 200;
    let mut sub = backend.subscribe(spec).await.expect("subscribe");
    let start = Instant::now();
    tokio::spawn(publish(backend.clone(), topic.to_string(), n));
    for i in 0..n {
        let d = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .unwrap_or_else(|_| panic!("only {i} of {n} messages arrived"))
            .expect("open")
            .expect("delivery");
        std::hint::black_box(&d.message);
        d.acker.ack().await.expect("ack");
    }
    let secs = start.elapsed().as_secs_f64();
    sub.close().await.expect("close");
    secs
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let backend_name = args.first().map_or("embedded", String::as_str);
    let n: usize = args.get(1).map_or(Ok(200_000), |a| a.parse())?;
    let batch: usize = args.get(2).map_or(Ok(100), |a| a.parse())?;
    let client = match backend_name {
        "embedded" => "backend = \"embedded\"".to_string(),
        "nats" => "backend = \"nats\"\nurl = \"nats://127.0.0.1:4222\"".to_string(),
        other => anyhow::bail!("unknown backend `{other}` (embedded, nats)"),
    };
    let run = std::process::id();
    let guest_topic = format!("bench.r{run}.guest");
    let config = Config::from_toml(&format!(
        r#"
        [host]
        summary-secs = 0
        [clients.default]
        {client}
        [guests.noop]
        component = "{}"
        subscribe = ["{guest_topic}"]
        batch-size = {batch}
        "#,
        test_programs::NOOP
    ))?;
    let runtime = Runtime::new(config)?;
    runtime.start().await?;
    let backend = runtime.clients().get("default").await?;
    // Warm up both paths (compilation caches, connections).
    through_guest(&runtime, &backend, &guest_topic, n / 10).await;
    through_native(&backend, &format!("bench.r{run}.native"), n / 10).await;
    let mut guest = Vec::new();
    let mut native = Vec::new();
    for _ in 0..ROUNDS {
        guest.push(n as f64 / through_guest(&runtime, &backend, &guest_topic, n).await);
        native.push(n as f64 / through_native(&backend, &format!("bench.r{run}.native"), n).await);
    }
    let (g, nat) = (median(guest), median(native));
    println!(
        "backend={backend_name} messages={n} batch={batch} guest={g:.0}/s native={nat:.0}/s ratio={:.2}",
        g / nat
    );
    runtime.stop().await;
    Ok(())
}
