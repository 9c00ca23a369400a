//! The host as a whole: one engine, one client pool, and the guests of a
//! configuration.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use courier_broker::Backend;
use courier_embedded::EmbeddedBroker;
use courier_wasi_messaging::GuestPolicy;
use courier_wasi_messaging::bindings::MessagingPre;
use wasmtime::Engine;
use wasmtime::component::{Component, Linker};

use crate::clients::ClientPool;
use crate::config::{ClientConfig, Config};
use crate::dispatcher::{Activity, GuestRuntime};
use crate::engine::{EngineOptions, load_component, new_engine_with};
use crate::readiness::{GuestReadiness, Readiness};
use crate::state::GuestState;
use crate::stats::StatsSnapshot;

/// A configured host, ready to start.
pub struct Runtime {
    engine: Engine,
    clients: Arc<ClientPool>,
    guests: Vec<Arc<GuestRuntime>>,
    ingress_client: String,
    /// Bumped whenever a guest may have become idle.
    activity: Activity,
}

/// A linker with WASI p2 and `wasi:messaging`.
pub fn linker(engine: &Engine) -> anyhow::Result<Linker<GuestState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    courier_wasi_messaging::add_to_linker(&mut linker)?;
    Ok(linker)
}

/// Links a guest component, naming what it imports that Courier lacks.
pub fn link(
    linker: &Linker<GuestState>,
    component: &Component,
    path: &Path,
) -> anyhow::Result<MessagingPre<GuestState>> {
    let pre = linker
        .instantiate_pre(component)
        .map_err(anyhow::Error::from)
        .with_context(|| {
            format!(
                "`{}` imports something Courier does not provide",
                path.display()
            )
        })
        .map_err(|e| {
            // componentize-js links its fetch() unless told not to.
            if format!("{e:#}").contains("wasi:http/") {
                e.context(
                    "Courier gives guests no wasi:http (a guest reaches the world through \
                     wasi:messaging); with componentize-js, build with \
                     `--disable http fetch-event`",
                )
            } else {
                e
            }
        })?;
    MessagingPre::new(pre)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("`{}`: guest interface", path.display()))
}

impl Runtime {
    /// Compiles every guest's component and links it; nothing runs yet.
    /// With no clients declared, a `default` client on the embedded broker is added.
    pub fn new(mut config: Config) -> anyhow::Result<Self> {
        config.validate()?;
        if config.clients.is_empty() {
            config
                .clients
                .insert("default".into(), ClientConfig::embedded());
        }
        let ingress_client = config
            .host
            .ingress_client
            .clone()
            .or_else(|| {
                config
                    .clients
                    .contains_key("default")
                    .then(|| "default".into())
            })
            .or_else(|| config.clients.keys().next().cloned())
            .unwrap_or_default();
        let engine = new_engine_with(&EngineOptions::for_host(&config.host))?;
        let linker = linker(&engine)?;
        let embedded = match &config.host.data_dir {
            Some(dir) => EmbeddedBroker::open(dir, config.host.sync)
                .map_err(anyhow::Error::from)
                .with_context(|| {
                    format!(
                        "`host.data-dir` `{}`: cannot open the embedded broker's storage \
                             (is another courier using it?)",
                        dir.display()
                    )
                })?,
            None => EmbeddedBroker::new(),
        };
        embedded.set_max_queued(config.host.max_queued_messages.get());
        let clients = Arc::new(ClientPool::with_embedded(config.clients.clone(), embedded));
        let activity = Activity::new();
        let mut guests = Vec::new();
        // Guests of one component file share its compiled code and linking:
        // it is loaded once, however many guests run it.
        let mut loaded: HashMap<PathBuf, MessagingPre<GuestState>> = HashMap::new();
        for (name, guest) in config.guests {
            let path = guest.component.clone().with_context(|| {
                format!("invalid config: `guests.{name}.component`: no component given")
            })?;
            let key = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
            let pre = match loaded.get(&key) {
                Some(pre) => pre.clone(),
                None => {
                    let component = load_component(&engine, &path)?;
                    let pre = link(&linker, &component, &path)?;
                    loaded.insert(key, pre.clone());
                    pre
                }
            };
            let policy = GuestPolicy {
                name: name.clone(),
                default_client: guest.client.clone(),
                clients: guest.granted_clients(),
                publish: guest.allow_publish.clone(),
                subscribe: guest.subscribe_allow_list().to_vec(),
                max_message_bytes: guest.max_message_bytes,
                broker_timeout: clients
                    .config(&guest.client)
                    .map_or(Duration::from_secs(5), |c| c.timeout),
            };
            guests.push(GuestRuntime::new(
                &name,
                guest,
                policy,
                engine.clone(),
                pre,
                clients.clone(),
                activity.clone(),
            ));
        }
        Ok(Self {
            engine,
            clients,
            guests,
            ingress_client,
            activity,
        })
    }

