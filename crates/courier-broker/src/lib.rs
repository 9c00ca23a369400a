//! The broker side of Courier.
//!
//! This crate defines what every message broker looks like to Courier — the
//! [`Backend`] trait and the types that cross it ([`Message`], [`Delivery`],
//! [`SubscriptionSpec`]) — and how a backend declares itself to the host
//! ([`factory::BackendFactory`], [`factory::Registry`]).
//!
//! Each broker lives in a crate of its own (`courier-embedded`, the default
//! in-process broker; `courier-nats`, `courier-redis`, `courier-amqp`,
//! `courier-mqtt`) and implements the same traits; the dispatcher and the
//! `wasi:messaging` host never see which broker is behind a client.
#![deny(missing_docs)]

pub mod backend;
pub mod batch;
pub mod error;
pub mod extensions;
pub mod factory;
pub mod message;
pub mod pattern;
pub mod reconnect;
pub mod retry;
pub mod secret;
pub mod tls;

pub use backend::{
    Acker, Backend, DEFAULT_ACK_WAIT, Delivery, Features, Mode, Subscription, SubscriptionSpec,
};
pub use batch::{AckBatch, BatchTag, ack_all};
pub use error::{BrokerError, ErrorKind};
pub use message::Message;
pub use pattern::Pattern;
