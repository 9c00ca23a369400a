//! `courier`: run `wasi:messaging` components on any broker.

#![deny(missing_docs)]

mod check;
mod http;
mod new;
mod run;
mod signals;
mod tools;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "courier",
    version,
    about = "Run wasi:messaging components on any broker"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a component (and/or the guests of a config file).
    Run(run::RunArgs),
    /// Publish messages to a channel of a configured broker.
    Publish(tools::PublishArgs),
    /// Print the messages of a channel of a configured broker.
    Subscribe(tools::SubscribeArgs),
    /// Check that a file is a guest Courier can run: a component exporting the
    /// messaging guest interface that instantiates under its configured limits.
    Check {
        /// The component file.
        component: PathBuf,
        /// A config file whose settings the component should link under.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Write a ready-to-build guest project in Rust, Python or JavaScript.
    New(new::NewArgs),
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new(courier_runtime::telemetry::DEFAULT_LOG_FILTER)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let block_on = |f: std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>>>>| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(f))
    };
    let result = match cli.command {
        Command::Run(args) => block_on(Box::pin(run::run(args))),
        Command::Publish(args) => block_on(Box::pin(tools::publish(args))),
        Command::Subscribe(args) => block_on(Box::pin(tools::subscribe(args))),
        Command::Check { component, config } => {
            block_on(Box::pin(check::check(&component, config.as_deref())))
        }
        Command::New(args) => new::new(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
