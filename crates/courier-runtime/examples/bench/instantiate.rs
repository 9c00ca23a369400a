//! Instantiation: the cost of an instance, and its memory when idle.

use std::time::Instant;

use anyhow::Context;

use crate::args::Args;
use crate::harness::{Setup, ns, rss_bytes, start};

pub(crate) async fn instantiate(args: &Args) -> anyhow::Result<()> {
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

pub(crate) const INSTANTIATE_HEAD: &str = "| allocator | instances | instantiate (kept) | instantiate + drop | memory per idle instance |\n|---|---|---|---|---|";
