//! End-to-end benchmarks of Courier, each beside a native Rust baseline doing
//! the same work on the same broker in the same run, so that the figures that
//! matter are ratios (timings on small shared machines are noisy).
//!
//! ```sh
//! B="cargo run --release -p courier-runtime --example bench --"
//! $B throughput backend=embedded guest=noop messages=200000 batch=100
//! $B throughput backend=nats guest=uppercase messages=50000
//! $B throughput backend=jetstream guest=transform messages=20000
//! $B throughput side=guest messages=20000   # one side alone (scripts/instructions.sh)
//! $B latency backend=embedded rate=5000 seconds=5
//! $B instantiate count=200
//! $B scaling backend=embedded messages=100000 chart=docs/perf   # with SVG charts
//! $B durable messages=20000   # what each sync policy of --data-dir costs
//! $B fresh guest=uppercase messages=20000   # reused instances against one per message
//! $B hop messages=200000 batch=100   # the guest hop alone, beside the native rate
//! $B hop guest=transform messages=50000   # the hop with the guest's JSON work in it
//! $B hop guest=uppercase backend=nats messages=50000   # with its send through NATS
//! $B guests max=1000 chart=docs/perf/guests.svg   # 1 to 1,000 guests in one host, warm and cold
//! $B all                     # everything above, as Markdown tables
//! ```
//!
//! Work compared:
//! - `noop`: the guest accepts each batch and does nothing; the native
//!   consumer takes each message and acknowledges it.
//! - `uppercase`: the guest upper-cases each message and sends the batch on to
//!   an output channel; the native consumer does the same with the same
//!   backend (one publish per batch, then the acks).
//! - `transform`: the guest parses each message as a JSON order, validates
//!   and enriches it and sends the batch on; the native consumer runs the
//!   same code (the `orders` crate under `guests/`).
//!
//! Backends: `embedded`, `nats` (core NATS) and `jetstream` (an in-memory
//! stream), on 127.0.0.1:4222.

use anyhow::bail;

use args::args_of;
use durable::{DURABLE_HEAD, durable};
use fresh::{FRESH_HEAD, fresh};
use guests::guests;
use hop::{HOP_HEAD, hop};
use instantiate::{INSTANTIATE_HEAD, instantiate};
use latency::{LATENCY_HEAD, latency};
use scaling::scaling;
use throughput::{THROUGHPUT_HEAD, throughput};

mod args;
mod chart;
mod durable;
mod fresh;
mod guests;
mod harness;
mod hop;
mod instantiate;
mod latency;
mod scaling;
mod throughput;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    // Logging as `courier run` sets it up (info, to stderr): the host's
    // spans and their fields cost what they cost a user.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(courier_runtime::telemetry::DEFAULT_LOG_FILTER)
            }),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
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
        "fresh" => {
            println!("{FRESH_HEAD}");
            fresh(&args).await
        }
        "guests" => guests(&args).await,
        "hop" => {
            println!("{HOP_HEAD}");
            hop(&args).await
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
            println!("\nThe guest hop alone:\n\n{HOP_HEAD}");
            hop(&args_of(&[])).await?;
            hop(&args_of(&["guest=transform", "messages=50000"])).await?;
            if nats {
                hop(&args_of(&[
                    "guest=uppercase",
                    "backend=nats",
                    "messages=50000",
                ]))
                .await?;
            }
            println!("\nInstantiation (noop):\n\n{INSTANTIATE_HEAD}");
            instantiate(&args).await?;
            println!("\nDurable embedded broker (16 B messages):\n\n{DURABLE_HEAD}");
            durable(&args).await?;
            println!("\nA fresh instance per message (embedded):\n\n{FRESH_HEAD}");
            fresh(&args_of(&[])).await?;
            scaling(&args_of(&["backend=embedded"])).await
        }
        other => {
            bail!(
                "unknown benchmark `{other}` \
                 (throughput, latency, instantiate, scaling, durable, fresh, guests, hop, all)"
            )
        }
    }
}
