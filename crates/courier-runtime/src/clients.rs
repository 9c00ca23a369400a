//! The client pool: configured client names to shared broker connections.
//!
//! Connections are made once, through the backend registry, and shared by
//! every guest and instance, so `client.connect` is a lookup after the
//! first. A failed connection is not kept: the next use tries again (the
//! pool remembers its error, for `/readyz`). All `embedded` clients of one
//! host share the one in-process broker.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use courier_broker::factory::Registry;
use courier_broker::{Backend, BrokerError};
use courier_embedded::{Embedded, EmbeddedBroker};
use courier_wasi_messaging::Connector;
use tokio::sync::OnceCell;

use crate::config::ClientConfig;
use crate::readiness::{ClientReadiness, ClientStatus};
use crate::telemetry::Stamping;

/// A client's connection, made once by whoever needs it first.
type Slot = Arc<OnceCell<Arc<dyn Backend>>>;

/// Named, pooled broker connections.
pub struct ClientPool {
    configs: BTreeMap<String, ClientConfig>,
    registry: Registry,
    embedded: EmbeddedBroker,
    connected: Mutex<HashMap<String, Slot>>,
    /// The error of each client's last failed attempt to connect, until
    /// one succeeds.
    failures: Mutex<HashMap<String, String>>,
    /// Whether connections made from now on stamp what they publish with
    /// `courier-sent-at` (delivery latency is measured).
    stamp: AtomicBool,
}

impl ClientPool {
    /// A pool for the given clients, with an in-memory embedded broker;
    /// nothing connects until first use.
    pub fn new(configs: BTreeMap<String, ClientConfig>) -> Self {
        Self::with_embedded(configs, EmbeddedBroker::new())
    }

    /// A pool whose `embedded` clients use `embedded` (e.g. one opened on a
    /// data directory), and whose other clients use this build's backends.
    pub fn with_embedded(
        configs: BTreeMap<String, ClientConfig>,
        embedded: EmbeddedBroker,
    ) -> Self {
        let mut registry = courier_registry::builtin();
        registry.register(Embedded::new(embedded.clone()));
        Self {
            configs,
            registry,
            embedded,
            connected: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            stamp: AtomicBool::new(false),
        }
    }

    /// The host's embedded broker.
    pub fn embedded(&self) -> &EmbeddedBroker {
        &self.embedded
    }

    /// The client's configuration.
    pub fn config(&self, name: &str) -> Option<&ClientConfig> {
        self.configs.get(name)
    }

    /// Checks subscription extensions meant for client `name`'s backend.
    pub fn check_extensions(
        &self,
        name: &str,
        extensions: &BTreeMap<String, String>,
    ) -> Result<(), BrokerError> {
        let config = self.client(name)?;
        self.registry
            .get(config.backend)
            .ok_or_else(|| no_backend(config.backend))?
            .check_extensions(&config.options, extensions)
    }

    /// Connects client `name`, or returns its existing connection. Concurrent
    /// first uses share one connection attempt.
    pub async fn get(&self, name: &str) -> Result<Arc<dyn Backend>, BrokerError> {
        let config = self.client(name)?;
        let cell = self.lock().entry(name.to_string()).or_default().clone();
        let backend = cell
            .get_or_try_init(|| async {
                let factory = self
                    .registry
                    .get(config.backend)
                    .ok_or_else(|| no_backend(config.backend))?;
                let endpoint = config.endpoint();
                if endpoint.tls.as_ref().is_some_and(|t| t.insecure()) {
                    tracing::warn!(
                        client = name,
                        "TLS certificate verification is OFF (tls.insecure-skip-verify = true): \
                         the connection is encrypted but anyone on the path can pose as the broker"
                    );
                }
                let backend = match factory.connect(&endpoint, &config.options).await {
                    Ok(backend) => backend,
                    Err(e) => {
                        let e = e.context(format_args!("client `{name}`"));
                        lock(&self.failures).insert(name.to_string(), e.to_string());
                        return Err(e);
                    }
                };
                lock(&self.failures).remove(name);
                tracing::info!(client = name, backend = backend.kind(), "connected");
                if self.stamp.load(Ordering::SeqCst) {
                    return Ok(Arc::new(Stamping(backend)) as Arc<dyn Backend>);
                }
                Ok::<_, BrokerError>(backend)
            })
            .await?;
        Ok(backend.clone())
    }

    /// Makes the connections made from now on stamp each message they
    /// publish with the time (`courier-sent-at`), for the delivery-latency
    /// histogram ([`crate::telemetry`]). Call it before anything connects.
    pub fn stamp_sent_at(&self, on: bool) {
        self.stamp.store(on, Ordering::SeqCst);
    }

    /// Each configured client: connected, down or unreachable. A client not
    /// connected yet is tried now — the attempt runs on with its own
    /// timeout, but the answer waits for it at most `wait`: a client still
    /// connecting then is reported `connecting`.
    pub async fn readiness(self: &Arc<Self>, wait: Duration) -> Vec<ClientReadiness> {
        let each = self.configs.iter().map(|(name, config)| async move {
            let status = match self.connected_backend(name) {
                Some(backend) => link_status(backend.kind()),
                None => self.try_connect(name, wait).await,
            };
            ClientReadiness {
                name: name.clone(),
                backend: config.backend,
                status,
            }
        });
        futures::future::join_all(each).await
    }

    /// Connects client `name` in a task of its own, waiting at most `wait`
    /// for the outcome.
    async fn try_connect(self: &Arc<Self>, name: &str, wait: Duration) -> ClientStatus {
        let pool = self.clone();
        let client = name.to_string();
        let attempt = tokio::spawn(async move { pool.get(&client).await });
        match tokio::time::timeout(wait, attempt).await {
            Ok(Ok(Ok(backend))) => link_status(backend.kind()),
            Ok(Ok(Err(e))) => ClientStatus::Unreachable {
                error: e.to_string(),
            },
            Ok(Err(e)) => ClientStatus::Unreachable {
                error: format!("the connection attempt failed: {e}"),
            },
            Err(_) => match lock(&self.failures).get(name) {
                Some(error) => ClientStatus::Unreachable {
                    error: error.clone(),
                },
                None => ClientStatus::Connecting,
            },
        }
    }

    /// The client's connection, if it has been made.
    fn connected_backend(&self, name: &str) -> Option<Arc<dyn Backend>> {
        self.lock().get(name).and_then(|cell| cell.get().cloned())
    }

    fn client(&self, name: &str) -> Result<&ClientConfig, BrokerError> {
        self.configs
            .get(name)
            .ok_or_else(|| BrokerError::invalid(format!("no client named `{name}`")))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        lock(&self.connected)
    }
}

/// A connected client's health, as its backend reports it (per kind).
fn link_status(kind: &'static str) -> ClientStatus {
    let down = courier_broker::reconnect::stats(kind).down;
    if down == 0 {
        ClientStatus::Connected
    } else {
        ClientStatus::Down {
            reason: format!("{down} connection(s) of the {kind} backend are down (reconnecting)"),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A client whose backend this build lacks (its configuration was read by
/// another build's registry).
fn no_backend(kind: &str) -> BrokerError {
    BrokerError::invalid(format!("this build of Courier has no `{kind}` backend"))
}

#[async_trait]
impl Connector for ClientPool {
    fn knows(&self, name: &str) -> bool {
        self.configs.contains_key(name)
    }

    async fn connect(&self, name: &str) -> Result<Arc<dyn Backend>, BrokerError> {
        self.get(name).await
    }
}
