//! One guest at run time: its subscriptions, its instance pool, and what
//! happens to each delivery.
//!
//! Subscriptions pump deliveries into one bounded queue per guest; `concurrency`
//! workers take batches from it (up to `batch-size`, waiting at most
//! `batch-linger-ms` to fill one) and call `handler` on an instance of their
//! own, reused from batch to batch. After the call, unsettled messages are
//! accepted (`ok`, auto-ack) or rejected (`err`, trap, deadline). A rejected
//! message is redelivered with backoff until `max-attempts`, then published to
//! the dead-letter channel with its original topic, attempts and last error.
//! A trap or deadline throws the instance away; the next batch gets a new one.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use courier_broker::message::{
    ATTEMPT_KEY, ATTEMPTS_KEY, DELIVERY_ID_KEY, LAST_ERROR_KEY, ORIGINAL_TOPIC_KEY,
};
use courier_broker::{Delivery, Message, Mode, Pattern, Subscription, SubscriptionSpec};
use courier_wasi_messaging::bindings::{Messaging, MessagingPre};
use courier_wasi_messaging::error::describe;
use courier_wasi_messaging::{Consumer, GuestPolicy, MessagingError, WasiMessagingCtx};
use futures::FutureExt;
use futures::future::join_all;
use tokio::sync::{Mutex, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use wasmtime::component::ResourceTable;
use wasmtime::{Engine, Store, StoreLimitsBuilder, Trap};
use wasmtime_wasi::WasiCtxBuilder;

use crate::clients::ClientPool;
use crate::config::{AckMode, DeliveryMode, GuestConfig};
use crate::deliveries::{InFlight, Source, Tracker};
use crate::engine::ticks;
use crate::state::{GuestLog, GuestState};

/// Extension keys the dispatcher handles itself, for every backend.
pub const COMMON_EXTENSIONS: &[&str] = &["mode", "group", "queue-group", "ack-wait-ms", "client"];

/// Extra time a handler blocked in a host call gets beyond its deadline
/// before it is abandoned (wasm code itself is stopped by the epoch).
const HOST_CALL_GRACE: Duration = Duration::from_millis(500);

/// A delivery on its way to a worker.
struct Inbound {
    delivery: Delivery,
    source: Arc<Source>,
}

/// Counters of one guest, for the progress line, tests and `/metrics`.
#[derive(Debug)]
pub struct Stats {
    /// Messages handed to `handler`.
    pub delivered: AtomicU64,
    /// Messages accepted (complete-message or auto-ack).
    pub accepted: AtomicU64,
    /// Messages rejected and redelivered later.
    pub redelivered: AtomicU64,
    /// Messages published to the dead-letter channel, or dropped without one.
    pub dead_lettered: AtomicU64,
    /// Handler calls that trapped or ran past their deadline.
    pub traps: AtomicU64,
    /// Handler calls that returned `err`.
    pub errors: AtomicU64,
    /// The same counters in the metrics registry, labelled with the guest.
    metrics: [metrics::Counter; 6],
}

/// One of the counters of [`Stats`].
#[derive(Debug, Clone, Copy)]
enum Stat {
    Delivered,
    Accepted,
    Redelivered,
    DeadLettered,
    Traps,
    Errors,
}

/// A snapshot of [`Stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatsSnapshot {
    /// See [`Stats::delivered`].
    pub delivered: u64,
    /// See [`Stats::accepted`].
    pub accepted: u64,
    /// See [`Stats::redelivered`].
    pub redelivered: u64,
    /// See [`Stats::dead_lettered`].
    pub dead_lettered: u64,
    /// See [`Stats::traps`].
    pub traps: u64,
    /// See [`Stats::errors`].
    pub errors: u64,
}

impl Stats {
    /// Zeroed counters, registered with the metrics recorder as the guest's.
    fn new(guest: &str) -> Self {
        let counter = |name: &'static str| metrics::counter!(name, "guest" => guest.to_string());
        Self {
            delivered: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            redelivered: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            traps: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            metrics: [
                counter("courier_messages_delivered_total"),
                counter("courier_messages_accepted_total"),
                counter("courier_messages_redelivered_total"),
                counter("courier_messages_dead_lettered_total"),
                counter("courier_handler_traps_total"),
                counter("courier_handler_errors_total"),
            ],
        }
    }

