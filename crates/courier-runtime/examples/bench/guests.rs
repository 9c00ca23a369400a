//! One host, many guests: for 1, 10, 100 and 1,000 `noop` guests, each on
//! its own channel, the start time (with compiled code from the cache, and
//! cold, without the cache), the resident memory and the aggregate
//! throughput, beside as many native subscriptions on the same broker.
//!
//! Each guest count runs in a child process (this binary again, with
//! `only=G`), so that one count's memory is not counted in, or hidden by,
//! what the one before left to the allocator.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use courier_broker::{Backend, ErrorKind, Message, Pattern, SubscriptionSpec};
use courier_runtime::{Config, Runtime};
use plotters::prelude::{BLUE, MAGENTA, RED};

use crate::args::Args;
use crate::chart::{self, Panel, Series};
use crate::harness::{median, ns, payload, rss_bytes, take_batch};
use crate::throughput::ROUNDS;

pub(crate) const GUESTS_HEAD: &str = "| guests | start ms | cold start ms | RSS MiB | RSS per guest KiB | added per guest KiB | guest msg/s | native msg/s | ratio |\n|---|---|---|---|---|---|---|---|---|";

const BATCH: usize = 100;

/// One guest count's figures.
struct Row {
    guests: usize,
    /// From configuration to running, compiled code from the cache.
    start_s: f64,
    /// The same without the compilation cache.
    cold_s: f64,
    rss: u64,
    guest: f64,
    native: f64,
}

impl Row {
    fn per_guest_kib(&self) -> f64 {
        self.rss as f64 / 1024.0 / self.guests as f64
    }
    /// What each guest beyond the first adds, against the run with one
    /// guest (which carries the fixed cost: engine, broker, compiled code).
    fn added_kib(&self, one: Option<&Row>) -> Option<f64> {
        let one = one.filter(|o| o.guests == 1 && self.guests > 1)?;
        Some(self.rss.saturating_sub(one.rss) as f64 / 1024.0 / (self.guests - 1) as f64)
    }
}

/// `guests i` on `{ns}.g{i}`: the `noop` component, a small memory limit;
/// `cold`: without the compilation cache (the component is compiled at
/// start, as on a first run).
fn config(guests: usize, ns: &str, cold: bool) -> anyhow::Result<Config> {
    let mut toml = format!(
        "[host]\nsummary-secs = 0\ncompile-cache = {}\n[clients.default]\nbackend = \"embedded\"\n",
        !cold
    );
    for i in 0..guests {
        toml.push_str(&format!(
            "[guests.g{i}]\ncomponent = \"{component}\"\nsubscribe = [\"{ns}.g{i}\"]\n\
             batch-size = {BATCH}\nconcurrency = 1\nmemory-limit-mib = 16\n",
            component = test_programs::NOOP,
        ));
    }
    Ok(Config::from_toml(&toml)?)
}

