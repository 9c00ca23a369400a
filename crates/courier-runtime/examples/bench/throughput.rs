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

/// Which sides a run measures: both (the ratio), or one alone, for a
/// count of its own work (`scripts/instructions.sh` runs each alone under
/// callgrind).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Both,
    Guest,
    Native,
}

impl Side {
    fn of(args: &Args) -> anyhow::Result<Self> {
        match args.str("side", "both").as_str() {
            "both" => Ok(Self::Both),
            "guest" => Ok(Self::Guest),
            "native" => Ok(Self::Native),
            other => bail!("bad value `{other}` for `side` (both, guest or native)"),
        }
    }

    fn guest(self) -> bool {
        self != Self::Native
    }

    fn native(self) -> bool {
        self != Self::Guest
    }
}

/// (guest msg/s, native msg/s): medians of alternating rounds after a
/// warm-up of a tenth of `n`, for the sides asked for (`NaN` for the other).
pub(crate) async fn compare(setup: &Setup, n: usize, side: Side) -> anyhow::Result<(f64, f64)> {
    let ns = ns();
    let runtime = start(setup, &ns).await?;
    let warm_up = (n / 10).max(1);
    if side.guest() {
        guest_rate(&runtime, setup, &ns, warm_up).await?;
    }
    if side.native() {
        native_rate(&runtime, setup, warm_up).await?;
    }
    let (mut g, mut nat) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        if side.guest() {
            g.push(guest_rate(&runtime, setup, &ns, n).await?);
        }
        if side.native() {
            nat.push(native_rate(&runtime, setup, n).await?);
        }
    }
    runtime.stop().await;
    // For the scripts that turn a whole run's cost into a cost per message
    // (scripts/profile.sh, scripts/instructions.sh): on stderr, apart from
    // the table.
    eprintln!(
        "throughput: {} messages through each side measured",
        warm_up + ROUNDS * n
    );
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
    let (g, nat) = compare(&setup, n, Side::of(args)?).await?;
    let size = match setup.guest.as_str() {
        "transform" => {
            let orders = inputs("transform", "t", 1000, 0);
            let mean = orders.iter().map(|m| m.data.len()).sum::<usize>() / orders.len();
            format!("{mean} B JSON")
        }
        _ => format!("{} B", setup.size),
    };
    // A side not measured shows as `-`, and so does the ratio.
    let shown = |x: f64, digits: usize| match x.is_nan() {
        true => "-".to_string(),
        false => format!("{x:.digits$}"),
    };
    println!(
        "| {} | {} | {} | {size} | {n} | {} | {} | {} |",
        setup.backend,
        setup.guest,
        setup.batch,
        shown(g, 0),
        shown(nat, 0),
        shown(g / nat, 2)
    );
    Ok(())
}

pub(crate) const THROUGHPUT_HEAD: &str = "| broker | work | batch | size | messages | guest msg/s | native msg/s | ratio |\n|---|---|---|---|---|---|---|---|";
