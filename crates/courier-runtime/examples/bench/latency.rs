//! Latency: publish to output at a paced rate, through the guest and
//! through the native consumer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use courier_broker::{Backend, Message, Pattern, Subscription, SubscriptionSpec};

use crate::args::Args;
use crate::harness::{Setup, native_consume, ns, start};

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Publishes at `rate` for `seconds`; each message's data is its index.
/// Returns the send instants, by index.
pub(crate) async fn paced(
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
pub(crate) async fn observe(
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

pub(crate) async fn latency(args: &Args) -> anyhow::Result<()> {
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

pub(crate) const LATENCY_HEAD: &str = "| broker | rate | messages | guest p50 | guest p99 | native p50 | native p99 | added p50 | added p99 |\n|---|---|---|---|---|---|---|---|---|";
