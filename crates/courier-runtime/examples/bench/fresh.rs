//! Fresh instances: the same guest handled as Courier handles it (each
//! worker's instance reused from batch to batch), at batch size 1 and at the
//! default batch size, against a new instance for every message
//! (instantiate, call `handler` with that one message, drop), which is what
//! hosts that instantiate per request do.
//!
//! The fresh path is built from Courier's public API on the same runtime:
//! its engine (so the same allocator and compiler settings), the guest's
//! component linked again with `runtime::linker` and `runtime::link`, and
//! [`Instance::new`] with the guest's own configuration (limits,
//! environment, clients, allowed channels), as a worker makes its instance.
//! Per message it does only that, the call and the ack: none of Courier's
//! delivery tracking, counters or settlement, which the reused path pays.
//!
//! Every path is timed from the first publish until every message came out:
//! its upper-cased copy counted by a subscriber of the output channel (for
//! `noop`, which sends nothing, each message accepted). A message lost fails
//! the run rather than report a rate.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use async_trait::async_trait;
use courier_broker::message::{ATTEMPT_KEY, DELIVERY_ID_KEY};
use courier_broker::{Backend, Message, Pattern, Subscription, SubscriptionSpec};
use courier_runtime::engine::load_component;
use courier_runtime::instance::{CallScope, Instance};
use courier_runtime::runtime::{link, linker};
use courier_runtime::state::GuestState;
use courier_runtime::{GuestConfig, Runtime};
use courier_wasi_messaging::bindings::MessagingPre;
use courier_wasi_messaging::handler::MessageRef;
use courier_wasi_messaging::{Consumer, GuestPolicy, MessagingError, WasiMessagingCtx};

use crate::args::Args;
use crate::harness::{Setup, config, median, ns, publish, start, take_batch};
use crate::throughput::ROUNDS;

/// How long a round may take before it counts as lost messages.
const ROUND_DEADLINE: Duration = Duration::from_secs(300);

pub(crate) async fn fresh(args: &Args) -> anyhow::Result<()> {
    let guest = args.str("guest", "uppercase");
    let n: usize = args.get("messages", 20_000)?;
    let batch: usize = args.get("batch", 100)?;
    let size: usize = args.get("size", 16)?;
    let allocators: &[bool] = match args.str("pooling", "both").as_str() {
        "both" => &[false, true],
        "no" | "off" | "false" => &[false],
        "yes" | "on" | "true" => &[true],
        other => bail!("bad value `{other}` for `pooling` (both, on, off)"),
    };
    for &pooling in allocators {
        let setup = |batch| Setup {
            backend: "embedded".into(),
            guest: guest.clone(),
            batch,
            concurrency: 1,
            size,
            pooling,
        };
        let (one, many) = (setup(1), setup(batch));
        let (ns_one, ns_many, ns_fresh) = (ns(), ns(), ns());
        let rt_one = start(&one, &ns_one).await?;
        let rt_many = start(&many, &ns_many).await?;
        // The fresh host runs beside the batch-1 guest, on its engine and
        // broker, with a configuration of its own channels.
        let host = FreshHost::new(&rt_one, &one, &ns_fresh)?;
        let warm = (n / 10).max(1);
        reused_rate(&rt_one, &one, &ns_one, warm).await?;
        reused_rate(&rt_many, &many, &ns_many, warm).await?;
        host.rate(&rt_one, warm).await?;
        let (mut r1, mut rb, mut f) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            r1.push(reused_rate(&rt_one, &one, &ns_one, n).await?);
            rb.push(reused_rate(&rt_many, &many, &ns_many, n).await?);
            f.push(host.rate(&rt_one, n).await?);
        }
        rt_one.stop().await;
        rt_many.stop().await;
        let (r1, rb, f) = (median(r1), median(rb), median(f));
        let size = match guest.as_str() {
            "transform" => "JSON order".to_string(),
            _ => format!("{size} B"),
        };
        println!(
            "| {} | {guest} | {size} | {n} | {batch} | {r1:.0} | {rb:.0} | {f:.0} | {:.1} | {:.1} |",
            if pooling { "pooling" } else { "on-demand" },
            r1 / f,
            rb / f,
        );
    }
    Ok(())
}

