//! The guest hop alone: what one `handler` call costs per message when
//! nothing else runs — no broker, no queue, no tracking, no acks. A batch of
//! messages held on the host is lowered into a `noop` instance and the call
//! returns, again and again.
//!
//! Two forms of the same batch: as Courier lowers it (topic, data and the
//! delivery id in the metadata, which the guest needs to settle a message),
//! and the least the world's `message` record allows (topic and data, no
//! metadata). Beside them, in the same run, the native consumer's rate on
//! the embedded broker (take and acknowledge, see `throughput`).
//!
//! A worker runs one call at a time, so the hop bounds what one worker can
//! handle: `1 s / hop`. Divided by the native rate, that bound is the best
//! ratio a guest could reach on one worker if everything else Courier does
//! per message cost nothing.
//!
//! `guest=transform` or `guest=uppercase`: the same with a guest that works
//! and sends — the call then holds the guest's own work (for `transform`,
//! a batch of JSON orders parsed, validated and enriched) and its `send` of
//! the results to a channel nobody reads, beside the native consumer doing
//! that work on the same broker (`throughput`'s). The ratio is then the best
//! such a guest could reach. `backend=nats` (core NATS) sends through NATS
//! and measures the native consumer there; the default is the embedded
//! broker.

use std::time::Instant;

use anyhow::anyhow;
use courier_broker::Message;
use courier_broker::message::DELIVERY_ID_KEY;
use courier_wasi_messaging::handler::MessageRef;

use crate::args::Args;
use crate::fresh::FreshHost;
use crate::harness::{Setup, inputs, median, ns, start};
use crate::throughput::{ROUNDS, native_rate};

pub(crate) async fn hop(args: &Args) -> anyhow::Result<()> {
    let n: usize = args.get("messages", 200_000)?;
    let size: usize = args.get("size", 16)?;
    let guest = args.str("guest", "noop");
    if !matches!(guest.as_str(), "noop" | "uppercase" | "transform") {
        anyhow::bail!("hop: guest=noop, uppercase or transform, not `{guest}`");
    }
    let backend = args.str("backend", "embedded");
    if !matches!(backend.as_str(), "embedded" | "nats") {
        anyhow::bail!("hop: backend=embedded or nats, not `{backend}`");
    }
    let setup = Setup {
        backend,
        guest: guest.clone(),
        batch: args.get("batch", 100)?,
        concurrency: 1,
        size,
        pooling: false,
    };
    let ns = ns();
    let runtime = start(&setup, &ns).await?;
    let host = FreshHost::new(&runtime, &setup, &ns)?;
    let mut instance = host.instantiate(&runtime).await?;
    let deadline = std::time::Duration::from_secs(30);

    // `inputs` makes at most 1,000 different messages: repeated to fill a
    // larger batch.
    let messages: Vec<Message> = inputs(&guest, &format!("{ns}.in"), setup.batch, size)
        .into_iter()
        .cycle()
        .take(setup.batch)
        .collect();
    let ids: Vec<String> = (1..=setup.batch)
        .map(|i| format!("{:016x}-{i}", 0x5eed_u64))
        .collect();
    let metadata: Vec<[(&str, &str); 1]> = ids
        .iter()
        .map(|id| [(DELIVERY_ID_KEY, id.as_str())])
        .collect();
    let numbers: Vec<u64> = (1..=setup.batch as u64).collect();
    let batch = |with_id: bool| -> Vec<MessageRef<'_>> {
        messages
            .iter()
            .zip(&metadata)
            .map(|(m, meta)| MessageRef {
                topic: &m.topic,
                content_type: None,
                reply_to: None,
                data: &m.data,
                metadata: with_id.then_some(&meta[..]),
            })
            .collect()
    };
    let forms = match guest.as_str() {
        "transform" => vec![(
            "JSON orders, delivery id; parsed, enriched, sent",
            batch(true),
        )],
        "uppercase" => vec![("topic, data, delivery id; upper-cased, sent", batch(true))],
        _ => vec![
            ("topic, data, delivery id", batch(true)),
            ("topic, data", batch(false)),
        ],
    };
    let mean_size = messages.iter().map(|m| m.data.len()).sum::<usize>() / messages.len();

    let calls = n.div_ceil(setup.batch);
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); forms.len()];
    let mut native = Vec::new();
    let mut call = async |batch: &[MessageRef<'_>], times: usize| -> anyhow::Result<()> {
        for _ in 0..times {
            instance
                .call(batch, &numbers, deadline)
                .await
                .map_err(|f| anyhow!("{f}"))?;
        }
        Ok(())
    };
    // Warm-up, then alternating rounds.
    for (_, b) in &forms {
        call(b, calls / 10).await?;
    }
    native_rate(&runtime, &setup, (n / 10).max(1)).await?;
    for _ in 0..ROUNDS {
        for ((_, b), rate) in forms.iter().zip(&mut rates) {
            let started = Instant::now();
            call(b, calls).await?;
            rate.push((calls * setup.batch) as f64 / started.elapsed().as_secs_f64());
        }
        native.push(native_rate(&runtime, &setup, n).await?);
    }
    drop(instance);
    runtime.stop().await;
    let native = median(native);
    for ((form, _), rate) in forms.iter().zip(rates) {
        let rate = median(rate);
        println!(
            "| {} | {} | {mean_size} B | {form} | {:.0} | {rate:.0} | {native:.0} | {:.2} |",
            setup.backend,
            setup.batch,
            1e9 / rate,
            rate / native,
        );
    }
    Ok(())
}

pub(crate) const HOP_HEAD: &str = "| broker | batch | size | message lowered | hop ns/msg | hop alone msg/s | native msg/s | hop alone / native |\n|---|---|---|---|---|---|---|---|";
