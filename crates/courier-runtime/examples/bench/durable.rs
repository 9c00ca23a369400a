//! The durable embedded broker: what each sync policy costs a publisher.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use courier_broker::{Backend, Message, Pattern, SubscriptionSpec};

use crate::args::Args;
use crate::harness::payload;

/// Publishing to a stored (point-to-point) queue of the embedded broker with
/// each sync policy, beside the in-memory broker: what durability costs.
pub(crate) async fn durable(args: &Args) -> anyhow::Result<()> {
    use courier_embedded::EmbeddedBroker;
    use courier_embedded::SyncPolicy;
    let n: usize = args.get("messages", 20_000)?;
    let dir = tempfile::tempdir()?;
    let mut memory_rate = BTreeMap::new();
    for publishers in [1usize, 16] {
        for (i, sync) in ["memory", "os", "always"].into_iter().enumerate() {
            let broker = match sync {
                "memory" => EmbeddedBroker::new(),
                "os" => EmbeddedBroker::open(
                    &dir.path().join(format!("os{publishers}")),
                    SyncPolicy::Os,
                )?,
                _ => EmbeddedBroker::open(
                    &dir.path().join(format!("always{publishers}")),
                    SyncPolicy::Always,
                )?,
            };
            let backend: Arc<dyn Backend> = Arc::new(broker);
            let mut sub = backend
                .subscribe(SubscriptionSpec::competing(Pattern::parse("d.in")?, "g"))
                .await?;
            let per = n / publishers;
            let total = per * publishers;
            // A consumer acknowledges as fast as it can, as a guest would.
            let consumer = tokio::spawn(async move {
                for _ in 0..total {
                    let d = sub.next().await.expect("open").expect("delivery");
                    d.acker.ack().await.expect("ack");
                }
            });
            let start = Instant::now();
            let tasks: Vec<_> = (0..publishers)
                .map(|_| {
                    let backend = backend.clone();
                    tokio::spawn(async move {
                        for _ in 0..per {
                            backend
                                .publish(vec![Message::new("d.in", payload(16))])
                                .await
                                .expect("publish");
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await?;
            }
            let rate = total as f64 / start.elapsed().as_secs_f64();
            consumer.await?;
            if i == 0 {
                memory_rate.insert(publishers, rate);
            }
            println!(
                "| {sync} | {publishers} | {total} | {rate:.0} | {:.3} |",
                rate / memory_rate[&publishers]
            );
        }
    }
    Ok(())
}

pub(crate) const DURABLE_HEAD: &str = "| sync | concurrent publishers | messages (one per send) | send msg/s | ratio to in-memory |\n|---|---|---|---|---|";
