//! `courier run`: a component and/or the guests of a config file.
//!
//! With no config file the component runs on the embedded broker with no
//! allow-lists. `--stdin CH` turns each line of standard input into a message
//! on CH, and ends the run once input ends and every message is settled;
//! `--print CH` prints every message on CH to standard output.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use courier_broker::{Backend, ErrorKind, Message, Pattern, SubscriptionSpec};
use courier_runtime::dispatcher::Activity;
use courier_runtime::{Config, GuestConfig, Runtime, StatsSnapshot};
use tokio::io::AsyncBufReadExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::http;
use crate::signals::Signals;

#[derive(Args)]
pub struct RunArgs {
    /// The component to run (optional when the config file declares guests).
    component: Option<PathBuf>,
    /// Configuration file (TOML).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Name of the guest COMPONENT runs as (default: its file stem). Settings
    /// under `[guests.NAME]` in the config apply to it.
    #[arg(long)]
    name: Option<String>,
    /// Subscribe the guest to CH (repeatable).
    #[arg(long = "subscribe", value_name = "CH")]
    subscribe: Vec<Pattern>,
    /// Publish each line of standard input to CH; exit when all is settled.
    #[arg(long, value_name = "CH")]
    stdin: Option<String>,
    /// Print every message published to CH on standard output (repeatable);
    /// on a durable broker through a stored queue, so none is missed across
    /// restarts.
    #[arg(long = "print", value_name = "CH")]
    print: Vec<String>,
    /// Serve HTTP ingress, /metrics, /healthz and /readyz on ADDR (HTTPS
    /// with `host.tls-cert-file` and `host.tls-key-file`).
    #[arg(long, value_name = "ADDR")]
    listen: Option<std::net::SocketAddr>,
    /// Store the embedded broker's point-to-point queues in DIR, so that a
    /// crash or restart loses no accepted message (`host.data-dir`).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

/// Builds the configuration from the file and the flags.
fn configure(args: &RunArgs) -> anyhow::Result<Config> {
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if let Some(listen) = &args.listen {
        config.host.listen = Some(*listen);
    }
    if let Some(dir) = &args.data_dir {
        config.host.data_dir = Some(dir.clone());
    }
    if let Some(path) = &args.component {
        let name = match &args.name {
            Some(n) => n.clone(),
            None => path
                .file_stem()
                .and_then(|s| s.to_str())
                .context("cannot name the guest after the component file; pass --name")?
                .to_string(),
        };
        let guest = config.guests.entry(name.clone()).or_insert_with(|| {
            tracing::info!(
                guest = %name,
                "no [guests.{name}] in the config: the guest may publish and subscribe anywhere"
            );
            GuestConfig {
                allow_publish: vec![Pattern::everything()],
                allow_subscribe: Some(vec![Pattern::everything()]),
                ..GuestConfig::default()
            }
        });
        guest.component = Some(path.clone());
        guest.subscribe.extend(args.subscribe.iter().cloned());
        if guest.subscribe.is_empty()
            && let Some(ch) = &args.stdin
        {
            guest.subscribe.push(Pattern::parse_literal(ch)?);
        }
    } else if !args.subscribe.is_empty() {
        bail!("--subscribe needs a COMPONENT");
    }
    if config.guests.is_empty() {
        bail!("nothing to run: give a COMPONENT or a --config with [guests.*]");
    }
    config.validate()?;
    Ok(config)
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let config = configure(&args)?;
    let host = config.host.clone();
    let tokens = Arc::new(config.ingress_tokens.clone());
    // The TLS configuration is made (the key checked against the
    // certificate) before any guest starts.
    let tls = match (&config.tls, &host.listen) {
        (Some(identity), Some(_)) => Some(crate::http::tls::server_config(identity)?),
        (Some(_), None) => {
            tracing::warn!("`host.tls-cert-file` is set, but there is no listen address");
            None
        }
        (None, _) => None,
    };
    let metrics = match &host.listen {
        Some(_) => Some(install_metrics()?),
        None => None,
    };
    let runtime = Arc::new(Runtime::new(config)?);
    if metrics.is_some() {
        runtime.measure_delivery_latency();
    }
    let ingress = runtime.ingress().await?;
    // Tells the printers and the progress line to stop (after the guests).
    let (stop_tasks, tasks_stop) = watch::channel(false);
    let mut printers = Vec::new();
    for ch in &args.print {
        printers.push(
            print(
                ingress.clone(),
                ch,
                runtime.activity().clone(),
                tasks_stop.clone(),
            )
            .await?,
        );
    }
    runtime.start().await?;
    // Tells the HTTP server to stop (before the guests: no new ingress).
    let (stop_server, server_stop) = watch::channel(false);
    let mut server = match host.listen {
        Some(addr) => Some(
            http::serve(
                addr,
                http::AppState {
                    runtime: runtime.clone(),
                    ingress: ingress.clone(),
                    metrics,
                    max_body: host.max_ingress_bytes,
                    tokens: tokens.clone(),
                },
                tls,
                stopped(server_stop),
            )
            .await?,
        ),
        None => None,
    };
    let summary = (host.summary_secs > 0).then(|| {
        tokio::spawn(summaries(
            runtime.clone(),
            host.summary_secs,
            tasks_stop.clone(),
        ))
    });
    let outcome = match &args.stdin {
        Some(ch) => feed_stdin(&runtime, &ingress, ch).await,
        None => {
            let mut signals = Signals::new()?;
            signals.next().await;
            tracing::info!("shutting down");
            // The ingress takes nothing more: its listener closes (a load
            // balancer sees the host gone), requests under way finish.
            stop_server.send_replace(true);
            if let Some(server) = server.take() {
                let _ = server.await;
            }
            drain_memory(&runtime, host.drain_timeout, &mut signals).await;
            Ok(())
        }
    };
    // What the in-memory broker drops from here on is lost at exit.
    let discarded_before = runtime.clients().embedded().discarded();
    // In order, each awaited: ingress over HTTP ends (requests under way
    // finish), the guests stop (what they hold settled or handed back),
    // then the printers and the progress line.
    stop_server.send_replace(true);
    if let Some(server) = server {
        let _ = server.await;
    }
    runtime.stop().await;
    stop_tasks.send_replace(true);
    for task in printers.into_iter().chain(summary) {
        let _ = task.await;
    }
    let t = runtime.totals();
    tracing::info!(
        "done: {} delivered, {} accepted, {} redelivered, {} dead-lettered, {} traps",
        t.delivered,
        t.accepted,
        t.redelivered,
        t.dead_lettered,
        t.traps
    );
    outcome?;
    let embedded = runtime.clients().embedded();
    if !embedded.features().durable {
        match embedded.held() + (embedded.discarded() - discarded_before) {
            0 => tracing::info!("every message accepted in memory was handled"),
            lost => {
                tracing::error!(
                    lost,
                    "{lost} accepted messages held in memory were not handled before exit and are lost \
                     (give the embedded broker a data-dir to keep them across restarts)"
                );
                bail!("{lost} accepted messages were lost at shutdown");
            }
        }
    }
    Ok(())
}

/// At shutdown: while the in-memory embedded broker holds accepted
/// messages, keeps handling them — until none is left, `timeout` passes, or
/// a second signal comes. A stored or remote broker keeps what is left
/// itself (it is handed back when the guests stop).
async fn drain_memory(runtime: &Runtime, timeout: Duration, signals: &mut Signals) {
    let embedded = runtime.clients().embedded();
    if embedded.features().durable {
        return;
    }
    let held = embedded.held();
    if held == 0 {
        return;
    }
    tracing::info!(
        held,
        "draining: {held} accepted messages are held in memory; handling them before exit \
         (up to {timeout:?}; a second signal stops now)"
    );
    tokio::select! {
        _ = runtime.drained() => tracing::info!("drained"),
        _ = tokio::time::sleep(timeout) => {
            tracing::warn!("the drain took longer than drain-timeout-ms ({timeout:?}); stopping");
        }
        _ = signals.next() => tracing::warn!("a second signal: stopping without draining further"),
    }
}

/// Installs the Prometheus recorder: every metric described (`# HELP`,
/// `# TYPE`), the histograms with buckets (rendered as histograms, not
/// summaries).
fn install_metrics() -> anyhow::Result<metrics_exporter_prometheus::PrometheusHandle> {
    use courier_runtime::telemetry;
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(telemetry::HANDLER_DURATION.into()),
            telemetry::HANDLER_DURATION_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full(telemetry::DELIVERY_LATENCY.into()),
            telemetry::DELIVERY_LATENCY_BUCKETS,
        )?
        .install_recorder()
        .context("installing the metrics recorder")?;
    telemetry::describe();
    metrics::describe_counter!(
        "courier_ingress_messages_total",
        "Messages accepted at the HTTP ingress."
    );
    Ok(handle)
}

