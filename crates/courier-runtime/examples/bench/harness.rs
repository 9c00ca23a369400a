//! What every benchmark shares: a runtime with one guest, the messages of
//! each work, the publisher, and the native consumer doing the same work.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use courier_broker::{Backend, Delivery, ErrorKind, Message, Subscription};
use courier_runtime::{Config, Runtime};
use futures::FutureExt;

pub(crate) fn client_toml(backend: &str) -> anyhow::Result<&'static str> {
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
pub(crate) struct Setup {
    pub(crate) backend: String,
    pub(crate) guest: String,
    pub(crate) batch: usize,
    pub(crate) concurrency: usize,
    pub(crate) size: usize,
    pub(crate) pooling: bool,
}

pub(crate) fn ns() -> String {
    format!("bench.r{}x{}", std::process::id(), rand::random::<u32>())
}

/// A runtime running the guest of `setup` on `{ns}.in`, sending to `{ns}.out`.
pub(crate) async fn start(setup: &Setup, ns: &str) -> anyhow::Result<Runtime> {
    if setup.backend == "jetstream" {
        drop_stream().await?;
    }
    let runtime = Runtime::new(config(setup, ns)?)?;
    runtime.start().await?;
    Ok(runtime)
}

/// Deletes the benchmark's in-memory stream, which keeps every message
/// published to it: left from run to run, it grows the server by gigabytes.
/// The host makes it again at start.
async fn drop_stream() -> anyhow::Result<()> {
    let client = async_nats::connect("nats://127.0.0.1:4222").await?;
    let js = async_nats::jetstream::new(client);
    if js.get_stream(BENCH_STREAM).await.is_ok() {
        js.delete_stream(BENCH_STREAM)
            .await
            .map_err(|e| anyhow::anyhow!("deleting the stream {BENCH_STREAM}: {e}"))?;
    }
    Ok(())
}

/// The stream of the `jetstream` backend (see [`client_toml`]).
const BENCH_STREAM: &str = "COURIER_BENCH";

/// The configuration [`start`] runs: one guest, `g`.
pub(crate) fn config(setup: &Setup, ns: &str) -> anyhow::Result<Config> {
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
    Ok(config)
}

pub(crate) fn payload(size: usize) -> Vec<u8> {
    (0..size).map(|i| b'a' + (i % 26) as u8).collect()
}

/// The messages the work `work` takes: JSON orders of a few hundred bytes
/// for `transform` (each different), else `size` bytes of letters.
pub(crate) fn inputs(work: &str, topic: &str, n: usize, size: usize) -> Vec<Message> {
    (0..1000.min(n).max(1))
        .map(|i| match work {
            "transform" => Message::new(topic, orders::sample(i)),
            _ => Message::new(topic, payload(size)),
        })
        .collect()
}

/// Publishes `n` messages for `work` on `topic`, in chunks.
pub(crate) async fn publish(
    backend: Arc<dyn Backend>,
    topic: String,
    work: String,
    n: usize,
    size: usize,
) {
    let chunk = inputs(&work, &topic, n, size);
    let mut sent = 0;
    while sent < n {
        let k = chunk.len().min(n - sent);
        match backend.publish(chunk[..k].to_vec()).await {
            Ok(()) => sent += k,
            // The queue is at its bound (the consumer is behind): back-pressure,
            // as any client gets it; try again shortly.
            Err(e) if e.kind() == ErrorKind::Busy => {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(e) => panic!("publish: {e}"),
        }
    }
}

/// Up to `max` deliveries: waits for the first, takes what else is ready,
/// through `next_batch` as the host's pump does (on JetStream one pull
/// request for many messages, on the embedded broker one lock).
pub(crate) async fn take_batch(
    sub: &mut Box<dyn Subscription>,
    max: usize,
) -> anyhow::Result<Vec<Delivery>> {
    let mut batch = tokio::time::timeout(Duration::from_secs(10), sub.next_batch(max))
        .await
        .context("no message for 10 s")?
        .context("subscription closed")??;
    while batch.len() < max {
        match sub.next_batch(max - batch.len()).now_or_never() {
            Some(Some(more)) => batch.extend(more?),
            _ => break,
        }
    }
    Ok(batch)
}

/// The native consumer: the same work as guest `work` on `backend`.
pub(crate) async fn native_consume(
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
                    // The `uppercase` guest's very conversion (Unicode, of
                    // the data read as lossy UTF-8).
                    let upper = String::from_utf8_lossy(&d.message.data).to_uppercase();
                    let mut m = Message::new(out, upper.into_bytes());
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
        // Acked together, as the host does (`ack_all`: in one step where
        // the broker allows it; on a broker whose ack is a round trip,
        // JetStream, one by one would measure the round trips).
        for r in courier_broker::ack_all(ds.into_iter().map(|d| d.acker).collect()).await {
            r?;
        }
    }
    Ok(())
}

/// The median of `v`; `NaN` when it is empty (a side not measured).
pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Resident memory of this process, from /proc (Linux).
pub(crate) fn rss_bytes() -> u64 {
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
