//! Publish cost on the embedded broker against the number of subscriptions,
//! with the subject index, beside a linear scan of the same patterns (what
//! every publish did before the index) in the same run.
//!
//! ```sh
//! cargo run --release -p courier-embedded --example subjects -- docs/perf/subscriptions.svg
//! ```
//!
//! For each N, a fresh broker gets N broadcast subscriptions that do not
//! match the published topic (`orders.{i}.created`, `orders.*.{i}` and
//! `audit.{i}.>` in turn, i = 1..=N) and 4 that do (`orders.0.created`,
//! `orders.*.created`, `orders.0.>`, `orders.>`). Every message goes to
//! `orders.0.created`, so each publish feeds the same 4 queues whatever N
//! is; those 4 are drained (taken and acknowledged) between timed publishes,
//! so no queue grows, and the N others never receive anything. Figures are
//! the median of 5 rounds. It prints a Markdown table and writes the curves
//! as an SVG chart to the path given (default `subscriptions.svg`).

use std::error::Error;
use std::hint::black_box;
use std::time::{Duration, Instant};

use courier_broker::{Backend, Message, Pattern, Subscription, SubscriptionSpec};
use courier_embedded::EmbeddedBroker;
use courier_embedded::subjects::Subjects;
use plotters::prelude::*;

/// The numbers of subscriptions that do not match, besides the 4 that do.
const SIZES: [usize; 6] = [1, 10, 100, 1_000, 10_000, 100_000];
const TOPIC: &str = "orders.0.created";
const MATCHING: [&str; 4] = [
    "orders.0.created",
    "orders.*.created",
    "orders.0.>",
    "orders.>",
];
const BATCH: usize = 100;
/// Batches of `BATCH` messages per round.
const BATCHES: usize = 100;
/// Publishes of one message per round, drained every `BATCH`.
const SINGLES: usize = 2_000;
const ROUNDS: usize = 5;

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// The `i`th subscription that does not match `TOPIC` (`i` from 1).
fn other(i: usize) -> String {
    match i % 3 {
        0 => format!("orders.{i}.created"),
        1 => format!("orders.*.{i}"),
        _ => format!("audit.{i}.>"),
    }
}

/// One row of the table: nanoseconds unless said otherwise.
struct Row {
    n: usize,
    /// `publish` of batches of `BATCH` messages, per message.
    batch_per_message: f64,
    /// `publish` of one message.
    single: f64,
    /// The index's lookup of `TOPIC`, from its cache (what a publish does).
    cached: f64,
    /// The index's lookup of `TOPIC` by walking the trie (a cache miss).
    walk: f64,
    /// `Pattern::matches` on every pattern: the old publish's matching.
    scan: f64,
    /// `subscribe`, per subscription, while setting up.
    subscribe: f64,
    /// Growth of the resident set while subscribing, in bytes.
    rss_growth: Option<u64>,
    /// Growth of the resident set while building the index alone.
    index_rss_growth: Option<u64>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "subscriptions.svg".into());
    // Largest first, so that its memory is measured on a heap that nothing
    // was freed into yet.
    let mut rows = Vec::new();
    for &n in SIZES.iter().rev() {
        let row = measure(n).await?;
        eprintln!(
            "N = {n}: publish {:.0} ns/message (batches), {:.0} ns (1 message), scan {:.0} ns",
            row.batch_per_message, row.single, row.scan
        );
        rows.push(row);
    }
    rows.reverse();
    print_table(&rows);
    chart(&rows, &out)?;
    println!("\nChart written to {out}.");
    Ok(())
}