/// Resolves once `stop` turns `true` (or its sender is gone).
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Prints every message on `ch`, one line each, and acks it once printed,
/// until `stop`; each ack bumps `activity`, for [`Runtime::drained`].
///
/// On a durable broker the printer reads through a stored queue (group
/// `courier-print`), so what was published to `ch` while this host was down
/// or before it crashed is printed when it comes back: at least once.
async fn print(
    backend: Arc<dyn Backend>,
    ch: &str,
    activity: Activity,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<JoinHandle<()>> {
    let pattern = Pattern::parse(ch).with_context(|| format!("--print {ch}"))?;
    let spec = if backend.features().durable {
        SubscriptionSpec::competing(pattern, "courier-print")
    } else {
        SubscriptionSpec::broadcast(pattern)
    };
    let mut sub = backend.subscribe(spec).await?;
    Ok(tokio::spawn(async move {
        let mut stop = std::pin::pin!(stopped(stop));
        loop {
            let next = tokio::select! {
                biased;
                _ = &mut stop => break,
                next = sub.next() => next,
            };
            let Some(next) = next else { break };
            match next {
                Ok(d) => {
                    {
                        let mut out = std::io::stdout().lock();
                        let _ = out.write_all(&d.message.data);
                        let _ = out.write_all(b"\n");
                        let _ = out.flush();
                    }
                    if let Err(e) = d.acker.ack().await {
                        tracing::warn!("--print: ack failed: {e}");
                    }
                    activity.notify();
                }
                Err(e) => tracing::warn!("--print: {e}"),
            }
        }
        if let Err(e) = sub.close().await {
            tracing::warn!("--print: closing the subscription: {e}");
        }
    }))
}

/// Publishes each line of standard input to `ch`, then waits until
/// everything is settled. A broker that is full (`busy`, the embedded
/// broker's `max-queued-messages`) is offered the line again once a guest
/// has made progress: standard input waits, nothing is dropped.
async fn feed_stdin(runtime: &Runtime, ingress: &Arc<dyn Backend>, ch: &str) -> anyhow::Result<()> {
    Pattern::parse_literal(ch).with_context(|| format!("--stdin {ch}"))?;
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut activity = runtime.activity().subscribe();
    let mut sent = 0u64;
    while let Some(line) = lines.next_line().await.context("reading standard input")? {
        let mut m = Message::new(ch, line.into_bytes());
        m.content_type = Some("text/plain".into());
        loop {
            activity.borrow_and_update();
            match ingress.publish(vec![m.clone()]).await {
                Ok(()) => break,
                Err(e) if e.kind() == ErrorKind::Busy => {
                    // Progress is the signal; the bound only covers a
                    // settlement that does not show as activity.
                    let _ = tokio::time::timeout(BUSY_RETRY, activity.changed()).await;
                }
                Err(e) => return Err(e).with_context(|| format!("publishing to `{ch}`")),
            }
        }
        sent += 1;
    }
    tracing::debug!("standard input ended after {sent} messages; draining");
    drain(runtime, ingress.as_ref()).await;
    Ok(())
}

/// The longest `--stdin` waits for a guest's progress before it offers a
/// line to a full broker again.
const BUSY_RETRY: Duration = Duration::from_millis(200);

/// How long a run whose ingress broker cannot count its unsettled messages
/// must stay drained, with no guest activity, before it ends.
const QUIET: Duration = Duration::from_secs(1);

/// Waits until no message is queued, being handled, or unsettled in the
/// broker ([`Runtime::drained`]).
async fn drain(runtime: &Runtime, ingress: &dyn Backend) {
    runtime.drained().await;
    if ingress.unsettled().is_some() {
        return;
    }
    // A remote broker cannot say what it still holds (a message may be on
    // its way to a guest): the run ends once the guests have been drained,
    // with no activity, for a quiet period.
    let mut changes = runtime.activity().subscribe();
    loop {
        changes.borrow_and_update();
        match tokio::time::timeout(QUIET, changes.changed()).await {
            Err(_) if runtime.idle() => return,
            Err(_) | Ok(Ok(())) => runtime.drained().await,
            Ok(Err(_)) => return,
        }
    }
}

/// Logs a progress line whenever the counters moved, until `stop`.
async fn summaries(runtime: Arc<Runtime>, every: u64, stop: watch::Receiver<bool>) {
    let mut last = StatsSnapshot::default();
    let mut stop = std::pin::pin!(stopped(stop));
    loop {
        tokio::select! {
            biased;
            _ = &mut stop => return,
            _ = tokio::time::sleep(Duration::from_secs(every)) => {}
        }
        let t = runtime.totals();
        if t != last {
            tracing::info!(
                "progress: {} delivered, {} accepted, {} redelivered, {} dead-lettered, {} traps",
                t.delivered,
                t.accepted,
                t.redelivered,
                t.dead_lettered,
                t.traps
            );
            last = t;
        }
    }
}