    fn add(&self, stat: Stat, n: u64) {
        let counter = match stat {
            Stat::Delivered => &self.delivered,
            Stat::Accepted => &self.accepted,
            Stat::Redelivered => &self.redelivered,
            Stat::DeadLettered => &self.dead_lettered,
            Stat::Traps => &self.traps,
            Stat::Errors => &self.errors,
        };
        counter.fetch_add(n, Ordering::Relaxed);
        self.metrics[stat as usize].increment(n);
    }

    /// Reads all counters.
    pub fn snapshot(&self) -> StatsSnapshot {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            delivered: r(&self.delivered),
            accepted: r(&self.accepted),
            redelivered: r(&self.redelivered),
            dead_lettered: r(&self.dead_lettered),
            traps: r(&self.traps),
            errors: r(&self.errors),
        }
    }
}

/// How one subscription is made; equal settings mean the subscription can stay.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SubSettings {
    client: String,
    mode: Mode,
    ack_wait: Duration,
    options: BTreeMap<String, String>,
}

struct ActiveSub {
    settings: SubSettings,
    /// Stops the pump; `true` at shutdown, when the pump keeps the
    /// subscription open until the workers have settled their batches.
    stop: oneshot::Sender<bool>,
    task: JoinHandle<()>,
}

impl ActiveSub {
    /// Unsubscribes now.
    async fn stop(self) {
        let _ = self.stop.send(false);
        let _ = self.task.await;
    }
}

/// One instance of the guest and its store.
struct Instance {
    store: Store<GuestState>,
    bindings: Messaging,
}

/// An idle instance of a guest, made as a worker makes one (benchmarks
/// measure instantiation time and memory per instance with it).
pub struct IdleInstance {
    _instance: Instance,
}

