//! One guest at run time: its subscriptions, its workers, and what happens
//! to each delivery.
//!
//! Subscriptions pump deliveries ([`crate::pump`]) into one bounded queue per
//! guest; `concurrency` workers take batches from it (up to `batch-size`,
//! waiting at most `batch-linger-ms` to fill one) and call `handler` on an
//! instance of their own ([`crate::instance`]), reused from batch to batch.
//!
//! After a call, unsettled messages are accepted (`ok`, auto-ack) or rejected
//! (`err`, trap, deadline). A failure is charged only to a message that was
//! alone in its call: when a call of several messages fails, each of its
//! unsettled messages is handed to the guest again, alone and at the same
//! attempt, so that a batch-mate's failure costs no one an attempt. A charged
//! failure redelivers the message with backoff until `max-attempts`, then it
//! is published to the dead-letter channel with its original topic, attempts
//! and last error. With `ack = "manual"`, a message still unsettled
//! `ack-wait-ms` after it was handed over is a charged failure too. A trap or
//! deadline throws the instance away; the next call gets a new one.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use courier_broker::message::{
    ATTEMPT_KEY, ATTEMPTS_KEY, DELIVERY_ID_KEY, LAST_ERROR_KEY, ORIGINAL_TOPIC_KEY,
};
use courier_broker::{Delivery, ErrorKind, Message, Mode, Pattern, SubscriptionSpec};
use courier_wasi_messaging::bindings::MessagingPre;
use courier_wasi_messaging::{Consumer, GuestPolicy, MessagingError, WasiMessagingCtx};
use futures::FutureExt;
use futures::future::join_all;
use tokio::sync::{Mutex, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument;
use wasmtime::Engine;

use crate::clients::ClientPool;
use crate::config::{AckMode, DeliveryMode, GuestConfig};
use crate::deliveries::{InFlight, Source, Tracker};
use crate::instance::{CallScope, HandlerFailure, Instance};
use crate::pump::{Inbound, pump};
use crate::state::GuestState;
use crate::stats::{Stat, Stats, StatsSnapshot};

/// Extension keys the dispatcher handles itself, for every backend.
pub const COMMON_EXTENSIONS: &[&str] = &["mode", "group", "queue-group", "ack-wait-ms", "client"];

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
    /// Tells the pump to stop taking messages now; it closes the
    /// subscription by itself (a network round trip or more, which a guest
    /// unsubscribing from inside its handler must not wait for). Returns the
    /// pump, to be awaited at shutdown.
    fn unsubscribe(self) -> JoinHandle<()> {
        let _ = self.stop.send(false);
        self.task
    }
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
    /// Held by an update from start to end; `true` once the guest stops.
    updating: Mutex<bool>,
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
    /// Pumps stopped by an unsubscribe, closing their subscriptions.
    closing: std::sync::Mutex<Vec<JoinHandle<()>>>,
    /// The instance made at start to prove the guest can run, for the
    /// first worker to use.
    first_instance: std::sync::Mutex<Option<Instance>>,
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
            updating: Mutex::new(false),
            tx,
            rx: Mutex::new(rx),
            queued: Arc::new(AtomicUsize::new(0)),
            busy: AtomicUsize::new(0),
            stats: Stats::new(name),
            shutdown: watch::channel(false).0,
            workers_done: watch::channel(false).0,
            workers: std::sync::Mutex::new(Vec::new()),
            closing: std::sync::Mutex::new(Vec::new()),
            first_instance: std::sync::Mutex::new(None),
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

    /// Whether nothing is queued, being handled or settled, or (in auto-ack
    /// mode) held.
    pub fn idle(&self) -> bool {
        // The held deliveries first: whoever takes one out of the tracker
        // counts itself busy before, so that it is seen one way or the other.
        (self.config.ack == AckMode::Manual || self.tracker.is_empty())
            && self.queued.load(Ordering::SeqCst) == 0
            && self.busy.load(Ordering::SeqCst) == 0
    }

    /// Instantiates the guest once, with its configured limits, before it
    /// takes any message: a guest that cannot run (an export of the wrong
    /// type, a memory limit below what it needs) fails here, with the
    /// reason, instead of failing every batch. Done once: a guest already
    /// prepared keeps its instance.
    pub(crate) async fn prepare(self: &Arc<Self>) -> anyhow::Result<()> {
        if self.first_instance().is_some() {
            return Ok(());
        }
        let instance = self.instantiate().await.with_context(|| {
            format!(
                "guest `{}` cannot run (memory-limit-mib = {})",
                self.name, self.config.memory_limit_mib
            )
        })?;
        *self.first_instance() = Some(instance);
        Ok(())
    }

    fn first_instance(&self) -> std::sync::MutexGuard<'_, Option<Instance>> {
        self.first_instance
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Subscribes to the configured channels and starts the workers
    /// ([`GuestRuntime::prepare`] first, if it has not run).
    pub(crate) async fn start(self: &Arc<Self>) -> anyhow::Result<()> {
        self.prepare().await?;
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
        // No update after this one (none is halfway either).
        let mut stopped = self.updating.lock().await;
        *stopped = true;
        let subs: Vec<ActiveSub> = self.subs.lock().await.drain().map(|(_, s)| s).collect();
        drop(stopped);
        let mut pumps = Vec::with_capacity(subs.len());
        for s in subs {
            let _ = s.stop.send(true);
            pumps.push(s.task);
        }
        self.shutdown.send_replace(true);
        join_all_of(&self.workers).await;
        self.workers_done.send_replace(true);
        for p in pumps {
            let _ = p.await;
        }
        join_all_of(&self.closing).await;
    }

    /// Stops a subscription's pump and keeps it to await at shutdown.
    fn retire(&self, sub: ActiveSub) {
        let mut closing = self.closing.lock().unwrap_or_else(|e| e.into_inner());
        closing.retain(|p| !p.is_finished());
        closing.push(sub.unsubscribe());
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
        if mode == DeliveryMode::PointToPoint {
            self.may_join(&group)?;
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

    /// Point-to-point groups belong to the guests configured for them: a
    /// guest may join its own group and the groups of its `allow-groups`,
    /// and no other (it would take messages meant for another guest).
    fn may_join(&self, group: &str) -> Result<(), MessagingError> {
        let own = self.config.group_or(&self.name);
        if group == own || self.config.allow_groups.iter().any(|g| g == group) {
            return Ok(());
        }
        Err(MessagingError::Unauthorized(format!(
            "group `{group}` is not this guest's: it may join `{own}`{}",
            if self.config.allow_groups.is_empty() {
                String::new()
            } else {
                format!(" and {}", self.config.allow_groups.join(", "))
            }
        )))
    }

    /// Replaces the subscription set with `channels`, all or nothing.
    async fn update(
        self: &Arc<Self>,
        channels: Vec<Pattern>,
        extensions: Vec<(String, String)>,
    ) -> Result<(), MessagingError> {
        let settings = self.settings_from(extensions).await?;
        // One update at a time (each replaces the whole set), but the set
        // itself is locked only to read or change it, never across the
        // network I/O of opening subscriptions.
        let stopped = self.updating.lock().await;
        if *stopped {
            return Err(MessagingError::Other(format!(
                "guest `{}` is stopping",
                self.name
            )));
        }
        let to_open: Vec<Pattern> = {
            let subs = self.subs.lock().await;
            let mut to_open: Vec<Pattern> = Vec::new();
            for pattern in &channels {
                let key = pattern.as_str();
                if !subs.get(key).is_some_and(|s| s.settings == settings)
                    && !to_open.iter().any(|p| p.as_str() == key)
                {
                    to_open.push(pattern.clone());
                }
            }
            to_open
        };
        let mut opened: Vec<(String, ActiveSub)> = Vec::new();
        for pattern in to_open {
            let key = pattern.as_str().to_string();
            match self.open(pattern, settings.clone()).await {
                Ok(sub) => opened.push((key, sub)),
                Err(e) => {
                    for (_, s) in opened {
                        self.retire(s);
                    }
                    return Err(e);
                }
            }
        }
        let mut subs = self.subs.lock().await;
        let removed: Vec<String> = subs
            .keys()
            .filter(|k| !channels.iter().any(|p| p.as_str() == k.as_str()))
            .cloned()
            .collect();
        for key in removed {
            if let Some(s) = subs.remove(&key) {
                self.retire(s);
            }
        }
        for (key, sub) in opened {
            if let Some(old) = subs.insert(key, sub) {
                self.retire(old);
            }
        }
        tracing::info!(guest = %self.name, channels = ?subs.keys().collect::<Vec<_>>(), "subscriptions updated");
        drop(stopped);
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
            ack_wait: broker_ack_wait(settings.ack_wait, self.config.handler_timeout()),
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
        let mut instance: Option<Instance> = self.first_instance().take();
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

    /// Handles one batch: admits its deliveries, calls the guest, and
    /// settles what the guest left, retrying a failed call's messages alone.
    async fn handle(self: &Arc<Self>, instance: &mut Option<Instance>, batch: Vec<Inbound>) {
        let mut held = Vec::with_capacity(batch.len());
        for Inbound { delivery, source } in batch {
            if let Some(f) = self.admit(delivery, source).await {
                held.push(f);
            }
        }
        if held.len() <= 1 {
            if let Some((failure, unsettled)) = self.call(instance, held).await {
                self.reject_all(unsettled, &failure).await;
            }
            return;
        }
        // A failed call of several messages charges none of them: each one
        // it left unsettled is handed over again alone, at the same attempt,
        // and only a failure of its own counts.
        let Some((failure, unsettled)) = self.call(instance, held).await else {
            return;
        };
        tracing::debug!(guest = %self.name, messages = unsettled.len(), "{failure}; retrying each unsettled message alone");
        for f in unsettled {
            if let Some((failure, left)) = self.call(instance, vec![f]).await {
                self.reject_all(left, &failure).await;
            }
        }
    }

    /// Takes a delivery in: Courier's delivery keys stripped, and refused
    /// (dead-lettered) when it is too large or already had its attempts.
    async fn admit(&self, delivery: Delivery, source: Arc<Source>) -> Option<InFlight> {
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
            waiting_since: None,
        };
        let max = self.config.max_attempts;
        if held.message.data.len() > self.config.max_message_bytes {
            let reason = format!(
                "message has {} bytes, more than max-message-bytes ({})",
                held.message.data.len(),
                self.config.max_message_bytes
            );
            self.dead_letter(held, reason, attempt).await;
            return None;
        }
        // The broker redelivered on its own (its ack deadline passed while
        // no Courier was there to count): max-attempts holds all the same.
        if attempt > max {
            let reason =
                format!("delivered {attempt} times without being settled (max-attempts is {max})");
            self.dead_letter(held, reason, max).await;
            return None;
        }
        Some(held)
    }

    /// One `handler` call over `held`. On `ok` the unsettled deliveries are
    /// accepted (auto-ack) or stay held (manual); on a failure they are
    /// returned, with the failure, for the caller to settle.
    async fn call(
        self: &Arc<Self>,
        slot: &mut Option<Instance>,
        held: Vec<InFlight>,
    ) -> Option<(HandlerFailure, Vec<InFlight>)> {
        if held.is_empty() {
            return None;
        }
        let first = self.tracker.reserve(held.len());
        let numbers: Vec<u64> = (first..).take(held.len()).collect();
        let messages: Vec<_> = numbers
            .iter()
            .zip(&held)
            .map(|(n, f)| to_wit_delivery(&f.message, self.tracker.id(*n), f.attempt))
            .collect();
        self.tracker
            .insert_all(numbers.iter().copied().zip(held).map(|(n, mut f)| {
                f.waiting_since = None;
                (n, f)
            }));
        self.stats.add(Stat::Delivered, messages.len() as u64);
        let ids: Vec<String> = numbers.iter().map(|n| self.tracker.id(*n)).collect();
        let span = tracing::info_span!("handler", guest = %self.name, batch = messages.len(), deliveries = ?ids);
        let outcome = async {
            match self.instance(slot).await {
                Ok(instance) => {
                    instance
                        .call(&messages, &numbers, self.config.handler_timeout())
                        .await
                }
                Err(failure) => Err(failure),
            }
        }
        .instrument(span)
        .await;
        drop(messages);
        let failure = match outcome {
            Ok(()) if self.config.ack == AckMode::Manual => {
                self.tracker.start_waiting(&numbers, Instant::now());
                return None;
            }
            Ok(()) => {
                self.accept_all(self.tracker.take_all(numbers)).await;
                return None;
            }
            Err(failure) => failure,
        };
        match &failure {
            HandlerFailure::Returned(e) => {
                self.stats.add(Stat::Errors, 1);
                tracing::warn!(guest = %self.name, "handler returned error: {e}");
            }
            HandlerFailure::Instantiation(e) => {
                tracing::error!(guest = %self.name, "cannot instantiate: {e}");
            }
            HandlerFailure::Trap(_) | HandlerFailure::Deadline { .. } => {
                self.stats.add(Stat::Traps, 1);
                tracing::warn!(guest = %self.name, "{failure}; the instance is replaced");
            }
        }
        if failure.discards_instance() {
            *slot = None;
        }
        Some((failure, self.tracker.take_all(numbers)))
    }

    /// The worker's instance, made now if it has none.
    async fn instance<'a>(
        self: &Arc<Self>,
        slot: &'a mut Option<Instance>,
    ) -> Result<&'a mut Instance, HandlerFailure> {
        if slot.is_none() {
            let instance = self
                .instantiate()
                .await
                .map_err(|e| HandlerFailure::Instantiation(format!("{e:#}")))?;
            *slot = Some(instance);
        }
        Ok(slot.as_mut().expect("filled above"))
    }

    async fn instantiate(self: &Arc<Self>) -> anyhow::Result<Instance> {
        let scope = Arc::new(CallScope::default());
        let messaging = WasiMessagingCtx {
            policy: self.policy.clone(),
            connector: self.clients.clone(),
            consumer: Arc::new(GuestConsumer {
                guest: Arc::downgrade(self),
                scope: scope.clone(),
            }),
        };
        Instance::new(
            &self.engine,
            &self.pre,
            &self.name,
            &self.config,
            messaging,
            scope,
        )
        .await
    }

    // ---- settlement -----------------------------------------------------------

    /// Accepts deliveries whose handler returned `ok`, counting those the
    /// broker took. Acks that finish at once (the embedded broker's) are
    /// taken as they come; only the others are awaited together.
    async fn accept_all(&self, held: Vec<InFlight>) {
        let mut n = 0;
        let mut pending = Vec::new();
        for f in held {
            let mut ack = Box::pin(self.accept(f));
            match (&mut ack).now_or_never() {
                Some(ok) => n += usize::from(ok),
                None => pending.push(ack),
            }
        }
        n += join_all(pending).await.into_iter().filter(|ok| *ok).count();
        self.stats.add(Stat::Accepted, n as u64);
    }

    /// Acks; whether the broker took the ack (counting is the caller's).
    async fn accept(&self, held: InFlight) -> bool {
        match held.acker.ack().await {
            Ok(()) => true,
            // The broker's own words say what becomes of it.
            Err(e) if e.kind() == ErrorKind::Settled => {
                tracing::warn!(guest = %self.name, topic = %held.message.topic, "not acknowledged: {e}");
                false
            }
            Err(e) => {
                tracing::warn!(guest = %self.name, topic = %held.message.topic, "ack failed, the broker will redeliver after its ack deadline: {e}");
                false
            }
        }
    }

    /// Charges each of `held` with `failure` (see [`GuestRuntime::reject`]).
    async fn reject_all(&self, held: Vec<InFlight>, failure: &HandlerFailure) {
        let reason = failure.to_string();
        join_all(held.into_iter().map(|f| self.reject(f, reason.clone()))).await;
    }

    /// A failure of the message's own: redelivered with backoff, or
    /// dead-lettered once it has failed `max-attempts` times.
    async fn reject(&self, held: InFlight, reason: String) {
        if held.attempt >= self.config.max_attempts {
            let attempts = held.attempt;
            return self.dead_letter(held, reason, attempts).await;
        }
        let delay = self.config.backoff(held.attempt);
        tracing::debug!(guest = %self.name, topic = %held.message.topic, attempt = held.attempt, ?delay, "redelivering: {reason}");
        match held.acker.nack(delay).await {
            Ok(()) => self.stats.add(Stat::Redelivered, 1),
            Err(e) if e.kind() == ErrorKind::Settled => {
                tracing::warn!(guest = %self.name, "not redelivered by Courier: {e}")
            }
            Err(e) => {
                tracing::warn!(guest = %self.name, "nack failed, the broker will redeliver after its ack deadline: {e}")
            }
        }
    }

    /// Publishes the message to the dead-letter channel with `attempts`
    /// and `reason` (or drops it, logged, without one), then settles it.
    async fn dead_letter(&self, held: InFlight, reason: String, attempts: u32) {
        let InFlight {
            acker,
            message,
            source,
            ..
        } = held;
        let Some(channel) = &self.config.dead_letter else {
            tracing::warn!(guest = %self.name, topic = %message.topic, attempts, "dropping message (no dead-letter channel): {reason}");
            self.stats.add(Stat::DeadLettered, 1);
            if let Err(e) = acker.term().await {
                tracing::warn!(guest = %self.name, "settling the dropped message failed: {e}");
            }
            return;
        };
        let mut letter = message;
        letter.set_meta(ORIGINAL_TOPIC_KEY, letter.topic.clone());
        letter.set_meta(ATTEMPTS_KEY, attempts.to_string());
        letter.set_meta(LAST_ERROR_KEY, one_line(&reason));
        letter.topic = channel.clone();
        match source.backend.publish(vec![letter]).await {
            Ok(()) => {
                tracing::warn!(guest = %self.name, dead_letter = %channel, attempts, "dead-lettered: {reason}");
                self.stats.add(Stat::DeadLettered, 1);
                if let Err(e) = acker.term().await {
                    tracing::warn!(guest = %self.name, "settling the dead-lettered message failed: {e}");
                }
            }
            Err(e) => {
                tracing::error!(guest = %self.name, dead_letter = %channel, "cannot publish dead letter, keeping the message: {e}");
                let _ = acker.nack(self.config.backoff(attempts)).await;
            }
        }
    }

    /// With manual acks: a delivery still unsettled `ack-wait-ms` after its
    /// handler call returned has failed, and is charged like any failure.
    async fn expire_loop(self: Arc<Self>) {
        let mut shutdown = self.shutdown.subscribe();
        let wait = self.config.ack_wait();
        let every = (wait / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
            let Some(before) = Instant::now().checked_sub(wait) else {
                continue;
            };
            // Busy while rejecting: the deliveries are out of the tracker but
            // not settled yet.
            self.busy.fetch_add(1, Ordering::SeqCst);
            let expired = self.tracker.expire(before);
            if !expired.is_empty() {
                tracing::debug!(guest = %self.name, "{} unsettled deliveries passed their ack deadline", expired.len());
                let reason = format!("not settled within ack-wait-ms ({} ms)", wait.as_millis());
                join_all(expired.into_iter().map(|f| self.reject(f, reason.clone()))).await;
            }
            self.busy.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Waits for every task in `tasks` (taken out of it).
async fn join_all_of(tasks: &std::sync::Mutex<Vec<JoinHandle<()>>>) {
    let tasks: Vec<_> = tasks
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .drain(..)
        .collect();
    for t in tasks {
        let _ = t.await;
    }
}

/// The ack deadline given to the broker: later than Courier's own (which
/// counts from the end of the handler call), so that Courier, which counts
/// the attempt, acts first while it runs; the broker's deadline takes over
/// only when no Courier is there (a crash). Public so that tests can wait
/// out exactly this window.
pub fn broker_ack_wait(ack_wait: Duration, handler_timeout: Duration) -> Duration {
    handler_timeout + ack_wait + (ack_wait / 2).max(Duration::from_secs(1))
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

/// The `consumer` interface of one guest instance, as the messaging host
/// sees it.
struct GuestConsumer {
    guest: Weak<GuestRuntime>,
    /// The deliveries of the call the instance is running.
    scope: Arc<CallScope>,
}

impl GuestConsumer {
    fn guest(&self) -> Result<Arc<GuestRuntime>, MessagingError> {
        self.guest
            .upgrade()
            .ok_or_else(|| MessagingError::Other("the guest is shutting down".into()))
    }

    fn take(&self, guest: &GuestRuntime, message: &Message) -> Result<InFlight, MessagingError> {
        guest
            .tracker
            .take_for(message, &self.scope.current())
            .ok_or_else(not_held)
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
        let held = self.take(&guest, &message)?;
        held.acker
            .ack()
            .await
            .map_err(|e| MessagingError::Other(format!("the broker refused the ack: {e}")))?;
        guest.stats.add(Stat::Accepted, 1);
        Ok(())
    }

    async fn abandon(&self, message: Message) -> Result<(), MessagingError> {
        let guest = self.guest()?;
        let held = self.take(&guest, &message)?;
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
