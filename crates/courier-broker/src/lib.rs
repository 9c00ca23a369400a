//! The broker side of Courier.
//!
//! This crate defines what every message broker looks like to Courier — the
//! [`Backend`] trait and the types that cross it ([`Message`], [`Delivery`],
//! [`SubscriptionSpec`]) — and ships the embedded in-process broker, which is
//! what `courier run` uses when no broker is configured.
//!
//! Backends for real brokers live in their own crates and implement the same
//! trait; the dispatcher and the `wasi:messaging` host never see which broker
//! is behind a client.
#![deny(missing_docs)]

pub mod backend;
pub mod embedded;
pub mod error;
pub mod message;
pub mod options;
pub mod pattern;
pub mod reconnect;
pub mod retry;

pub use backend::{
    Acker, Backend, DEFAULT_ACK_WAIT, Delivery, Features, Mode, Subscription, SubscriptionSpec,
};
pub use embedded::EmbeddedBroker;
pub use error::{BrokerError, ErrorKind};
pub use message::Message;
pub use pattern::Pattern;