/// Publishes `n` messages of 16 bytes round-robin over `topics`, in chunks,
/// waiting while the broker is busy.
async fn publish_spread(backend: Arc<dyn Backend>, topics: Vec<String>, n: usize) {
    let data = payload(16);
    let mut sent = 0;
    while sent < n {
        let k = 1000.min(n - sent);
        let chunk: Vec<Message> = (sent..sent + k)
            .map(|j| Message::new(&topics[j % topics.len()], data.clone()))
            .collect();
        loop {
            match backend.publish(chunk.clone()).await {
                Ok(()) => break,
                Err(e) if e.kind() == ErrorKind::Busy => {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(e) => panic!("publish: {e}"),
            }
        }
        sent += k;
    }
}

fn topics(ns: &str, g: usize) -> Vec<String> {
    (0..g).map(|i| format!("{ns}.g{i}")).collect()
}

/// Messages per second through all the guests together.
async fn guest_rate(runtime: &Runtime, ns: &str, n: usize) -> anyhow::Result<f64> {
    let accepted = || -> u64 { runtime.guests().iter().map(|g| g.stats().accepted).sum() };
    let backend = runtime.clients().get("default").await?;
    let before = accepted();
    let start = Instant::now();
    let publisher = tokio::spawn(publish_spread(
        backend,
        topics(ns, runtime.guests().len()),
        n,
    ));
    let deadline = start + Duration::from_secs(300);
    while accepted() < before + n as u64 {
        if Instant::now() > deadline {
            bail!("only {} of {n} messages arrived", accepted() - before);
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    publisher.await?;
    if accepted() != before + n as u64 {
        bail!("{} messages accepted, {n} published", accepted() - before);
    }
    Ok(rate)
}

/// Messages per second through `g` native broadcast subscriptions, one task
/// each, taking and acknowledging batches as the host does.
async fn native_rate(runtime: &Runtime, g: usize, n: usize) -> anyhow::Result<f64> {
    let backend = runtime.clients().get("default").await?;
    let ns = ns();
    let topics = topics(&ns, g);
    let mut subs = Vec::with_capacity(g);
    for t in &topics {
        let mut spec = SubscriptionSpec::broadcast(Pattern::parse(t)?);
        spec.prefetch = 2 * BATCH;
        subs.push(backend.subscribe(spec).await?);
    }
    let start = Instant::now();
    let tasks: Vec<_> = subs
        .into_iter()
        .enumerate()
        .map(|(i, mut sub)| {
            // Round-robin: channel i gets every g-th message from the i-th.
            let share = n / g + usize::from(i < n % g);
            tokio::spawn(async move {
                let mut done = 0;
                while done < share {
                    let ds = take_batch(&mut sub, BATCH).await?;
                    done += ds.len();
                    for d in &ds {
                        std::hint::black_box(&d.message);
                    }
                    futures::future::try_join_all(ds.into_iter().map(|d| d.acker.ack())).await?;
                }
                sub.close().await?;
                anyhow::Ok(done)
            })
        })
        .collect();
    tokio::spawn(publish_spread(backend, topics, n)).await?;
    let mut total = 0;
    for t in tasks {
        total += t.await?.context("native subscription")?;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    if total != n {
        bail!("{total} messages taken natively, {n} published");
    }
    Ok(rate)
}

/// The start time of `g` guests without the compilation cache.
async fn cold_start(g: usize) -> anyhow::Result<f64> {
    let config = config(g, &ns(), true)?;
    let t0 = Instant::now();
    let runtime = Runtime::new(config)?;
    runtime.start().await?;
    let secs = t0.elapsed().as_secs_f64();
    runtime.stop().await;
    Ok(secs)
}

/// One guest count, in this process.
async fn measure(g: usize, n: usize) -> anyhow::Result<Row> {
    let ns = ns();
    let config = config(g, &ns, false)?;
    let rss_before = rss_bytes();
    let t0 = Instant::now();
    let runtime = Runtime::new(config)?;
    runtime.start().await?;
    let start_s = t0.elapsed().as_secs_f64();
    let rss = rss_bytes().saturating_sub(rss_before);
    // Warm-up, then alternating rounds.
    guest_rate(&runtime, &ns, (n / 10).max(g)).await?;
    native_rate(&runtime, g, (n / 10).max(g)).await?;
    let (mut gs, mut nats) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        gs.push(guest_rate(&runtime, &ns, n).await?);
        nats.push(native_rate(&runtime, g, n).await?);
    }
    runtime.stop().await;
    Ok(Row {
        guests: g,
        start_s,
        cold_s: f64::NAN,
        rss,
        guest: median(gs),
        native: median(nats),
    })
}

/// Runs each guest count in a child process, prints the table and draws
/// the chart to `chart=` if given.
pub(crate) async fn guests(args: &Args) -> anyhow::Result<()> {
    let n: usize = args.get("messages", 100_000)?;
    let only = args.str("only", "");
    if !only.is_empty() {
        let g: usize = only.parse().context("only=")?;
        if args.str("cold", "no") == "yes" {
            println!("ROW {}", cold_start(g).await?);
            return Ok(());
        }
        let r = measure(g, n).await?;
        println!(
            "ROW {} {} {} {} {}",
            r.guests, r.start_s, r.rss, r.guest, r.native
        );
        return Ok(());
    }
    let max: usize = args.get("max", 1000)?;
    // The compilation cache holds the component before the first warm start.
    drop(Runtime::new(config(1, &ns(), false)?)?);
    println!("{GUESTS_HEAD}");
    let mut rows = Vec::new();
    for g in [1, 10, 100, 1000].into_iter().filter(|g| *g <= max) {
        let f = child(&[format!("only={g}"), format!("messages={n}")]).await?;
        let cold = child(&[format!("only={g}"), "cold=yes".into()]).await?;
        let r = Row {
            guests: g,
            start_s: f[1],
            cold_s: cold[0],
            rss: f[2] as u64,
            guest: f[3],
            native: f[4],
        };
        let added = r
            .added_kib(rows.first())
            .map_or("–".to_string(), |k| format!("{k:.0}"));
        println!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.0} | {added} | {:.0} | {:.0} | {:.2} |",
            r.guests,
            r.start_s * 1e3,
            r.cold_s * 1e3,
            r.rss as f64 / (1 << 20) as f64,
            r.per_guest_kib(),
            r.guest,
            r.native,
            r.guest / r.native
        );
        rows.push(r);
    }
    let path = args.str("chart", "");
    if !path.is_empty() {
        chart(&rows, &path)?;
    }
    Ok(())
}

/// Runs this benchmark again as `guests ARGS…` in a child process and
/// returns the figures of the line it prints as `ROW …`.
async fn child(args: &[String]) -> anyhow::Result<Vec<f64>> {
    let exe = std::env::current_exe()?;
    let mut command = std::process::Command::new(exe);
    command
        .arg("guests")
        .args(args)
        .stderr(std::process::Stdio::inherit());
    let out = tokio::task::spawn_blocking(move || command.output()).await??;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find_map(|l| l.strip_prefix("ROW "));
    let (true, Some(line)) = (out.status.success(), line) else {
        bail!("guests {}: failed ({}): {text}", args.join(" "), out.status);
    };
    line.split(' ')
        .map(|f| f.parse::<f64>().context("a child's row"))
        .collect()
}

/// Two panels, guests on a log scale: memory per guest, and throughput
/// (guests and native subscriptions).
fn chart(rows: &[Row], path: &str) -> anyhow::Result<()> {
    let at = |f: &dyn Fn(&Row) -> Option<f64>| -> Vec<(f64, f64)> {
        rows.iter()
            .filter_map(|r| Some((r.guests as f64, f(r)?)))
            .collect()
    };
    let memory = Panel {
        caption: "Resident memory per guest (noop, after start)".into(),
        x_desc: "guests in one host (log scale)",
        y_desc: "KiB per guest",
        x_label: chart::whole,
        y_label: |y| format!("{y:.0}"),
        series: vec![
            Series {
                label: "host's resident memory / guests",
                color: BLUE,
                points: at(&|r| Some(r.per_guest_kib())),
            },
            Series {
                label: "added by each guest beyond the first",
                color: MAGENTA,
                points: at(&|r| r.added_kib(rows.first())),
            },
        ],
    };
    let throughput = Panel {
        caption: "Aggregate throughput".into(),
        x_desc: "guests / native subscriptions (log scale)",
        y_desc: "thousand messages per second",
        x_label: chart::whole,
        y_label: chart::thousands,
        series: vec![
            Series {
                label: "guests (noop, batch 100)",
                color: RED,
                points: at(&|r| Some(r.guest)),
            },
            Series {
                label: "native subscriptions, acking",
                color: chart::GREEN,
                points: at(&|r| Some(r.native)),
            },
        ],
    };
    let start = Panel {
        caption: "Start time (noop guests)".into(),
        x_desc: "guests in one host (log scale)",
        y_desc: "milliseconds from configuration to running",
        x_label: chart::whole,
        y_label: |y| format!("{y:.0}"),
        series: vec![
            Series {
                label: "compiled code from the cache",
                color: BLUE,
                points: at(&|r| Some(r.start_s * 1e3)),
            },
            Series {
                label: "cold: compiled at start",
                color: RED,
                points: at(&|r| Some(r.cold_s * 1e3)),
            },
        ],
    };
    chart::draw(path, &[memory, start, throughput])
}
