//! End-to-end benchmarks of Courier, each beside a native Rust baseline doing
//! the same work on the same broker in the same run, so that the figures that
//! matter are ratios (timings on small shared machines are noisy).
//!
//! ```sh
//! B="cargo run --release -p courier-runtime --example bench --"
//! $B throughput backend=embedded guest=noop messages=200000 batch=100
//! $B throughput backend=nats guest=uppercase messages=50000
//! $B latency backend=embedded rate=5000 seconds=5
//! $B instantiate count=200
//! $B scaling backend=embedded messages=100000
//! $B durable messages=20000   # what each sync policy of --data-dir costs
//! $B all                     # everything above, as Markdown tables
//! ```
//!
//! Work compared:
//! - `noop`: the guest accepts each batch and does nothing; the native
//!   consumer takes each message and acknowledges it.
//! - `uppercase`: the guest upper-cases each message and sends the batch on to
//!   an output channel; the native consumer does the same with the same
//!   backend (one publish per batch, then the acks).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use courier_broker::{Backend, Delivery, Message, Pattern, Subscription, SubscriptionSpec};
use courier_runtime::{Config, Runtime};
use futures::FutureExt;

const ROUNDS: usize = 3;

/// `key=value` arguments, with defaults.
struct Args(BTreeMap<String, String>);

impl Args {
    fn get<T: std::str::FromStr>(&self, key: &str, default: T) -> anyhow::Result<T> {
        match self.0.get(key) {
            Some(v) => v
                .parse()
                .ok()
                .with_context(|| format!("bad value `{v}` for `{key}`")),
            None => Ok(default),
        }
    }
    fn str(&self, key: &str, default: &str) -> String {
        self.0
            .get(key)
            .cloned()
            .unwrap_or_else(|| default.to_string())
    }
}

fn client_toml(backend: &str) -> anyhow::Result<&'static str> {
    Ok(match backend {
        "embedded" => "backend = \"embedded\"",
        "nats" => "backend = \"nats\"\nurl = \"nats://127.0.0.1:4222\"",
        // In memory: the figure is the host's cost, not the disk's.
        "jetstream" => {
            "backend = \"nats\"\nurl = \"nats://127.0.0.1:4222\"\n\
             options = { jetstream = true, stream = \"COURIER_BENCH\", subjects = \"bench.>\", \
             storage = \"memory\" }"
        }
        other => bail!("unknown backend `{other}` (embedded, nats, jetstream)"),
    })
}

/// A guest's settings for one measurement.
#[derive(Clone)]
struct Setup {
    backend: String,
    guest: String,
    batch: usize,
    concurrency: usize,
    size: usize,
    pooling: bool,
}

fn ns() -> String {
    format!("bench.r{}x{}", std::process::id(), rand::random::<u32>())
}

/// A runtime running the guest of `setup` on `{ns}.in`, sending to `{ns}.out`.
async fn start(setup: &Setup, ns: &str) -> anyhow::Result<Runtime> {
    let component = match setup.guest.as_str() {
        "noop" => test_programs::NOOP,
        "uppercase" => test_programs::UPPERCASE,
        "transform" => test_programs::TRANSFORM,
        other => bail!("unknown guest `{other}` (noop, uppercase, transform)"),
    };
    let config = Config::from_toml(&format!(
        r#"
        [host]
        summary-secs = 0
        pooling = {pooling}
        [clients.default]
        {client}
        [guests.g]
        component = "{component}"
        subscribe = ["{ns}.in"]
        allow-publish = ["{ns}.out"]
        env = {{ OUT = "{ns}.out" }}
        batch-size = {batch}
        concurrency = {concurrency}
        max-message-bytes = {max}
        memory-limit-mib = 256
        "#,
        pooling = setup.pooling,
        client = client_toml(&setup.backend)?,
        batch = setup.batch,
        concurrency = setup.concurrency,
        max = (setup.size * 2).max(1 << 20),
    ))?;
    let runtime = Runtime::new(config)?;
    runtime.start().await?;
    Ok(runtime)
}

fn payload(size: usize) -> Vec<u8> {
    (0..size).map(|i| b'a' + (i % 26) as u8).collect()
}

/// The messages the work `work` takes: JSON orders of a few hundred bytes
/// for `transform` (each different), else `size` bytes of letters.
fn inputs(work: &str, topic: &str, n: usize, size: usize) -> Vec<Message> {
    (0..1000.min(n).max(1))
        .map(|i| match work {
            "transform" => Message::new(topic, orders::sample(i)),
            _ => Message::new(topic, payload(size)),
        })
        .collect()
}