/// A running guest.
pub struct GuestRuntime {
    name: Arc<str>,
    config: GuestConfig,
    policy: Arc<GuestPolicy>,
    engine: Engine,
    pre: MessagingPre<GuestState>,
    clients: Arc<ClientPool>,
    tracker: Tracker,
    subs: Mutex<HashMap<String, ActiveSub>>,
    tx: mpsc::Sender<Inbound>,
    rx: Mutex<mpsc::Receiver<Inbound>>,
    /// Deliveries in `tx`'s queue (or carried by a worker), not yet in a batch.
    queued: Arc<AtomicUsize>,
    busy: AtomicUsize,
    stats: Stats,
    shutdown: watch::Sender<bool>,
    /// Set once every worker has stopped, at shutdown.
    workers_done: watch::Sender<bool>,
    workers: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

impl GuestRuntime {
    pub(crate) fn new(
        name: &str,
        config: GuestConfig,
        policy: GuestPolicy,
        engine: Engine,
        pre: MessagingPre<GuestState>,
        clients: Arc<ClientPool>,
    ) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(config.batch_size * config.concurrency);
        Arc::new(Self {
            name: name.into(),
            config,
            policy: Arc::new(policy),
            engine,
            pre,
            clients,
            tracker: Tracker::new(),
            subs: Mutex::new(HashMap::new()),
            tx,
            rx: Mutex::new(rx),
            queued: Arc::new(AtomicUsize::new(0)),
            busy: AtomicUsize::new(0),
            stats: Stats::new(name),
            shutdown: watch::channel(false).0,
            workers_done: watch::channel(false).0,
            workers: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// The guest's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Instantiates the guest once, as a worker does, and keeps it idle.
    pub async fn new_instance(self: &Arc<Self>) -> anyhow::Result<IdleInstance> {
        Ok(IdleInstance {
            _instance: self.instantiate().await?,
        })
    }

    /// The guest's counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// The channels the guest is subscribed to now.
    pub async fn subscriptions(&self) -> Vec<String> {
        let mut v: Vec<String> = self.subs.lock().await.keys().cloned().collect();
        v.sort();
        v
    }

    /// Deliveries handed to the guest and not settled yet.
    pub fn in_flight(&self) -> usize {
        self.tracker.len()
    }

    /// Whether nothing is queued, being handled, or (in auto-ack mode) held.
    pub fn idle(&self) -> bool {
        self.queued.load(Ordering::SeqCst) == 0
            && self.busy.load(Ordering::SeqCst) == 0
            && (self.config.ack == AckMode::Manual || self.tracker.is_empty())
    }

    /// Subscribes to the configured channels and starts the workers.
    pub(crate) async fn start(self: &Arc<Self>) -> anyhow::Result<()> {
        let channels = self
            .config
            .subscribe
            .iter()
            .map(|c| Pattern::parse(c))
            .collect::<Result<Vec<_>, _>>()?;
        let extensions = self
            .config
            .subscribe_options
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        self.update(channels, extensions)
            .await
            .map_err(|e| anyhow::anyhow!("guest `{}`: initial subscriptions: {e}", self.name))?;
        let mut workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        for _ in 0..self.config.concurrency {
            workers.push(tokio::spawn(self.clone().worker()));
        }
        if self.config.ack == AckMode::Manual {
            workers.push(tokio::spawn(self.clone().expire_loop()));
        }
        Ok(())
    }

    /// Stops subscriptions, lets workers finish their batch, and waits for them.
    pub(crate) async fn stop(&self) {
        // Stop taking messages, but close the subscriptions only once the
        // workers are done: on some brokers (AMQP) an ack needs its channel.
        let subs: Vec<ActiveSub> = self.subs.lock().await.drain().map(|(_, s)| s).collect();
        let mut pumps = Vec::with_capacity(subs.len());
        for s in subs {
            let _ = s.stop.send(true);
            pumps.push(s.task);
        }
        self.shutdown.send_replace(true);
        let workers: Vec<_> = self
            .workers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect();
        for w in workers {
            let _ = w.await;
        }
        self.workers_done.send_replace(true);
        for p in pumps {
            let _ = p.await;
        }
    }

    // ---- subscriptions ------------------------------------------------------

    async fn settings_from(
        &self,
        extensions: Vec<(String, String)>,
    ) -> Result<SubSettings, MessagingError> {
        let mut client = self.config.client.clone();
        let mut mode = self.config.mode;
        let mut group = self.config.group_or(&self.name).to_string();
        let mut ack_wait = self.config.ack_wait();
        let mut rest = BTreeMap::new();
        for (k, v) in extensions {
            let bad =
                |what: &str| MessagingError::Other(format!("extension `{k}`: {what}, got `{v}`"));
            match k.as_str() {
                "mode" => {
                    mode = DeliveryMode::parse(&v)
                        .ok_or_else(|| bad("expected `pub-sub` or `point-to-point`"))?
                }
                "group" | "queue-group" => {
                    if v.is_empty() {
                        return Err(bad("expected a group name"));
                    }
                    group = v;
                }
                "ack-wait-ms" => {
                    let ms: u64 = v
                        .parse()
                        .ok()
                        .filter(|ms| *ms > 0)
                        .ok_or_else(|| bad("expected milliseconds above 0"))?;
                    ack_wait = Duration::from_millis(ms);
                }
                "client" => client = v,
                _ => {
                    rest.insert(k, v);
                }
            }
        }
        if !self.policy.clients.contains(&client) {
            return Err(MessagingError::Unauthorized(format!(
                "client `{client}` is not granted to this guest"
            )));
        }
        let backend = self.clients.get(&client).await?;
        let known = backend.option_keys();
        if let Some(k) = rest.keys().find(|k| !known.contains(&k.as_str())) {
            let all: Vec<&str> = COMMON_EXTENSIONS.iter().chain(known).copied().collect();
            return Err(MessagingError::Other(format!(
                "unknown extension `{k}` for the {} backend (known: {})",
                backend.kind(),
                all.join(", ")
            )));
        }
        let mode = match mode {
            DeliveryMode::PubSub => Mode::Broadcast,
            DeliveryMode::PointToPoint => Mode::Competing { group },
        };
        Ok(SubSettings {
            client,
            mode,
            ack_wait,
            options: rest,
        })
    }

    /// Replaces the subscription set with `channels`, all or nothing.
    async fn update(
        self: &Arc<Self>,
        channels: Vec<Pattern>,
        extensions: Vec<(String, String)>,
    ) -> Result<(), MessagingError> {
        let settings = self.settings_from(extensions).await?;
        let mut subs = self.subs.lock().await;
        let mut opened: Vec<(String, ActiveSub)> = Vec::new();
        for pattern in &channels {
            let key = pattern.as_str();
            if subs.get(key).is_some_and(|s| s.settings == settings)
                || opened.iter().any(|(k, _)| k == key)
            {
                continue;
            }
            match self.open(pattern.clone(), settings.clone()).await {
                Ok(sub) => opened.push((key.to_string(), sub)),
                Err(e) => {
                    for (_, s) in opened {
                        s.stop().await;
                    }
                    return Err(e);
                }
            }
        }
        let removed: Vec<String> = subs
            .keys()
            .filter(|k| !channels.iter().any(|p| p.as_str() == k.as_str()))
            .cloned()
            .collect();
        for key in removed {
            if let Some(s) = subs.remove(&key) {
                s.stop().await;
            }
        }
        for (key, sub) in opened {
            if let Some(old) = subs.insert(key, sub) {
                old.stop().await;
            }
        }
        tracing::info!(guest = %self.name, channels = ?subs.keys().collect::<Vec<_>>(), "subscriptions updated");
        Ok(())
    }

    async fn open(
        self: &Arc<Self>,
        pattern: Pattern,
        settings: SubSettings,
    ) -> Result<ActiveSub, MessagingError> {
        let backend = self.clients.get(&settings.client).await?;
        let spec = SubscriptionSpec {
            pattern,
            mode: settings.mode.clone(),
            ack_wait: settings.ack_wait,
            // The guest's queue plus the batches its workers hold.
            prefetch: 2 * self.config.batch_size * self.config.concurrency,
            options: settings.options.clone(),
        };
        let sub = backend.subscribe(spec).await?;
        let source = Arc::new(Source { backend });
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(pump(
            sub,
            source,
            self.tx.clone(),
            self.queued.clone(),
            stopped,
            self.workers_done.subscribe(),
            self.name.clone(),
        ));
        Ok(ActiveSub {
            settings,
            stop,
            task,
        })
    }

    // ---- workers ------------------------------------------------------------

    async fn worker(self: Arc<Self>) {
        let mut instance: Option<Instance> = None;
        let mut carry = None;
        while let Some(batch) = self.next_batch(&mut carry).await {
            self.handle(&mut instance, batch).await;
            self.busy.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Waits for a batch; `None` at shutdown. Counts the worker busy on return.
    ///
    /// A redelivered message travels alone, so that one poison message cannot
    /// take the rest of its first batch down with it again; `carry` keeps a
    /// redelivery met while filling a batch for the next one.
    async fn next_batch(&self, carry: &mut Option<Inbound>) -> Option<Vec<Inbound>> {
        let isolated = |d: &Inbound| d.delivery.attempt > 1;
        // Busy before no longer queued, so that `idle` never sees neither.
        let taken = |n: usize| self.queued.fetch_sub(n, Ordering::SeqCst);
        if let Some(first) = carry.take() {
            self.busy.fetch_add(1, Ordering::SeqCst);
            taken(1);
            return Some(vec![first]);
        }
        let mut shutdown = self.shutdown.subscribe();
        let mut rx = self.rx.lock().await;
        let first = tokio::select! {
            d = rx.recv() => d?,
            _ = shutdown.wait_for(|s| *s) => return None,
        };
        self.busy.fetch_add(1, Ordering::SeqCst);
        taken(1);
        if isolated(&first) {
            return Some(vec![first]);
        }
        let mut batch = Vec::with_capacity(self.config.batch_size);
        batch.push(first);
        let linger = Instant::now() + Duration::from_millis(self.config.batch_linger_ms);
        while batch.len() < self.config.batch_size {
            let next = match rx.try_recv() {
                Ok(d) => d,
                Err(_) if self.config.batch_linger_ms == 0 => break,
                Err(_) => match tokio::time::timeout_at(linger, rx.recv()).await {
                    Ok(Some(d)) => d,
                    _ => break,
                },
            };
            if isolated(&next) {
                *carry = Some(next);
                break;
            }
            taken(1);
            batch.push(next);
        }
        Some(batch)
    }

    async fn handle(self: &Arc<Self>, instance: &mut Option<Instance>, batch: Vec<Inbound>) {
        let first = self.tracker.reserve(batch.len());
        let mut held_all = Vec::with_capacity(batch.len());
        let mut messages = Vec::with_capacity(batch.len());
        for (n, Inbound { delivery, source }) in (first..).zip(batch) {
            let Delivery {
                mut message,
                attempt,
                acker,
            } = delivery;
            // Delivery keys are Courier's own: never trust them from the wire.
            message.remove_meta(DELIVERY_ID_KEY);
            message.remove_meta(ATTEMPT_KEY);
            let held = InFlight {
                acker,
                message,
                attempt,
                source,
                acquired: Instant::now(),
            };
            if held.message.data.len() > self.config.max_message_bytes {
                let reason = format!(
                    "message has {} bytes, more than max-message-bytes ({})",
                    held.message.data.len(),
                    self.config.max_message_bytes
                );
                self.dead_letter(held, reason).await;
                continue;
            }
            messages.push(to_wit_delivery(&held.message, self.tracker.id(n), attempt));
            held_all.push((n, held));
        }
        if messages.is_empty() {
            return;
        }
        let numbers: Vec<u64> = held_all.iter().map(|(n, _)| *n).collect();
        self.tracker.insert_all(held_all);
        self.stats.add(Stat::Delivered, messages.len() as u64);
        let outcome = self.call_handler(instance, &messages).await;
        drop(messages);
        // What the guest did not settle itself, settled together.
        if outcome.is_ok() && self.config.ack == AckMode::Manual {
            return;
        }
        let unsettled = self.tracker.take_all(numbers);
        match &outcome {
            Ok(()) => {
                // Acks that finish at once (the embedded broker's) are taken
                // as they come; only the others are awaited together.
                let mut n = 0;
                let mut pending = Vec::new();
                for held in unsettled {
                    let mut ack = Box::pin(self.accept(held));
                    match (&mut ack).now_or_never() {
                        Some(ok) => n += usize::from(ok),
                        None => pending.push(ack),
                    }
                }
                n += join_all(pending).await.into_iter().filter(|ok| *ok).count();
                self.stats.add(Stat::Accepted, n as u64);
            }
            Err(reason) => {
                join_all(
                    unsettled
                        .into_iter()
                        .map(|held| self.reject(held, reason.clone())),
                )
                .await;
            }
        }
    }

    async fn instantiate(self: &Arc<Self>) -> anyhow::Result<Instance> {
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(GuestLog::new(self.name.clone(), "stdout"))
            .stderr(GuestLog::new(self.name.clone(), "stderr"));
        if self.config.inherit_env {
            wasi.inherit_env();
        }
        for (k, v) in &self.config.env {
            wasi.env(k, v);
        }
        let limit = usize::try_from(self.config.memory_limit_mib << 20).unwrap_or(usize::MAX);
        let state = GuestState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            messaging: WasiMessagingCtx {
                policy: self.policy.clone(),
                connector: self.clients.clone(),
                consumer: Arc::new(GuestConsumer(Arc::downgrade(self))),
            },
            limits: StoreLimitsBuilder::new()
                .memory_size(limit)
                .trap_on_grow_failure(true)
                .build(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(ticks(self.config.handler_timeout()));
        let bindings = self.pre.instantiate_async(&mut store).await?;
        Ok(Instance { store, bindings })
    }

    /// Calls `handler`; `Err` carries the reason the batch failed. A trap or a
    /// deadline discards the instance.
    async fn call_handler(
        self: &Arc<Self>,
        slot: &mut Option<Instance>,
        messages: &[courier_wasi_messaging::bindings::Message],
    ) -> Result<(), String> {
        if slot.is_none() {
            match self.instantiate().await {
                Ok(i) => *slot = Some(i),
                Err(e) => {
                    tracing::error!(guest = %self.name, "cannot instantiate: {e:#}");
                    return Err(format!("instantiation failed: {e:#}"));
                }
            }
        }
        let Some(instance) = slot.as_mut() else {
            unreachable!("instantiated above")
        };
        let deadline = self.config.handler_timeout();
        instance.store.set_epoch_deadline(ticks(deadline));
        let call = instance
            .bindings
            .wasi_messaging_guest()
            .call_handler(&mut instance.store, messages);
        let result = tokio::time::timeout(deadline + HOST_CALL_GRACE, call).await;
        let failure = match result {
            Ok(Ok(Ok(()))) => return Ok(()),
            Ok(Ok(Err(e))) => {
                self.stats.add(Stat::Errors, 1);
                let e = describe(&e);
                tracing::warn!(guest = %self.name, "handler returned error: {e}");
                return Err(format!("handler returned error: {e}"));
            }
            Ok(Err(trap)) if trap.downcast_ref::<Trap>() == Some(&Trap::Interrupt) => {
                format!("handler ran past its deadline of {deadline:?}")
            }
            Ok(Err(trap)) => {
                tracing::debug!(guest = %self.name, "trap: {trap:?}");
                match trap.downcast_ref::<Trap>() {
                    Some(code) => format!("guest trapped: {code}"),
                    None => format!("guest trapped: {}", trap.root_cause()),
                }
            }
            Err(_) => {
                format!("handler ran past its deadline of {deadline:?} (blocked in a host call)")
            }
        };
        *slot = None;
        self.stats.add(Stat::Traps, 1);
        tracing::warn!(guest = %self.name, "{failure}; the instance is replaced");
        Err(failure)
    }

    // ---- settlement -----------------------------------------------------------

    /// Acks; whether the broker took the ack (counting is the caller's).
    async fn accept(&self, held: InFlight) -> bool {
        match held.acker.ack().await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(guest = %self.name, topic = %held.message.topic, "ack failed, the broker will redeliver: {e}");
                false
            }
        }
    }

    /// Redelivers with backoff, or dead-letters after `max-attempts`.
    async fn reject(&self, held: InFlight, reason: String) {
        if held.attempt >= self.config.max_attempts {
            return self.dead_letter(held, reason).await;
        }
        let delay = self.config.backoff(held.attempt);
        tracing::debug!(guest = %self.name, topic = %held.message.topic, attempt = held.attempt, ?delay, "redelivering: {reason}");
        match held.acker.nack(delay).await {
            Ok(()) => self.stats.add(Stat::Redelivered, 1),
            Err(e) => {
                tracing::warn!(guest = %self.name, "nack failed, the broker will redeliver after its ack deadline: {e}")
            }
        }
    }

    async fn dead_letter(&self, held: InFlight, reason: String) {
        let InFlight {
            acker,
            message,
            attempt,
            source,
            ..
        } = held;
        let Some(channel) = &self.config.dead_letter else {
            tracing::warn!(guest = %self.name, topic = %message.topic, attempts = attempt, "dropping message (no dead-letter channel): {reason}");
            self.stats.add(Stat::DeadLettered, 1);
            if let Err(e) = acker.term().await {
                tracing::warn!(guest = %self.name, "settling the dropped message failed: {e}");
            }
            return;
        };
        let mut letter = message;
        letter.set_meta(ORIGINAL_TOPIC_KEY, letter.topic.clone());
        letter.set_meta(ATTEMPTS_KEY, attempt.to_string());
        letter.set_meta(LAST_ERROR_KEY, one_line(&reason));
        letter.topic = channel.clone();
        match source.backend.publish(vec![letter]).await {
            Ok(()) => {
                tracing::warn!(guest = %self.name, dead_letter = %channel, attempts = attempt, "dead-lettered: {reason}");
                self.stats.add(Stat::DeadLettered, 1);
                if let Err(e) = acker.term().await {
                    tracing::warn!(guest = %self.name, "settling the dead-lettered message failed: {e}");
                }
            }
            Err(e) => {
                tracing::error!(guest = %self.name, dead_letter = %channel, "cannot publish dead letter, keeping the message: {e}");
                let _ = acker.nack(self.config.backoff(attempt)).await;
            }
        }
    }

    async fn expire_loop(self: Arc<Self>) {
        let mut shutdown = self.shutdown.subscribe();
        let wait = self.config.ack_wait();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(wait.min(Duration::from_secs(1))) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
            if let Some(before) = Instant::now().checked_sub(wait) {
                let n = self.tracker.expire(before);
                if n > 0 {
                    tracing::debug!(guest = %self.name, "{n} unsettled deliveries passed their ack deadline");
                }
            }
        }
    }
}

/// The message as the guest gets it: Courier's delivery id and attempt added
/// to its metadata.
fn to_wit_delivery(
    m: &Message,
    id: String,
    attempt: u32,
) -> courier_wasi_messaging::bindings::Message {
    let mut metadata = Vec::with_capacity(m.metadata.len() + 2);
    metadata.extend(m.metadata.iter().cloned());
    metadata.push((DELIVERY_ID_KEY.to_string(), id));
    metadata.push((ATTEMPT_KEY.to_string(), attempt.to_string()));
    courier_wasi_messaging::bindings::Message {
        topic: m.topic.clone(),
        content_type: m.content_type.clone(),
        reply_to: m.reply_to.clone(),
        data: m.data.to_vec(),
        metadata: Some(metadata),
    }
}

/// The most deliveries a pump takes from its subscription at once.
const MAX_PUMP_BATCH: usize = 256;

/// Moves deliveries from a broker subscription to the guest's queue.
async fn pump(
    mut sub: Box<dyn Subscription>,
    source: Arc<Source>,
    tx: mpsc::Sender<Inbound>,
    queued: Arc<AtomicUsize>,
    mut stop: oneshot::Receiver<bool>,
    mut workers_done: watch::Receiver<bool>,
    guest: Arc<str>,
) {
    let mut shutdown = false;
    loop {
        // Room in the guest's queue first, then a message: what the guest
        // cannot take yet stays available in the broker for other consumers.
        // Waiting must not block an unsubscribe: the guest may be
        // unsubscribing from inside the handler that would make the room.
        let permit = tokio::select! {
            r = &mut stop => {
                shutdown = r.unwrap_or(false);
                break;
            }
            permit = tx.reserve() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        // Whatever else the queue has room for right now may come along
        // (without holding that room while waiting: other pumps share it).
        let room = tx.capacity().min(MAX_PUMP_BATCH);
        tokio::select! {
            r = &mut stop => {
                shutdown = r.unwrap_or(false);
                break;
            }
            next = sub.next_batch(1 + room) => match next {
                Some(Ok(deliveries)) => {
                    queued.fetch_add(deliveries.len(), Ordering::SeqCst);
                    let mut deliveries = deliveries.into_iter();
                    if let Some(delivery) = deliveries.next() {
                        permit.send(Inbound { delivery, source: source.clone() });
                    }
                    for delivery in deliveries {
                        let inbound = Inbound { delivery, source: source.clone() };
                        // Another pump may have taken the room meanwhile.
                        let sent = match tx.try_send(inbound) {
                            Ok(()) => Ok(()),
                            Err(mpsc::error::TrySendError::Full(inbound)) => {
                                tx.send(inbound).await.map_err(|_| ())
                            }
                            Err(mpsc::error::TrySendError::Closed(_)) => Err(()),
                        };
                        if sent.is_err() {
                            break;
                        }
                    }
                }
                Some(Err(e)) => {
                    drop(permit);
                    tracing::warn!(guest = %guest, "subscription error, retrying: {e}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                None => break,
            },
        }
    }
    if shutdown {
        let _ = workers_done.wait_for(|done| *done).await;
    }
    if let Err(e) = sub.close().await {
        tracing::warn!(guest = %guest, "closing subscription: {e}");
    }
}

/// The `consumer` interface of one guest, as the messaging host sees it.
struct GuestConsumer(Weak<GuestRuntime>);

impl GuestConsumer {
    fn guest(&self) -> Result<Arc<GuestRuntime>, MessagingError> {
        self.0
            .upgrade()
            .ok_or_else(|| MessagingError::Other("the guest is shutting down".into()))
    }
}

fn not_held() -> MessagingError {
    MessagingError::Other(
        "no such delivery: the message was not delivered to this guest, or is already settled"
            .into(),
    )
}

#[async_trait]
impl Consumer for GuestConsumer {
    async fn update(
        &self,
        channels: Vec<Pattern>,
        extensions: Vec<(String, String)>,
    ) -> Result<(), MessagingError> {
        self.guest()?.update(channels, extensions).await
    }

    async fn complete(&self, message: Message) -> Result<(), MessagingError> {
        let guest = self.guest()?;
        let held = guest.tracker.take_for(&message).ok_or_else(not_held)?;
        held.acker
            .ack()
            .await
            .map_err(|e| MessagingError::Other(format!("the broker refused the ack: {e}")))?;
        guest.stats.add(Stat::Accepted, 1);
        Ok(())
    }

    async fn abandon(&self, message: Message) -> Result<(), MessagingError> {
        let guest = self.guest()?;
        let held = guest.tracker.take_for(&message).ok_or_else(not_held)?;
        guest.reject(held, "abandoned by the guest".into()).await;
        Ok(())
    }
}

/// `reason` on one line: a header value cannot hold a line break on every
/// broker (NATS refuses it), and a guest's error text may have some.
fn one_line(reason: &str) -> String {
    reason.replace(['\r', '\n'], " ")
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn last_error_is_one_line() {
        assert_eq!(
            one_line("bad input\r\nat line 2\n"),
            "bad input  at line 2 "
        );
        assert_eq!(
            one_line("guest trapped: unreachable"),
            "guest trapped: unreachable"
        );
    }
}
