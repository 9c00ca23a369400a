//! The host's context: what one guest is granted, and the embedder's hooks.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use courier_broker::{Backend, BrokerError, Message, Pattern};
use wasmtime::component::{HasData, ResourceTable};

use crate::MessagingError;

/// What one guest may do. Everything outside it is refused.
#[derive(Debug, Clone)]
pub struct GuestPolicy {
    /// The guest's name, for logs.
    pub name: String,
    /// The client `client.connect("")` resolves to.
    pub default_client: String,
    /// Client names the guest may connect to.
    pub clients: Vec<String>,
    /// Channels the guest may publish to.
    pub publish: Vec<Pattern>,
    /// Channel patterns the guest may subscribe to.
    pub subscribe: Vec<Pattern>,
    /// Largest payload, in bytes, the guest may send (and is handed).
    pub max_message_bytes: usize,
    /// How long `connect` and `send` may take before `error::timeout`.
    pub broker_timeout: Duration,
}

/// The embedder's side of `client.connect`: client names to backends.
#[async_trait]
pub trait Connector: Send + Sync {
    /// Whether a client of this name is configured at all.
    fn knows(&self, name: &str) -> bool;
    /// The (pooled) connection of client `name`.
    async fn connect(&self, name: &str) -> Result<Arc<dyn Backend>, BrokerError>;
}

/// The embedder's side of the `consumer` interface, for one guest.
#[async_trait]
pub trait Consumer: Send + Sync {
    /// Replaces the guest's subscriptions with `channels` (already checked
    /// against the allow-list), all or nothing. Unknown extension keys are an
    /// error that names them.
    async fn update(
        &self,
        channels: Vec<Pattern>,
        extensions: Vec<(String, String)>,
    ) -> Result<(), MessagingError>;
    /// Accepts a message this guest was handed.
    async fn complete(&self, message: Message) -> Result<(), MessagingError>;
    /// Rejects a message this guest was handed.
    async fn abandon(&self, message: Message) -> Result<(), MessagingError>;
}

/// Per-store messaging state: the guest's policy and the embedder's hooks.
#[derive(Clone)]
pub struct WasiMessagingCtx {
    /// What the guest is granted.
    pub policy: Arc<GuestPolicy>,
    /// Resolves client names.
    pub connector: Arc<dyn Connector>,
    /// Subscriptions and settlement.
    pub consumer: Arc<dyn Consumer>,
}

/// The `client` resource: a handle to a named, pooled connection.
pub struct Client {
    /// The configured client name it was connected by.
    pub name: String,
    /// The connection.
    pub backend: Arc<dyn Backend>,
}

/// A borrow of the messaging state and the resource table of a store.
pub struct WasiMessaging<'a> {
    /// The guest's messaging context.
    pub ctx: &'a WasiMessagingCtx,
    /// The store's resource table (holds `client` resources).
    pub table: &'a mut ResourceTable,
}

/// Implemented by a store's data type to expose its messaging state.
pub trait WasiMessagingView: Send {
    /// The messaging state and resource table of this store.
    fn messaging(&mut self) -> WasiMessaging<'_>;
}

/// The [`HasData`] marker for [`WasiMessaging`], used with `add_to_linker`.
pub struct HasMessaging;

impl HasData for HasMessaging {
    type Data<'a> = WasiMessaging<'a>;
}