/// Publishes `n` messages for `work` on `topic`, in chunks.
async fn publish(backend: Arc<dyn Backend>, topic: String, work: String, n: usize, size: usize) {
    let chunk = inputs(&work, &topic, n, size);
    let mut sent = 0;
    while sent < n {
        let k = chunk.len().min(n - sent);
        backend.publish(chunk[..k].to_vec()).await.expect("publish");
        sent += k;
    }
}

/// Messages per second through the guest.
async fn guest_rate(runtime: &Runtime, setup: &Setup, ns: &str, n: usize) -> anyhow::Result<f64> {
    let guest = runtime.guest("g").context("guest")?;
    let backend = runtime.clients().get("default").await?;
    let before = guest.stats().accepted;
    let start = Instant::now();
    tokio::spawn(publish(
        backend,
        format!("{ns}.in"),
        setup.guest.clone(),
        n,
        setup.size,
    ));
    let deadline = start + Duration::from_secs(300);
    while guest.stats().accepted < before + n as u64 {
        if Instant::now() > deadline {
            bail!(
                "only {} of {n} messages arrived (an at-most-once broker dropped some?)",
                guest.stats().accepted - before
            );
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// Up to `max` deliveries: waits for the first, takes what else is ready.
async fn take_batch(sub: &mut Box<dyn Subscription>, max: usize) -> anyhow::Result<Vec<Delivery>> {
    let first = tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .context("no message for 10 s")?
        .context("subscription closed")??;
    let mut batch = vec![first];
    while batch.len() < max {
        match sub.next().now_or_never() {
            Some(Some(d)) => batch.push(d?),
            _ => break,
        }
    }
    Ok(batch)
}

/// The native consumer: the same work as guest `work` on `backend`.
async fn native_consume(
    backend: &Arc<dyn Backend>,
    sub: &mut Box<dyn Subscription>,
    work: &str,
    out: &str,
    n: usize,
    batch: usize,
) -> anyhow::Result<()> {
    let mut done = 0;
    while done < n {
        let ds = take_batch(sub, batch).await?;
        done += ds.len();
        if work == "transform" {
            let mut out_batch = Vec::with_capacity(ds.len());
            for d in &ds {
                let data = orders::transform(&d.message.data)?;
                let mut m = Message::new(out, data);
                m.content_type = Some("application/json".into());
                out_batch.push(m);
            }
            backend.publish(out_batch).await?;
        } else if work == "uppercase" {
            let up: Vec<Message> = ds
                .iter()
                .map(|d| {
                    let mut m = Message::new(out, d.message.data.to_ascii_uppercase());
                    m.content_type = d.message.content_type.clone();
                    m
                })
                .collect();
            backend.publish(up).await?;
        } else {
            for d in &ds {
                std::hint::black_box(&d.message);
            }
        }
        for d in ds {
            d.acker.ack().await?;
        }
    }
    Ok(())
}

/// Messages per second through the native consumer.
async fn native_rate(runtime: &Runtime, setup: &Setup, n: usize) -> anyhow::Result<f64> {
    let backend = runtime.clients().get("default").await?;
    let ns = ns();
    let mut spec = SubscriptionSpec::broadcast(Pattern::parse(&format!("{ns}.nin"))?);
    spec.prefetch = 2 * setup.batch * setup.concurrency;
    let mut sub = backend.subscribe(spec).await?;
    let start = Instant::now();
    tokio::spawn(publish(
        backend.clone(),
        format!("{ns}.nin"),
        setup.guest.clone(),
        n,
        setup.size,
    ));
    native_consume(
        &backend,
        &mut sub,
        &setup.guest,
        &format!("{ns}.nout"),
        n,
        setup.batch,
    )
    .await?;
    let rate = n as f64 / start.elapsed().as_secs_f64();
    sub.close().await?;
    Ok(rate)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// (guest msg/s, native msg/s): medians of alternating rounds after a warm-up.
async fn compare(setup: &Setup, n: usize) -> anyhow::Result<(f64, f64)> {
    let ns = ns();
    let runtime = start(setup, &ns).await?;
    guest_rate(&runtime, setup, &ns, (n / 10).max(1)).await?;
    native_rate(&runtime, setup, (n / 10).max(1)).await?;
    let (mut g, mut nat) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        g.push(guest_rate(&runtime, setup, &ns, n).await?);
        nat.push(native_rate(&runtime, setup, n).await?);
    }
    runtime.stop().await;
    Ok((median(g), median(nat)))
}

async fn throughput(args: &Args) -> anyhow::Result<()> {
    let setup = Setup {
        backend: args.str("backend", "embedded"),
        guest: args.str("guest", "noop"),
        batch: args.get("batch", 100)?,
        concurrency: args.get("concurrency", 1)?,
        size: args.get("size", 16)?,
        pooling: false,
    };
    let n = args.get("messages", 200_000)?;
    let (g, nat) = compare(&setup, n).await?;
    let size = match setup.guest.as_str() {
        "transform" => {
            let orders = inputs("transform", "t", 1000, 0);
            let mean = orders.iter().map(|m| m.data.len()).sum::<usize>() / orders.len();
            format!("{mean} B JSON")
        }
        _ => format!("{} B", setup.size),
    };
    println!(
        "| {} | {} | {} | {size} | {n} | {g:.0} | {nat:.0} | {:.2} |",
        setup.backend,
        setup.guest,
        setup.batch,
        g / nat
    );
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Publishes at `rate` for `seconds`; each message's data is its index.
/// Returns the send instants, by index.
async fn paced(
    backend: Arc<dyn Backend>,
    topic: String,
    rate: usize,
    seconds: u64,
) -> Vec<Instant> {
    let total = rate * seconds as usize;
    let mut sent = Vec::with_capacity(total);
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let per_ms = (rate / 1000).max(1);
    while sent.len() < total {
        tick.tick().await;
        for _ in 0..per_ms.min(total - sent.len()) {
            let i = sent.len();
            sent.push(Instant::now());
            backend
                .publish(vec![Message::new(topic.clone(), i.to_string())])
                .await
                .expect("publish");
        }
    }
    sent
}

/// Latency from publish to the output's arrival, sorted.
async fn observe(
    mut out: Box<dyn Subscription>,
    total: usize,
    sent: tokio::task::JoinHandle<Vec<Instant>>,
) -> anyhow::Result<Vec<Duration>> {
    let mut arrived = vec![None; total];
    let mut got = 0;
    while got < total {
        let d = tokio::time::timeout(Duration::from_secs(10), out.next())
            .await
            .with_context(|| format!("only {got} of {total} outputs arrived"))?
            .context("closed")??;
        let i: usize = std::str::from_utf8(&d.message.data)?.parse()?;
        if arrived[i].is_none() {
            arrived[i] = Some(Instant::now());
            got += 1;
        }
        d.acker.ack().await?;
    }
    let sent = sent.await?;
    let mut lat: Vec<Duration> = sent
        .iter()
        .zip(arrived)
        .map(|(s, a)| a.expect("arrived") - *s)
        .collect();
    lat.sort();
    Ok(lat)
}

async fn latency(args: &Args) -> anyhow::Result<()> {
    let setup = Setup {
        backend: args.str("backend", "embedded"),
        guest: "uppercase".into(),
        batch: args.get("batch", 100)?,
        concurrency: 1,
        size: 0,
        pooling: false,
    };
    let rate: usize = args.get("rate", 5000)?;
    let seconds: u64 = args.get("seconds", 5)?;
    let total = rate * seconds as usize;
    let ns = ns();
    let runtime = start(&setup, &ns).await?;
    let backend = runtime.clients().get("default").await?;
    let watch = |ch: String| {
        let backend = backend.clone();
        async move {
            backend
                .subscribe(SubscriptionSpec::broadcast(Pattern::parse(&ch)?))
                .await
                .map_err(anyhow::Error::from)
        }
    };

    // Through the guest.
    let out = watch(format!("{ns}.out")).await?;
    let sent = tokio::spawn(paced(backend.clone(), format!("{ns}.in"), rate, seconds));
    let guest = observe(out, total, sent).await?;

    // Through the native consumer doing the same.
    let out = watch(format!("{ns}.nout")).await?;
    let mut spec = SubscriptionSpec::broadcast(Pattern::parse(&format!("{ns}.nin"))?);
    spec.prefetch = 2 * setup.batch;
    let mut sub = backend.subscribe(spec).await?;
    let consumer = {
        let backend = backend.clone();
        let nout = format!("{ns}.nout");
        let batch = setup.batch;
        tokio::spawn(async move {
            native_consume(&backend, &mut sub, "uppercase", &nout, total, batch).await
        })
    };
    let sent = tokio::spawn(paced(backend.clone(), format!("{ns}.nin"), rate, seconds));
    let native = observe(out, total, sent).await?;
    consumer.await??;
    runtime.stop().await;

    let (g50, g99) = (percentile(&guest, 0.5), percentile(&guest, 0.99));
    let (n50, n99) = (percentile(&native, 0.5), percentile(&native, 0.99));
    let added =
        |g: Duration, n: Duration| format!("{:+.1} µs", (g.as_secs_f64() - n.as_secs_f64()) * 1e6);
    println!(
        "| {} | {rate}/s | {total} | {g50:.1?} | {g99:.1?} | {n50:.1?} | {n99:.1?} | {} | {} |",
        setup.backend,
        added(g50, n50),
        added(g99, n99),
    );
    Ok(())
}

/// Resident memory of this process, from /proc (Linux).
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(0)
        << 10
}

async fn instantiate(args: &Args) -> anyhow::Result<()> {
    let count: usize = args.get("count", 200)?;
    for pooling in [false, true] {
        let setup = Setup {
            backend: "embedded".into(),
            guest: "noop".into(),
            batch: 1,
            concurrency: 1,
            size: 16,
            pooling,
        };
        let ns = ns();
        let runtime = start(&setup, &ns).await?;
        let guest = runtime.guest("g").context("guest")?;
        // Warm up, then keep `count` idle instances alive.
        drop(guest.new_instance().await?);
        let rss = rss_bytes();
        let t = Instant::now();
        let mut held = Vec::with_capacity(count);
        for _ in 0..count {
            held.push(guest.new_instance().await?);
        }
        let per = t.elapsed() / count as u32;
        let mem = rss_bytes().saturating_sub(rss) / count as u64;
        drop(held);
        // Instantiating and dropping in turn, as a worker replacing a trapped
        // instance does.
        let t = Instant::now();
        for _ in 0..count {
            drop(guest.new_instance().await?);
        }
        let churn = t.elapsed() / count as u32;
        runtime.stop().await;
        println!(
            "| {} | {count} | {per:.1?} | {churn:.1?} | {:.1} KiB |",
            if pooling { "pooling" } else { "on-demand" },
            mem as f64 / 1024.0
        );
    }
    Ok(())
}

async fn scaling(args: &Args) -> anyhow::Result<()> {
    let backend = args.str("backend", "embedded");
    let n: usize = args.get("messages", 100_000)?;
    let base = Setup {
        backend: backend.clone(),
        guest: "noop".into(),
        batch: 100,
        concurrency: 1,
        size: 16,
        pooling: false,
    };
    println!("\nBatch size ({backend}, noop, 16 B):\n");
    println!("| batch | messages | guest msg/s | native msg/s | ratio |\n|---|---|---|---|---|");
    for batch in [1, 10, 100, 1000] {
        let setup = Setup {
            batch,
            ..base.clone()
        };
        let (g, nat) = compare(&setup, n).await?;
        println!("| {batch} | {n} | {g:.0} | {nat:.0} | {:.2} |", g / nat);
    }
    println!("\nMessage size ({backend}, noop, batch 100):\n");
    println!(
        "| size | messages | guest msg/s | native msg/s | guest MB/s | ratio |\n|---|---|---|---|---|---|"
    );
    for size in [16, 1024, 64 << 10, 1 << 20] {
        let m = (n * 1024 / size).clamp(200, n);
        let setup = Setup {
            size,
            ..base.clone()
        };
        let (g, nat) = compare(&setup, m).await?;
        println!(
            "| {size} B | {m} | {g:.0} | {nat:.0} | {:.1} | {:.2} |",
            g * size as f64 / 1e6,
            g / nat
        );
    }
    println!("\nConcurrency ({backend}, uppercase, batch 100; instances per guest):\n");
    println!(
        "| instances | messages | guest msg/s | native msg/s | ratio |\n|---|---|---|---|---|"
    );
    for concurrency in [1, 2, 4] {
        let setup = Setup {
            guest: "uppercase".into(),
            concurrency,
            ..base.clone()
        };
        let (g, nat) = compare(&setup, n).await?;
        println!(
            "| {concurrency} | {n} | {g:.0} | {nat:.0} | {:.2} |",
            g / nat
        );
    }
    Ok(())
}

/// Publishing to a stored (point-to-point) queue of the embedded broker with
/// each sync policy, beside the in-memory broker: what durability costs.
async fn durable(args: &Args) -> anyhow::Result<()> {
    use courier_embedded::EmbeddedBroker;
    use courier_embedded::SyncPolicy;
    let n: usize = args.get("messages", 20_000)?;
    let dir = tempfile::tempdir()?;
    let mut memory_rate = BTreeMap::new();
    for publishers in [1usize, 16] {
        for (i, sync) in ["memory", "os", "always"].into_iter().enumerate() {
            let broker = match sync {
                "memory" => EmbeddedBroker::new(),
                "os" => EmbeddedBroker::open(
                    &dir.path().join(format!("os{publishers}")),
                    SyncPolicy::Os,
                )?,
                _ => EmbeddedBroker::open(
                    &dir.path().join(format!("always{publishers}")),
                    SyncPolicy::Always,
                )?,
            };
            let backend: Arc<dyn Backend> = Arc::new(broker);
            let mut sub = backend
                .subscribe(SubscriptionSpec::competing(Pattern::parse("d.in")?, "g"))
                .await?;
            let per = n / publishers;
            let total = per * publishers;
            // A consumer acknowledges as fast as it can, as a guest would.
            let consumer = tokio::spawn(async move {
                for _ in 0..total {
                    let d = sub.next().await.expect("open").expect("delivery");
                    d.acker.ack().await.expect("ack");
                }
            });
            let start = Instant::now();
            let tasks: Vec<_> = (0..publishers)
                .map(|_| {
                    let backend = backend.clone();
                    tokio::spawn(async move {
                        for _ in 0..per {
                            backend
                                .publish(vec![Message::new("d.in", payload(16))])
                                .await
                                .expect("publish");
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await?;
            }
            let rate = total as f64 / start.elapsed().as_secs_f64();
            consumer.await?;
            if i == 0 {
                memory_rate.insert(publishers, rate);
            }
            println!(
                "| {sync} | {publishers} | {total} | {rate:.0} | {:.3} |",
                rate / memory_rate[&publishers]
            );
        }
    }
    Ok(())
}

const DURABLE_HEAD: &str = "| sync | concurrent publishers | messages (one per send) | send msg/s | ratio to in-memory |\n|---|---|---|---|---|";
const THROUGHPUT_HEAD: &str = "| broker | work | batch | size | messages | guest msg/s | native msg/s | ratio |\n|---|---|---|---|---|---|---|---|";
const LATENCY_HEAD: &str = "| broker | rate | messages | guest p50 | guest p99 | native p50 | native p99 | added p50 | added p99 |\n|---|---|---|---|---|---|---|---|---|";
const INSTANTIATE_HEAD: &str = "| allocator | instances | instantiate (kept) | instantiate + drop | memory per idle instance |\n|---|---|---|---|---|";

fn args_of(list: &[&str]) -> Args {
    Args(
        list.iter()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let what = argv.first().map_or("all", String::as_str);
    let rest: Vec<&str> = argv.iter().skip(1).map(String::as_str).collect();
    let args = args_of(&rest);
    let nats = args.str("nats", "yes") != "no";
    match what {
        "throughput" => {
            println!("{THROUGHPUT_HEAD}");
            throughput(&args).await
        }
        "latency" => {
            println!("{LATENCY_HEAD}");
            latency(&args).await
        }
        "instantiate" => {
            println!("{INSTANTIATE_HEAD}");
            instantiate(&args).await
        }
        "scaling" => scaling(&args).await,
        "durable" => {
            println!("{DURABLE_HEAD}");
            durable(&args).await
        }
        "all" => {
            println!("Throughput:\n\n{THROUGHPUT_HEAD}");
            let backends: &[&str] = if nats {
                &["embedded", "nats"]
            } else {
                &["embedded"]
            };
            for backend in backends {
                let n = if *backend == "nats" {
                    "50000"
                } else {
                    "200000"
                };
                for guest in ["noop", "uppercase"] {
                    throughput(&args_of(&[
                        &format!("backend={backend}"),
                        &format!("guest={guest}"),
                        &format!("messages={n}"),
                    ]))
                    .await?;
                }
            }
            // The realistic workload: JSON orders parsed, validated,
            // enriched and sent on.
            let transform_on: &[(&str, &str)] = if nats {
                &[("embedded", "200000"), ("jetstream", "20000")]
            } else {
                &[("embedded", "200000")]
            };
            for (backend, n) in transform_on {
                throughput(&args_of(&[
                    &format!("backend={backend}"),
                    "guest=transform",
                    &format!("messages={n}"),
                ]))
                .await?;
            }
            println!("\nLatency (uppercase, batch 100):\n\n{LATENCY_HEAD}");
            for backend in backends {
                latency(&args_of(&[&format!("backend={backend}")])).await?;
            }
            println!("\nInstantiation (noop):\n\n{INSTANTIATE_HEAD}");
            instantiate(&args).await?;
            println!("\nDurable embedded broker (16 B messages):\n\n{DURABLE_HEAD}");
            durable(&args).await?;
            scaling(&args_of(&["backend=embedded"])).await
        }
        other => {
            bail!(
                "unknown benchmark `{other}` \
                 (throughput, latency, instantiate, scaling, durable, all)"
            )
        }
    }
}
