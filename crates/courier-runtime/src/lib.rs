//! Courier's runtime: configuration, the dispatcher and the instance pool.
//!
//! - [`config`]: the configuration (the `courier-config` crate).
//! - [`engine`]: the wasmtime engine, epoch deadlines, component loading.
//! - [`inspect`]: what a component says about itself (producers, size,
//!   initial memory), for `courier check`.
//! - [`clients`]: named, pooled broker connections.
//! - [`dispatcher`]: one running guest — subscriptions, the pump, workers,
//!   settlement — in small modules; among them [`deliveries`] (in-flight
//!   deliveries by delivery id), [`instance`] (one instance of a guest and a
//!   `handler` call on it), [`state`] (an instance's store) and [`stats`] (a
//!   guest's counters), re-exported here.
//! - [`runtime`]: all guests of a configuration together.
//! - [`readiness`]: whether every client is connected and every guest runs.
//! - [`telemetry`]: metric names and buckets, the delivery-latency stamp.

#![deny(missing_docs)]

pub mod clients;
pub use courier_config as config;
pub mod dispatcher;
pub mod engine;
pub mod inspect;
pub mod readiness;
pub mod runtime;
pub mod telemetry;

pub use config::{Config, ConfigError, GuestConfig};
pub use dispatcher::{GuestRuntime, IdleInstance};
pub use dispatcher::{deliveries, instance, state, stats};
pub use runtime::Runtime;
pub use stats::StatsSnapshot;
