//! Courier's runtime: configuration, the dispatcher and the instance pool.
//!
//! - [`config`]: the TOML configuration and its validation.
//! - [`engine`]: the wasmtime engine, epoch deadlines, component loading.
//! - [`clients`]: named, pooled broker connections.
//! - [`deliveries`]: in-flight deliveries by delivery id.
//! - [`guest`]: one running guest — subscriptions, workers, settlement.
//! - [`runtime`]: all guests of a configuration together.

pub mod clients;
pub mod config;
pub mod deliveries;
pub mod engine;
pub mod guest;
pub mod runtime;
pub mod state;

pub use config::{Config, ConfigError, GuestConfig};
pub use guest::{GuestRuntime, IdleInstance, StatsSnapshot};
pub use runtime::Runtime;
