//! Scaling: batch size, message size and concurrency.

use crate::args::Args;
use crate::harness::Setup;
use crate::throughput::compare;

pub(crate) async fn scaling(args: &Args) -> anyhow::Result<()> {
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
