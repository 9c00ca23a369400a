//! A wasmtime host for `wasi:messaging@0.2.0-draft`.
//!
//! Shaped like wasmtime's own `wasmtime-wasi-*` crates so any embedder can use
//! it: [`bindings`] generated from the vendored WIT, a context
//! ([`WasiMessagingCtx`]) with a view ([`WasiMessagingView`]), and
//! [`add_to_linker`].
//!
//! The semantics of the world live here — which client names a guest may
//! connect to, the channel override and allow-list of `send`, the
//! all-or-nothing subscription update, the message size limit. The mechanics
//! are the embedder's: [`Connector`] resolves client names to
//! [`courier_broker::Backend`]s, and [`Consumer`] changes subscriptions and
//! settles deliveries (Courier's dispatcher implements both).
//!
//! An embedder keeps a [`WasiMessagingCtx`] and a resource table in its store
//! state, gives a view of them, and adds the world's imports to its linker:
//!
//! ```
//! use courier_wasi_messaging::{WasiMessaging, WasiMessagingCtx, WasiMessagingView};
//! use wasmtime::component::{Linker, ResourceTable};
//! use wasmtime::{Config, Engine};
//!
//! struct State {
//!     messaging: WasiMessagingCtx,
//!     table: ResourceTable,
//! }
//!
//! impl WasiMessagingView for State {
//!     fn messaging(&mut self) -> WasiMessaging<'_> {
//!         WasiMessaging {
//!             ctx: &self.messaging,
//!             table: &mut self.table,
//!         }
//!     }
//! }
//!
//! # fn main() -> wasmtime::Result<()> {
//! let mut config = Config::new();
//! config.wasm_component_model(true);
//! let engine = Engine::new(&config)?;
//! let mut linker: Linker<State> = Linker::new(&engine);
//! courier_wasi_messaging::add_to_linker(&mut linker)?;
//! # Ok(())
//! # }
//! ```
//!
//! The context holds the guest's grants ([`GuestPolicy`]) and the embedder's
//! [`Connector`] and [`Consumer`]; a store is made with that state, and the
//! guest's `handler` export is called through [`bindings::Messaging`], or
//! through [`handler::Handler`] with messages lowered from borrowed data.

#![deny(missing_docs)]

pub mod bindings;
mod convert;
mod ctx;
pub mod error;
pub mod handler;
mod host;
mod lower;

pub use convert::{from_wit, to_wit};
pub use ctx::{
    Client, Connector, Consumer, GuestPolicy, HasMessaging, WasiMessaging, WasiMessagingCtx,
    WasiMessagingView,
};
pub use error::MessagingError;

use wasmtime::component::Linker;

/// Adds the `types`, `producer` and `consumer` imports of the world to `linker`.
pub fn add_to_linker<T: WasiMessagingView + 'static>(
    linker: &mut Linker<T>,
) -> wasmtime::Result<()> {
    use bindings::wasi::messaging::{consumer, producer, types};
    types::add_to_linker::<T, HasMessaging>(linker, T::messaging)?;
    producer::add_to_linker::<T, HasMessaging>(linker, T::messaging)?;
    consumer::add_to_linker::<T, HasMessaging>(linker, T::messaging)?;
    Ok(())
}
