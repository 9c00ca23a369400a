//! The client pool: configured client names to shared broker connections.
//!
//! Connections are made once and shared by every guest and instance, so
//! `client.connect` is a lookup after the first. A failed connection is not
//! kept: the next use tries again. All `embedded` clients of one host share the
//! one in-process broker.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use courier_broker::{Backend, BrokerError, EmbeddedBroker};
use courier_wasi_messaging::Connector;
use tokio::sync::OnceCell;

use crate::config::{BackendKind, ClientConfig};

/// A client's connection, made once by whoever needs it first.
type Slot = Arc<OnceCell<Arc<dyn Backend>>>;

/// Named, pooled broker connections.
pub struct ClientPool {
    configs: BTreeMap<String, ClientConfig>,
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
    /// data directory).
    pub fn with_embedded(
        configs: BTreeMap<String, ClientConfig>,
        embedded: EmbeddedBroker,
    ) -> Self {
        Self {
            configs,
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

    /// Connects client `name`, or returns its existing connection. Concurrent
    /// first uses share one connection attempt.
    pub async fn get(&self, name: &str) -> Result<Arc<dyn Backend>, BrokerError> {
        let config = self
            .configs
            .get(name)
            .ok_or_else(|| BrokerError::invalid(format!("no client named `{name}`")))?;
        let cell = self.lock().entry(name.to_string()).or_default().clone();
        let backend = cell
            .get_or_try_init(|| async {
                // Only remote backends have a url.
                #[cfg_attr(
                    not(any(
                        feature = "nats",
                        feature = "redis",
                        feature = "amqp",
                        feature = "mqtt"
                    )),
                    allow(unused_variables)
                )]
                let url = config.url.as_deref().unwrap_or_default();
                let backend: Arc<dyn Backend> = match config.backend {
                    BackendKind::Embedded => Arc::new(self.embedded.clone()),
                    #[cfg(feature = "nats")]
                    BackendKind::Nats => {
                        Arc::new(courier_nats::NatsBackend::connect(url, &config.options).await?)
                    }
                    #[cfg(feature = "redis")]
                    BackendKind::Redis => {
                        Arc::new(courier_redis::RedisBackend::connect(url, &config.options).await?)
                    }
                    #[cfg(feature = "amqp")]
                    BackendKind::Amqp => {
                        Arc::new(courier_amqp::AmqpBackend::connect(url, &config.options).await?)
                    }
                    #[cfg(feature = "mqtt")]
                    BackendKind::Mqtt => {
                        Arc::new(courier_mqtt::MqttBackend::connect(url, &config.options).await?)
                    }
                };
                tracing::info!(client = name, backend = backend.kind(), "connected");
                Ok::<_, BrokerError>(backend)
            })
            .await?;
        Ok(backend.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.connected.lock().unwrap_or_else(|e| e.into_inner())
    }
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