/// B is the `batch` argument (default 100, the default `batch-size`).
pub(crate) const FRESH_HEAD: &str = "| allocator | work | size | messages | B | reused, batch 1 msg/s | reused, batch B msg/s | fresh instance per message msg/s | batch 1 / fresh | batch B / fresh |\n|---|---|---|---|---|---|---|---|---|---|";

/// Whether the guest sends one message out for each it handles.
fn sends(work: &str) -> bool {
    work != "noop"
}

/// Messages per second through the runtime's guest `g` (reused instances).
async fn reused_rate(runtime: &Runtime, setup: &Setup, ns: &str, n: usize) -> anyhow::Result<f64> {
    let backend = runtime.clients().get("default").await?;
    let guest = runtime.guest("g").context("guest")?;
    let counter = if sends(&setup.guest) {
        Some(count_outputs(backend.clone(), &format!("{ns}.out"), n).await?)
    } else {
        None
    };
    let before = guest.stats().accepted;
    let started = Instant::now();
    let publisher = tokio::spawn(publish(
        backend,
        format!("{ns}.in"),
        setup.guest.clone(),
        n,
        setup.size,
    ));
    match counter {
        Some(counter) => counter.await??,
        None => {
            let deadline = started + ROUND_DEADLINE;
            while guest.stats().accepted < before + n as u64 {
                if Instant::now() > deadline {
                    bail!(
                        "only {} of {n} messages were accepted",
                        guest.stats().accepted - before
                    );
                }
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        }
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    publisher.await?;
    let s = guest.stats();
    if s.errors > 0 || s.traps > 0 {
        bail!("the guest failed: {} errors, {} traps", s.errors, s.traps);
    }
    Ok(rate)
}

/// A host that instantiates the guest afresh for every message.
pub(crate) struct FreshHost {
    pre: MessagingPre<GuestState>,
    name: Arc<str>,
    config: GuestConfig,
    policy: Arc<GuestPolicy>,
    work: String,
    size: usize,
    ns: String,
}

impl FreshHost {
    /// The guest of `setup`, linked on `runtime`'s engine, configured for
    /// the channels under `ns`.
    pub(crate) fn new(runtime: &Runtime, setup: &Setup, ns: &str) -> anyhow::Result<Self> {
        let mut cfg = config(setup, ns)?;
        cfg.validate()?;
        let config = cfg.guests.remove("g").context("guest `g`")?;
        let path = config.component.clone().context("component")?;
        let engine = runtime.engine();
        let component = load_component(engine, &path)?;
        let pre = link(&linker(engine)?, &component, &path)?;
        // As `Runtime::new` grants it.
        let policy = GuestPolicy {
            name: "fresh".into(),
            default_client: config.client.clone(),
            clients: config.granted_clients(),
            publish: config.allow_publish.clone(),
            subscribe: config.subscribe_allow_list().to_vec(),
            max_message_bytes: config.max_message_bytes,
            broker_timeout: runtime
                .clients()
                .config(&config.client)
                .map_or(Duration::from_secs(5), |c| c.timeout),
        };
        Ok(Self {
            pre,
            name: "fresh".into(),
            config,
            policy: Arc::new(policy),
            work: setup.guest.clone(),
            size: setup.size,
            ns: ns.to_string(),
        })
    }

    /// A new instance, as a worker makes one.
    pub(crate) async fn instantiate(&self, runtime: &Runtime) -> anyhow::Result<Instance> {
        let scope = Arc::new(CallScope::default());
        let messaging = WasiMessagingCtx {
            policy: self.policy.clone(),
            connector: runtime.clients().clone(),
            consumer: Arc::new(NoConsumer),
        };
        Instance::new(
            runtime.engine(),
            &self.pre,
            &self.name,
            &self.config,
            messaging,
            scope,
        )
        .await
    }

    /// Messages per second, each handled by an instance of its own.
    async fn rate(&self, runtime: &Runtime, n: usize) -> anyhow::Result<f64> {
        let backend = runtime.clients().get("default").await?;
        let input = format!("{}.in", self.ns);
        let mut spec = SubscriptionSpec::broadcast(Pattern::parse(&input)?);
        spec.prefetch = 100;
        let mut sub = backend.subscribe(spec).await?;
        let counter = if sends(&self.work) {
            Some(count_outputs(backend.clone(), &format!("{}.out", self.ns), n).await?)
        } else {
            None
        };
        let started = Instant::now();
        let publisher = tokio::spawn(publish(backend, input, self.work.clone(), n, self.size));
        self.handle(runtime, &mut sub, n).await?;
        if let Some(counter) = counter {
            counter.await??;
        }
        let rate = n as f64 / started.elapsed().as_secs_f64();
        publisher.await?;
        sub.close().await?;
        Ok(rate)
    }

    /// Handles `n` deliveries of `sub`, each on a new instance, acking each
    /// after an `ok`.
    async fn handle(
        &self,
        runtime: &Runtime,
        sub: &mut Box<dyn Subscription>,
        n: usize,
    ) -> anyhow::Result<()> {
        let deadline = self.config.handler_timeout();
        let mut done = 0;
        while done < n {
            for d in take_batch(sub, 100).await? {
                let mut instance = self.instantiate(runtime).await?;
                // The same message Courier lowers: its own metadata, then a
                // delivery id and, on a redelivery, the attempt.
                let number = done as u64 + 1;
                let id = format!("fresh-{number}");
                let attempt = d.attempt.to_string();
                let m = &d.message;
                let mut metadata: Vec<(&str, &str)> = m
                    .metadata
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                metadata.push((DELIVERY_ID_KEY, &id));
                if d.attempt > 1 {
                    metadata.push((ATTEMPT_KEY, &attempt));
                }
                let message = MessageRef {
                    topic: &m.topic,
                    content_type: m.content_type.as_deref(),
                    reply_to: m.reply_to.as_deref(),
                    data: &m.data,
                    metadata: Some(&metadata),
                };
                instance
                    .call(&[message], &[number], deadline)
                    .await
                    .map_err(|f| anyhow!("message {number}: {f}"))?;
                drop(instance);
                d.acker.ack().await?;
                done += 1;
            }
        }
        Ok(())
    }
}

/// The fresh host's `consumer`: the guests measured neither settle nor
/// subscribe themselves.
struct NoConsumer;

#[async_trait]
impl Consumer for NoConsumer {
    async fn update(
        &self,
        _channels: Vec<Pattern>,
        _extensions: Vec<(String, String)>,
    ) -> Result<(), MessagingError> {
        Err(MessagingError::Other("not in this benchmark".into()))
    }
    async fn complete(&self, _message: Message) -> Result<(), MessagingError> {
        Err(MessagingError::Other("not in this benchmark".into()))
    }
    async fn abandon(&self, _message: Message) -> Result<(), MessagingError> {
        Err(MessagingError::Other("not in this benchmark".into()))
    }
}

/// Subscribes to `topic` now, and counts (and acks) what arrives there in a
/// task that ends once `n` messages came, or fails after [`ROUND_DEADLINE`].
async fn count_outputs(
    backend: Arc<dyn Backend>,
    topic: &str,
    n: usize,
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<()>>> {
    let mut spec = SubscriptionSpec::broadcast(Pattern::parse(topic)?);
    spec.prefetch = 1000;
    let mut sub = backend.subscribe(spec).await?;
    let topic = topic.to_string();
    Ok(tokio::spawn(async move {
        let deadline = Instant::now() + ROUND_DEADLINE;
        let mut seen = 0;
        while seen < n {
            let left = deadline.saturating_duration_since(Instant::now());
            let ds = match tokio::time::timeout(left, sub.next_batch(1000)).await {
                Ok(Some(ds)) => ds?,
                Ok(None) => bail!("`{topic}` closed after {seen} of {n} messages"),
                Err(_) => bail!("only {seen} of {n} messages came out on `{topic}`"),
            };
            seen += ds.len();
            for d in ds {
                d.acker.ack().await?;
            }
        }
        sub.close().await?;
        if seen > n {
            bail!("{seen} messages came out on `{topic}` for {n} sent");
        }
        Ok(())
    }))
}
