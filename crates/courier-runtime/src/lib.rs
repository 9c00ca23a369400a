//! Courier's runtime: configuration, the dispatcher and the instance pool.
//!
//! - [`config`]: the configuration (the `courier-config` crate).
//! - [`engine`]: the wasmtime engine, epoch deadlines, component loading.
//! - [`clients`]: named, pooled broker connections.
//! - [`deliveries`]: in-flight deliveries by delivery id.
//! - [`guest`]: one running guest — subscriptions, workers, settlement.
//! - [`instance`]: one instance of a guest and a `handler` call on it.
//! - `pump`: moves deliveries from a subscription into a guest's queue.
//! - [`stats`]: a guest's counters.
//! - [`runtime`]: all guests of a configuration together.

#![deny(missing_docs)]

pub mod clients;
pub use courier_config as config;
pub mod deliveries;
pub mod engine;
pub mod guest;
pub mod instance;
pub(crate) mod pump;
pub mod runtime;
pub mod state;
pub mod stats;

pub use config::{Config, ConfigError, GuestConfig};
pub use guest::{GuestRuntime, IdleInstance};
pub use runtime::Runtime;
pub use stats::StatsSnapshot;
