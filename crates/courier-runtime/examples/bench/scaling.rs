//! Scaling: batch size, message size (up to the default `max-message-bytes`,
//! 1 MiB) and concurrency (instances per guest, 1–8), each as a table and,
//! with `chart=DIR`, as an SVG chart in DIR (`scaling-batch.svg`,
//! `scaling-size.svg`, `scaling-concurrency.svg`).

use plotters::prelude::RED;

use crate::args::Args;
use crate::chart::{self, GREEN, Panel, Series};
use crate::harness::Setup;
use crate::throughput::{Side, compare};

/// One point of a sweep: the swept value and the two rates.
struct Point {
    x: usize,
    guest: f64,
    native: f64,
}

pub(crate) async fn scaling(args: &Args) -> anyhow::Result<()> {
    let backend = args.str("backend", "embedded");
    let n: usize = args.get("messages", 100_000)?;
    let dir = args.str("chart", "");
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
    let mut batches = Vec::new();
    for batch in [1, 10, 100, 1000] {
        let setup = Setup {
            batch,
            ..base.clone()
        };
        let (guest, native) = compare(&setup, n, Side::Both).await?;
        println!(
            "| {batch} | {n} | {guest:.0} | {native:.0} | {:.2} |",
            guest / native
        );
        batches.push(Point {
            x: batch,
            guest,
            native,
        });
    }

    println!("\nMessage size ({backend}, noop, batch 100):\n");
    println!(
        "| size | messages | guest msg/s | native msg/s | guest MB/s | ratio |\n|---|---|---|---|---|---|"
    );
    let mut sizes = Vec::new();
    for size in [
        16,
        256,
        1 << 10,
        4 << 10,
        16 << 10,
        64 << 10,
        256 << 10,
        1 << 20,
    ] {
        let m = (n * 1024 / size).clamp(200, n);
        let setup = Setup {
            size,
            ..base.clone()
        };
        let (guest, native) = compare(&setup, m, Side::Both).await?;
        println!(
            "| {size} B | {m} | {guest:.0} | {native:.0} | {:.1} | {:.2} |",
            guest * size as f64 / 1e6,
            guest / native
        );
        sizes.push(Point {
            x: size,
            guest,
            native,
        });
    }

    println!("\nConcurrency ({backend}, uppercase, batch 100; instances per guest):\n");
    println!(
        "| instances | messages | guest msg/s | native msg/s | ratio |\n|---|---|---|---|---|"
    );
    let mut instances = Vec::new();
    for concurrency in [1, 2, 4, 8] {
        let setup = Setup {
            guest: "uppercase".into(),
            concurrency,
            ..base.clone()
        };
        let (guest, native) = compare(&setup, n, Side::Both).await?;
        println!(
            "| {concurrency} | {n} | {guest:.0} | {native:.0} | {:.2} |",
            guest / native
        );
        instances.push(Point {
            x: concurrency,
            guest,
            native,
        });
    }

    if !dir.is_empty() {
        let path = |name: &str| format!("{}/{name}", dir.trim_end_matches('/'));
        chart::draw(
            &path("scaling-batch.svg"),
            &sweep(
                &batches,
                &format!("Batch size ({backend}, noop, 16 B)"),
                "batch size (log scale)",
                chart::whole,
                false,
            ),
        )?;
        chart::draw(
            &path("scaling-size.svg"),
            &sweep(
                &sizes,
                &format!("Message size ({backend}, noop, batch 100)"),
                "message size (log scale)",
                chart::bytes,
                true,
            ),
        )?;
        chart::draw(
            &path("scaling-concurrency.svg"),
            &sweep(
                &instances,
                &format!("Instances per guest ({backend}, uppercase)"),
                "instances per guest (log scale)",
                chart::whole,
                false,
            ),
        )?;
        println!("\ncharts written to {dir}");
    }
    Ok(())
}

/// A sweep's two panels: the rates (messages per second, or MB/s when x is
/// a message size, `in_bytes`) and the ratio.
fn sweep(
    points: &[Point],
    title: &str,
    x_desc: &'static str,
    x_label: fn(f64) -> String,
    in_bytes: bool,
) -> [Panel; 2] {
    let rate = |r: f64, x: usize| if in_bytes { r * x as f64 / 1e6 } else { r };
    let rates = Panel {
        caption: title.to_string(),
        x_desc,
        y_desc: if in_bytes {
            "MB per second"
        } else {
            "thousand messages per second"
        },
        x_label,
        y_label: if in_bytes {
            |y| format!("{y:.0}")
        } else {
            chart::thousands
        },
        series: vec![
            Series {
                label: "guest",
                color: RED,
                points: points
                    .iter()
                    .map(|p| (p.x as f64, rate(p.guest, p.x)))
                    .collect(),
            },
            Series {
                label: "native consumer",
                color: GREEN,
                points: points
                    .iter()
                    .map(|p| (p.x as f64, rate(p.native, p.x)))
                    .collect(),
            },
        ],
    };
    let ratio = Panel {
        caption: "guest / native".into(),
        x_desc,
        y_desc: "ratio",
        x_label,
        y_label: chart::two_decimals,
        series: vec![Series {
            label: "guest / native",
            color: RED,
            points: points
                .iter()
                .map(|p| (p.x as f64, p.guest / p.native))
                .collect(),
        }],
    };
    [rates, ratio]
}