    /// Instantiates every guest once with its limits: a guest that cannot
    /// run is an error, with the reason, before any guest takes a message.
    pub async fn check(&self) -> anyhow::Result<()> {
        for guest in &self.guests {
            guest.prepare().await?;
        }
        Ok(())
    }

    /// Checks that every guest can run ([`Runtime::check`]), then subscribes
    /// every guest and starts its workers.
    pub async fn start(&self) -> anyhow::Result<()> {
        self.check().await?;
        for guest in &self.guests {
            guest.start().await?;
        }
        Ok(())
    }

    /// Stops every guest: subscriptions first, then workers after their batch.
    pub async fn stop(&self) {
        for guest in &self.guests {
            guest.stop().await;
        }
        if let Err(e) = self.clients.embedded().flush().await {
            tracing::error!("embedded broker: storing the last settlements failed: {e}");
        }
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The client pool.
    pub fn clients(&self) -> &Arc<ClientPool> {
        &self.clients
    }

    /// Measures end-to-end delivery latency: every publish through the
    /// client pool stamps the message with `courier-sent-at`
    /// ([`crate::telemetry`]), for the `courier_delivery_latency_seconds`
    /// histogram. Call it before [`Runtime::ingress`] and [`Runtime::start`]
    /// (connections made before do not stamp).
    pub fn measure_delivery_latency(&self) {
        self.clients.stamp_sent_at(true);
    }

    /// Whether every client is connected and every guest runs
    /// ([`Readiness`]). A client not connected yet is tried, and its answer
    /// awaited at most `wait` (the attempt itself runs on, with the client's
    /// own timeout).
    pub async fn readiness(&self, wait: Duration) -> Readiness {
        Readiness {
            clients: self.clients.readiness(wait).await,
            guests: self
                .guests
                .iter()
                .map(|g| GuestReadiness {
                    name: g.name().to_string(),
                    status: g.status(),
                })
                .collect(),
        }
    }

    /// The client that ingress (HTTP, `--stdin`) publishes through.
    pub async fn ingress(&self) -> anyhow::Result<Arc<dyn Backend>> {
        self.clients
            .get(&self.ingress_client)
            .await
            .with_context(|| format!("connecting client `{}`", self.ingress_client))
    }

    /// The running guests.
    pub fn guests(&self) -> &[Arc<GuestRuntime>] {
        &self.guests
    }

    /// A guest by name.
    pub fn guest(&self, name: &str) -> Option<&Arc<GuestRuntime>> {
        self.guests.iter().find(|g| g.name() == name)
    }

    /// Whether no guest has work queued, running or held.
    pub fn idle(&self) -> bool {
        self.guests.iter().all(|g| g.idle())
    }

    /// The signal bumped whenever a guest may have become idle. Whatever
    /// else settles messages of the embedded broker in this process (the
    /// CLI's `--print`) bumps it too, for [`Runtime::drained`] to look again.
    pub fn activity(&self) -> &Activity {
        &self.activity
    }

    /// Resolves once every guest is idle ([`Runtime::idle`]) and the
    /// embedded broker holds nothing unsettled in a queue someone reads —
    /// what a finite run (`--stdin`) waits for before it stops. It looks
    /// again each time [`Runtime::activity`] is bumped, never on a timer. A
    /// remote broker cannot be asked what it holds: with one, only the
    /// guests' side is known here.
    pub fn drained(&self) -> impl Future<Output = ()> + Send + '_ {
        let mut changes = self.activity.subscribe();
        async move {
            loop {
                // Marked seen before looking: a bump after this wakes us.
                changes.borrow_and_update();
                if self.idle() && self.clients.embedded().unsettled().unwrap_or(0) == 0 {
                    return;
                }
                if changes.changed().await.is_err() {
                    return;
                }
            }
        }
    }

    /// Counters summed over all guests.
    pub fn totals(&self) -> StatsSnapshot {
        self.guests
            .iter()
            .map(|g| g.stats())
            .fold(StatsSnapshot::default(), |a, s| StatsSnapshot {
                delivered: a.delivered + s.delivered,
                accepted: a.accepted + s.accepted,
                redelivered: a.redelivered + s.redelivered,
                dead_lettered: a.dead_lettered + s.dead_lettered,
                traps: a.traps + s.traps,
                errors: a.errors + s.errors,
            })
    }
}
