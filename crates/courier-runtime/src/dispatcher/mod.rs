//! The dispatcher: one guest at run time — its subscriptions, its workers,
//! and what happens to each delivery.
//!
//! Subscriptions (`subscriptions`) pump deliveries (`pump`) into one
//! bounded queue per guest; `concurrency` workers (`worker`) take batches
//! from it (up to `batch-size`, waiting at most `batch-linger-ms` to fill
//! one) and call `handler` on an instance of their own ([`instance`]),
//! reused from batch to batch.
//!
//! After a call (`settlement`), unsettled messages are accepted (`ok`,
//! auto-ack) or rejected (`err`, trap, deadline). A failure is charged only
//! to a message that was alone in its call: when a call of several messages
//! fails, each of its unsettled messages is handed to the guest again, alone
//! and at the same attempt, so that a batch-mate's failure costs no one an
//! attempt. A charged failure redelivers the message with backoff until
//! `max-attempts`, then it is published to the dead-letter channel with its
//! original topic, attempts and last error. With `ack = "manual"`, a message
//! still unsettled `ack-wait-ms` after it was handed over is a charged
//! failure too. A trap or deadline throws the instance away; the next call
//! gets a new one.
//!
//! The modules:
//! - this one: [`GuestRuntime`] itself, its start and stop;
//! - `subscriptions`: subscription settings, group rights, updates;
//! - `pump`: from a broker subscription into the guest's queue;
//! - `queue`: the guest's queue, filled and emptied a batch at a time;
//! - `worker`: batching and the `handler` call;
//! - `load`: what is queued and busy, and the signal of a guest gone idle;
//! - `settlement`: accept (a batch in one step where the broker allows
//!   it), redeliver, dead-letter, ack deadlines;
//! - `consumer`: a new instance and its `consumer` interface;
//! - [`deliveries`]: in-flight deliveries by delivery id;
//! - [`instance`]: one instance of a guest and a `handler` call on it;
//! - [`state`]: what an instance's store holds;
//! - [`stats`]: a guest's counters.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use courier_wasi_messaging::GuestPolicy;
use courier_wasi_messaging::bindings::MessagingPre;
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;
use wasmtime::Engine;

use crate::clients::ClientPool;
use crate::config::{AckMode, GuestConfig};
use crate::readiness::GuestStatus;
use deliveries::Tracker;
use instance::Instance;
pub use load::Activity;
use load::Load;
use pump::release;
use queue::{Feeder, GuestQueue};
use state::GuestState;
use stats::{Stats, StatsSnapshot};
use subscriptions::ActiveSub;

mod consumer;
pub mod deliveries;
pub mod instance;
mod load;
pub(crate) mod pump;
mod queue;
mod settlement;
pub mod state;
pub mod stats;
mod subscriptions;
#[cfg(test)]
mod tests;
mod worker;

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
    /// The guest's queue, for new pumps; `None` once the guest stops, so
    /// that the queue ends when the last pump has let go of it.
    feeder: std::sync::Mutex<Option<Feeder>>,
    /// The guest's queue, for its workers.
    queue: Arc<GuestQueue>,
    /// Deliveries in the queue, not yet in a batch, and workers busy.
    load: Arc<Load>,
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
    /// Set once the guest has subscribed and its workers run.
    started: AtomicBool,
    /// Why the last attempt to make an instance failed, until one succeeds.
    instantiation_error: std::sync::Mutex<Option<String>>,
}

impl GuestRuntime {
    pub(crate) fn new(
        name: &str,
        config: GuestConfig,
        policy: GuestPolicy,
        engine: Engine,
        pre: MessagingPre<GuestState>,
        clients: Arc<ClientPool>,
        activity: Activity,
    ) -> Arc<Self> {
        let load = Arc::new(Load::new(activity));
        let feeder = GuestQueue::with_feeder(config.batch_size * config.concurrency, load.clone());
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
            queue: feeder.queue().clone(),
            feeder: std::sync::Mutex::new(Some(feeder)),
            load,
            stats: Stats::new(name),
            shutdown: watch::channel(false).0,
            workers_done: watch::channel(false).0,
            workers: std::sync::Mutex::new(Vec::new()),
            closing: std::sync::Mutex::new(Vec::new()),
            first_instance: std::sync::Mutex::new(None),
            started: AtomicBool::new(false),
            instantiation_error: std::sync::Mutex::new(None),
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
            && self.load.queued() == 0
            && self.load.busy() == 0
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
        let channels = self.config.subscribe.clone();
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
        self.started.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Whether the guest takes messages now ([`GuestStatus`]): its worker
    /// tasks (and, with manual acks, its ack-deadline task) all running,
    /// and its last attempt to make an instance successful.
    pub fn status(&self) -> GuestStatus {
        if *self.shutdown.borrow() {
            return GuestStatus::Stopped;
        }
        if !self.started.load(Ordering::SeqCst) {
            return GuestStatus::Starting;
        }
        let (dead, of) = {
            let workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
            // Before shutdown a worker ends only by panicking.
            let dead = workers.iter().filter(|w| w.is_finished()).count();
            (dead, workers.len())
        };
        if dead > 0 {
            return GuestStatus::WorkersDied { dead, of };
        }
        match self.instantiation_error().clone() {
            Some(error) => GuestStatus::CannotInstantiate { error },
            None => GuestStatus::Running,
        }
    }

    /// Why the last attempt to make an instance failed, if it did.
    fn instantiation_error(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.instantiation_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Stops subscriptions, lets workers finish their batch, hands what is
    /// still queued back to the broker, and waits for it all.
    ///
    /// Every delivery the guest had is then settled (by its handling) or
    /// handed back without an attempt counted (never handed to the guest):
    /// another consumer of the same queue gets it at once, not after the
    /// broker's ack deadline.
    pub(crate) async fn stop(&self) {
        // Stop taking messages, but close the subscriptions only once the
        // workers are done and the queue handed back: on some brokers
        // (AMQP) a settlement needs its channel. No update after this one
        // (none is halfway either), and no new pump.
        let mut stopped = self.updating.lock().await;
        *stopped = true;
        let subs: Vec<ActiveSub> = self.subs.lock().await.drain().map(|(_, s)| s).collect();
        self.feeder.lock().unwrap_or_else(|e| e.into_inner()).take();
        drop(stopped);
        let mut pumps = Vec::with_capacity(subs.len());
        for s in subs {
            let _ = s.stop.send(true);
            pumps.push(s.task);
        }
        self.shutdown.send_replace(true);
        join_all_of(&self.workers).await;
        self.hand_back().await;
        if self.config.ack == AckMode::Manual {
            self.give_back_held().await;
        }
        self.workers_done.send_replace(true);
        for p in pumps {
            let _ = p.await;
        }
        join_all_of(&self.closing).await;
    }

    /// Releases every delivery left in the queue once the workers are gone.
    /// Each pump drops its feeder as soon as it is stopped, so the queue
    /// ends when the last one has.
    async fn hand_back(&self) {
        let mut n = 0;
        while let Some(left) = self.queue.drain().await {
            let k = left.len();
            release(&self.name, left.into_iter()).await;
            self.load.hand_back(k);
            n += k;
        }
        if n > 0 {
            tracing::info!(guest = %self.name, "handed {n} queued deliveries back to the broker");
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
