//! `courier publish` and `courier subscribe`: talk to a configured broker
//! directly, without a guest — to feed a running deployment or watch it.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Args;
use courier_broker::{Backend, Message, Pattern, SubscriptionSpec};
use courier_runtime::Config;
use courier_runtime::clients::ClientPool;
use tokio::io::AsyncBufReadExt;

/// Which configured client to use.
#[derive(Args)]
pub struct ClientArgs {
    /// Configuration file declaring the client (TOML).
    #[arg(long, short)]
    config: PathBuf,
    /// The client's name under `[clients.NAME]`.
    #[arg(long, default_value = "default")]
    client: String,
}

#[derive(Args)]
pub struct PublishArgs {
    /// The channel to publish to.
    channel: String,
    /// Payloads, one message each; without any, each line of standard input.
    data: Vec<String>,
    /// Content type of the messages.
    #[arg(long)]
    content_type: Option<String>,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Args)]
pub struct SubscribeArgs {
    /// The channel pattern to watch (`*` one token, `>` the rest).
    channel: String,
    /// Exit after this many messages.
    #[arg(long)]
    count: Option<u64>,
    /// Share the messages with the other members of this group (point-to-point).
    #[arg(long)]
    group: Option<String>,
    #[command(flatten)]
    client: ClientArgs,
}

async fn connect(args: &ClientArgs) -> anyhow::Result<Arc<dyn Backend>> {
    let config = Config::from_file(&args.config)?;
    let Some(client) = config.clients.get(&args.client) else {
        bail!(
            "no client named `{}` in {}",
            args.client,
            args.config.display()
        );
    };
    if !client.remote {
        bail!(
            "client `{}` is the embedded broker, which lives inside a running `courier run`: \
             publish to it with POST /v1/channels/CHANNEL on its --listen address",
            args.client
        );
    }
    ClientPool::new(config.clients)
        .get(&args.client)
        .await
        .with_context(|| format!("connecting client `{}`", args.client))
}

pub async fn publish(args: PublishArgs) -> anyhow::Result<()> {
    Pattern::parse_literal(&args.channel)?;
    let backend = connect(&args.client).await?;
    let message = |data: Vec<u8>| Message {
        content_type: args.content_type.clone(),
        ..Message::new(args.channel.clone(), data)
    };
    let mut sent = 0;
    if args.data.is_empty() {
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Some(line) = lines.next_line().await? {
            backend.publish(vec![message(line.into_bytes())]).await?;
            sent += 1;
        }
    } else {
        let messages = args
            .data
            .iter()
            .map(|d| message(d.clone().into_bytes()))
            .collect();
        backend.publish(messages).await?;
        sent = args.data.len();
    }
    eprintln!("published {sent} message(s) to `{}`", args.channel);
    Ok(())
}

pub async fn subscribe(args: SubscribeArgs) -> anyhow::Result<()> {
    let pattern = Pattern::parse(&args.channel)?;
    let backend = connect(&args.client).await?;
    let spec = match &args.group {
        Some(group) => SubscriptionSpec::competing(pattern, group.clone()),
        None => SubscriptionSpec::broadcast(pattern),
    };
    let mut sub = backend.subscribe(spec).await?;
    let mut signals = crate::signals::Signals::new()?;
    eprintln!("watching `{}`", args.channel);
    let mut seen = 0;
    while args.count.is_none_or(|n| seen < n) {
        let delivery = tokio::select! {
            next = sub.next() => match next {
                Some(Ok(d)) => d,
                Some(Err(e)) => {
                    eprintln!("subscription error: {e}");
                    continue;
                }
                None => break,
            },
            _ = signals.next() => break,
        };
        {
            let mut out = std::io::stdout().lock();
            out.write_all(&delivery.message.data)?;
            out.write_all(b"\n")?;
            out.flush()?;
        }
        delivery.acker.ack().await?;
        seen += 1;
    }
    sub.close().await?;
    Ok(())
}
