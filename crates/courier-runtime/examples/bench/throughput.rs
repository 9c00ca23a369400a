//! Throughput: messages per second through the guest and through the native
//! consumer, in alternating rounds.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use courier_broker::{Pattern, SubscriptionSpec};
use courier_runtime::Runtime;

use crate::args::Args;
use crate::harness::{Setup, inputs, median, native_consume, ns, publish, start};

pub(crate) const ROUNDS: usize = 3;

/// Messages per second through the guest.
pub(crate) async fn guest_rate(
    runtime: &Runtime,
    setup: &Setup,
    ns: &str,
    n: usize,
) -> anyhow::Result<f64> {
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

/// Messages per second through the native consumer.
pub(crate) async fn native_rate(runtime: &Runtime, setup: &Setup, n: usize) -> anyhow::Result<f64> {
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

/// (guest msg/s, native msg/s): medians of alternating rounds after a warm-up.
pub(crate) async fn compare(setup: &Setup, n: usize) -> anyhow::Result<(f64, f64)> {
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

pub(crate) async fn throughput(args: &Args) -> anyhow::Result<()> {
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

pub(crate) const THROUGHPUT_HEAD: &str = "| broker | work | batch | size | messages | guest msg/s | native msg/s | ratio |\n|---|---|---|---|---|---|---|---|";
