//! Helpers shared by Courier's integration tests.
//!
//! - [`brokers`]: the shared brokers on loopback (NATS, Redis, RabbitMQ,
//!   Mosquitto), their ports (`COURIER_TEST_*_PORT`), URLs and client TOML.
//! - [`private`]: broker processes of a test's own, to kill and restart,
//!   with TLS listeners and users when a test asks ([`certs`] makes their
//!   certificates).
//! - [`trials`]: a test harness (on `libtest-mimic`) whose tests say what
//!   they need: a test whose broker is absent is reported *ignored* with the
//!   reason, and fails when `CI=true`.
//! - [`net`], [`names`], [`wait`], [`process`]: free ports, unique channel
//!   names, waiting on a real condition with a deadline, and on a child
//!   process's output line.
//! - [`messages`], [`guests`]: reading subscriptions, and the guest
//!   components built by the `test-programs` crate.
//! - [`logs`]: the binary's log kept in memory, to look for secrets in.
//! - [`proxy`]: a TCP proxy that stalls, delays or resets connections.
//! - [`cluster`]: clusters of nats-servers (JetStream) and RabbitMQ nodes
//!   on loopback, nodes to kill and restart.
//! - [`polyglot`]: the Python and JavaScript example guests, built on
//!   first use with the toolchains `scripts/setup.sh --guests` installs.
//! - [`collector`]: the checker of fault tests: what came out, counted by
//!   payload, against what was accepted (handled, duplicates, lost).

#![deny(missing_docs)]

pub mod brokers;
pub mod certs;
pub mod cluster;
pub mod collector;
pub mod guests;
pub mod logs;
pub mod messages;
pub mod names;
pub mod net;
pub mod polyglot;
pub mod private;
pub mod process;
pub mod proxy;
pub mod takeover;
pub mod trials;
pub mod wait;

pub use brokers::{Broker, ci};
pub use names::unique;
pub use net::{accepting, free_port};
pub use polyglot::Language;
pub use trials::{Need, Trials};
pub use wait::{eventually, eventually_async, wait_until, wait_until_async};
