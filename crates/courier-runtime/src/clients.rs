//! The client pool: configured client names to shared broker connections.
//!
//! Connections are made once, through the backend registry, and shared by
//! every guest and instance, so `client.connect` is a lookup after the
//! first. A failed connection is not kept: the next use tries again. All
//! `embedded` clients of one host share the one in-process broker.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use courier_broker::factory::Registry;
use courier_broker::{Backend, BrokerError};
use courier_embedded::{Embedded, EmbeddedBroker};
use courier_wasi_messaging::Connector;
use tokio::sync::OnceCell;

use crate::config::ClientConfig;

/// A client's connection, made once by whoever needs it first.
type Slot = Arc<OnceCell<Arc<dyn Backend>>>;

/// Named, pooled broker connections.
pub struct ClientPool {
    configs: BTreeMap<String, ClientConfig>,
    registry: Registry,
    embedded: EmbeddedBroker,
    connected: Mutex<HashMap<String, Slot>>,
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
                let backend = factory
                    .connect(&endpoint, &config.options)
                    .await
                    .map_err(|e| e.context(format_args!("client `{name}`")))?;
                tracing::info!(client = name, backend = backend.kind(), "connected");
                Ok::<_, BrokerError>(backend)
            })
            .await?;
        Ok(backend.clone())
    }

    fn client(&self, name: &str) -> Result<&ClientConfig, BrokerError> {
        self.configs
            .get(name)
            .ok_or_else(|| BrokerError::invalid(format!("no client named `{name}`")))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.connected.lock().unwrap_or_else(|e| e.into_inner())
    }
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