async fn measure(n: usize) -> Result<Row> {
    let patterns: Vec<Pattern> = MATCHING
        .iter()
        .map(|p| p.to_string())
        .chain((1..=n).map(other))
        .map(|p| Pattern::parse(&p))
        .collect::<std::result::Result<_, _>>()?;

    let broker = EmbeddedBroker::new();
    let rss_before = rss();
    let started = Instant::now();
    let mut subs = Vec::with_capacity(patterns.len());
    for pattern in &patterns {
        subs.push(
            broker
                .subscribe(SubscriptionSpec::broadcast(pattern.clone()))
                .await?,
        );
    }
    let subscribe = started.elapsed().as_nanos() as f64 / patterns.len() as f64;
    let rss_growth = rss_before.zip(rss()).map(|(b, a)| a.saturating_sub(b));
    // The first 4 match; the others are held, never receiving anything.
    let matching = &mut subs[..MATCHING.len()];

    // The same patterns in the index alone, and in a Vec for the scan.
    let rss_before = rss();
    let mut index = Subjects::new();
    for (id, pattern) in (0..).zip(&patterns) {
        index.insert(pattern, id, id);
    }
    let index_rss_growth = rss_before.zip(rss()).map(|(b, a)| a.saturating_sub(b));
    if index.find(TOPIC).len() != MATCHING.len() || scan(&patterns) != MATCHING.len() {
        return Err("the topic does not match exactly the 4 matching patterns".into());
    }
    // Enough scans for about two million pattern matches per round.
    let scans = (2_000_000 / patterns.len()).max(5);
    let lookups = 100_000;

    let template = Message::new(TOPIC, "0123456789abcdef");
    let mut rounds: Vec<[f64; 5]> = Vec::new();
    // One warm-up round, not counted.
    for round in 0..=ROUNDS {
        // Batches of BATCH messages: each publish timed alone.
        let mut spent = Duration::ZERO;
        for _ in 0..BATCHES {
            let batch = vec![template.clone(); BATCH];
            let t = Instant::now();
            broker.publish(batch).await?;
            spent += t.elapsed();
            drain(matching, BATCH).await?;
        }
        let batch_per_message = spent.as_nanos() as f64 / (BATCHES * BATCH) as f64;

        // One message per publish: timed BATCH publishes at a time.
        let mut spent = Duration::ZERO;
        for _ in 0..SINGLES / BATCH {
            let singles: Vec<Vec<Message>> = (0..BATCH).map(|_| vec![template.clone()]).collect();
            let t = Instant::now();
            for m in singles {
                broker.publish(m).await?;
            }
            spent += t.elapsed();
            drain(matching, BATCH).await?;
        }
        let single = spent.as_nanos() as f64 / (SINGLES / BATCH * BATCH) as f64;

        let t = Instant::now();
        for _ in 0..lookups {
            black_box(index.lookup(black_box(TOPIC)));
        }
        let cached = t.elapsed().as_nanos() as f64 / lookups as f64;

        let t = Instant::now();
        for _ in 0..lookups {
            black_box(index.find(black_box(TOPIC)));
        }
        let walk = t.elapsed().as_nanos() as f64 / lookups as f64;

        let t = Instant::now();
        for _ in 0..scans {
            black_box(scan(black_box(&patterns)));
        }
        let scan = t.elapsed().as_nanos() as f64 / scans as f64;

        if round > 0 {
            rounds.push([batch_per_message, single, cached, walk, scan]);
        }
    }
    if broker.held() != 0 {
        return Err(format!("{} messages left in queues", broker.held()).into());
    }
    let median = |k: usize| {
        let mut v: Vec<f64> = rounds.iter().map(|r| r[k]).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Ok(Row {
        n,
        batch_per_message: median(0),
        single: median(1),
        cached: median(2),
        walk: median(3),
        scan: median(4),
        subscribe,
        rss_growth,
        index_rss_growth,
    })
}

/// What publish did before the index, for one topic: every pattern tried.
fn scan(patterns: &[Pattern]) -> usize {
    patterns.iter().filter(|p| p.matches(TOPIC)).count()
}

/// Takes and acknowledges `count` messages on each subscription.
async fn drain(subs: &mut [Box<dyn Subscription>], count: usize) -> Result<()> {
    for sub in subs {
        let mut got = 0;
        while got < count {
            let batch = tokio::time::timeout(Duration::from_secs(10), sub.next_batch(count - got))
                .await
                .map_err(|_| "a matching subscription got fewer messages than published")?
                .ok_or("a subscription closed")??;
            got += batch.len();
            for d in batch {
                d.acker.ack().await?;
            }
        }
    }
    Ok(())
}

/// The resident set size of this process, in bytes (Linux).
fn rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn print_table(rows: &[Row]) {
    println!(
        "Subscriptions: N that do not match the topic, plus 4 that do. Times in ns, \
         median of {ROUNDS} rounds.\n\
         - publish/msg (batch {BATCH}): `publish` of {BATCH} messages to the topic, per message\n\
         - publish (1 msg): `publish` of one message\n\
         - index, cached: the subject index's lookup of the topic, from its cache (as publish does)\n\
         - index, walk: the same lookup through the trie, bypassing the cache (a cache miss)\n\
         - linear scan: `Pattern::matches` on all N + 4 patterns, which publish did before the index \
         once per topic in each publish\n\
         - scan / walk: the old matching cost over the index's worst case\n"
    );
    println!(
        "| N | publish/msg (batch {BATCH}) | publish (1 msg) | index, cached | index, walk | linear scan | scan / walk | subscribe, each |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {:.0} | {:.0} |",
            thousands(r.n as u64),
            r.batch_per_message,
            r.single,
            r.cached,
            r.walk,
            thousands(r.scan.round() as u64),
            r.scan / r.walk,
            r.subscribe,
        );
    }
    if let Some(r) = rows.last()
        && let Some(bytes) = r.rss_growth
    {
        println!(
            "\nResident memory grew by {:.1} MiB while making {} subscriptions \
             ({} bytes each: queue, subscription and index entry).",
            bytes as f64 / (1024.0 * 1024.0),
            thousands((r.n + MATCHING.len()) as u64),
            bytes / (r.n + MATCHING.len()) as u64,
        );
        if let Some(index) = r.index_rss_growth {
            println!(
                "The same patterns in an index of their own took {:.1} MiB ({} bytes each).",
                index as f64 / (1024.0 * 1024.0),
                index / (r.n + MATCHING.len()) as u64,
            );
        }
    }
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A curve of the chart: its label, its figure of a row, its colour.
type Series = (&'static str, fn(&Row) -> f64, RGBColor);

fn chart(rows: &[Row], path: &str) -> Result<()> {
    let series: [Series; 5] = [
        (
            "linear scan of all patterns (before the index)",
            |r| r.scan,
            RED,
        ),
        ("publish, 1 message", |r| r.single, BLUE),
        (
            "publish, per message in batches of 100",
            |r| r.batch_per_message,
            RGBColor(0, 140, 0),
        ),
        ("index lookup, trie walk (cache miss)", |r| r.walk, MAGENTA),
        (
            "index lookup, cached",
            |r| r.cached,
            RGBColor(120, 120, 120),
        ),
    ];
    let values = rows
        .iter()
        .flat_map(|r| series.iter().map(move |(_, f, _)| f(r)));
    let (lo, hi) = values.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let max_n = rows.iter().map(|r| r.n).max().unwrap_or(1) as f64;

    let root = SVGBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Embedded broker: publish cost against the number of subscriptions",
            ("sans-serif", 22),
        )
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(
            (0.7..max_n * 1.5).log_scale(),
            (lo.max(1.0) / 2.0..hi * 2.0).log_scale(),
        )?;
    chart
        .configure_mesh()
        .x_desc("subscriptions that do not match (4 more match)")
        .y_desc("nanoseconds (log scale)")
        .x_label_formatter(&|x| thousands(x.round() as u64))
        .y_label_formatter(&|y| thousands(y.round() as u64))
        .draw()?;
    for (label, f, color) in series {
        let points: Vec<(f64, f64)> = rows.iter().map(|r| (r.n as f64, f(r))).collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart.draw_series(
            points
                .into_iter()
                .map(|p| Circle::new(p, 3, color.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
