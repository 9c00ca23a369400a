//! Calling a guest's `handler` export with messages lowered straight from
//! borrowed data.
//!
//! The generated [`crate::bindings::Guest::call_handler`] takes owned
//! [`crate::bindings::Message`]s: an embedder that holds its messages in
//! another form (a broker's message, with its data in shared bytes) would
//! first build a copy of each, strings and data included, only for the copy
//! to be copied again into the guest's memory. [`MessageRef`] is the same
//! `message` record made of borrowed parts: it is lowered into the guest from
//! where the data already is. [`Handler`] calls the export with a batch of
//! them, lowered into the guest's memory in one pass over the batch (see
//! the `lower` module).
//!
//! ```
//! use courier_wasi_messaging::handler::MessageRef;
//!
//! let metadata = [("trace-id", "42")];
//! let message = MessageRef {
//!     topic: "orders.created",
//!     content_type: Some("application/json"),
//!     reply_to: None,
//!     data: br#"{"id":1}"#,
//!     metadata: Some(&metadata),
//! };
//! assert_eq!(message.topic, "orders.created");
//! ```

use wasmtime::AsContextMut;
use wasmtime::component::{ComponentType, Func, Instance, Lower};

use crate::bindings::Error;
use crate::lower::Batch;

/// The interface the guest exports its `handler` from.
const GUEST_INTERFACE: &str = "wasi:messaging/guest@0.2.0-draft";

/// The world's `message` record, borrowed: lowered into the guest like
/// [`crate::bindings::Message`], without owning its strings and data.
#[derive(ComponentType, Lower, Debug, Clone, Copy)]
#[component(record)]
pub struct MessageRef<'a> {
    /// The channel the message came on.
    pub topic: &'a str,
    /// Its content type, if any.
    #[component(name = "content-type")]
    pub content_type: Option<&'a str>,
    /// Where a reply goes, if anywhere.
    #[component(name = "reply-to")]
    pub reply_to: Option<&'a str>,
    /// Its data.
    pub data: &'a [u8],
    /// Its metadata, as key-value pairs.
    pub metadata: Option<&'a [(&'a str, &'a str)]>,
}

/// A guest instance's `handler` export.
#[derive(Debug, Clone, Copy)]
pub struct Handler {
    func: Func,
}

impl Handler {
    /// Finds the `handler` export of `instance`, and checks its type.
    pub fn new(mut store: impl AsContextMut, instance: &Instance) -> wasmtime::Result<Self> {
        let interface = instance
            .get_export_index(store.as_context_mut(), None, GUEST_INTERFACE)
            .ok_or_else(|| wasmtime::format_err!("the component exports no `{GUEST_INTERFACE}`"))?;
        let index = instance
            .get_export_index(store.as_context_mut(), Some(&interface), "handler")
            .ok_or_else(|| {
                wasmtime::format_err!("`{GUEST_INTERFACE}` of the component has no `handler`")
            })?;
        let func = instance
            .get_func(store.as_context_mut(), index)
            .ok_or_else(|| wasmtime::format_err!("`handler` of the component is not a function"))?;
        // A `handler` of another type is refused here, before any call.
        func.typed::<(&[MessageRef<'static>],), (Result<(), Error>,)>(store.as_context_mut())
            .map_err(|e| e.context("`handler` of the component does not have the world's type"))?;
        Ok(Self { func })
    }

    /// Calls `handler` with `messages`: `Err` when the call trapped, else
    /// what the guest returned.
    pub async fn call<T: Send + 'static>(
        &self,
        mut store: impl AsContextMut<Data = T>,
        messages: &[MessageRef<'_>],
    ) -> wasmtime::Result<Result<(), Error>> {
        // The type check is a walk over the two signatures: next to lowering
        // a batch, nothing. The batch is lowered in one pass (`lower`).
        let typed = self
            .func
            .typed::<(Batch<'_, '_>,), (Result<(), Error>,)>(store.as_context_mut())?;
        let (result,) = typed
            .call_async(store.as_context_mut(), (Batch(messages),))
            .await?;
        Ok(result)
    }
}
