//! Bindings generated from the vendored WIT (`wit/` at the repository root).
//!
//! Imports are async and trappable (a host failure that is not the guest's
//! fault — a missing resource — traps instead of returning an `error`); the
//! `client` resource is [`crate::Client`] in the store's `ResourceTable`.
//! The generated code is documented by the WIT, not here.

#![allow(missing_docs)]

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "wasi:messaging/messaging",
    imports: { default: async | trappable },
    exports: { default: async },
    with: {
        "wasi:messaging/types.client": crate::Client,
    },
});

pub use exports::wasi::messaging::guest::Guest;
pub use wasi::messaging::types::{Error, GuestConfiguration, Message};
