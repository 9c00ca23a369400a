//! The Rust guest SDK for `wasi:messaging@0.2.0-draft`.
//!
//! A guest is a type implementing [`Guest`], exported with [`export!`], built
//! as a `cdylib` for `wasm32-wasip2`:
//!
//! ```ignore
//! use courier_guest::{Error, Guest, Message, export, message, send};
//!
//! struct Echo;
//!
//! impl Guest for Echo {
//!     fn handler(ms: Vec<Message>) -> Result<(), Error> {
//!         let out = ms.into_iter().map(|m| message("echo", m.data)).collect();
//!         send("echo", out)
//!     }
//! }
//!
//! export!(Echo);
//! ```
//!
//! The helpers wrap the generated [`bindings`]: [`send`] connects to the
//! guest's default client and sends; [`complete`] / [`abandon`] settle a
//! message; [`subscribe`] replaces the guest's subscriptions.

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "wasi:messaging/messaging",
        pub_export_macro: true,
        default_bindings_module: "courier_guest::bindings",
    });
}

pub use bindings::export;
pub use bindings::exports::wasi::messaging::guest::Guest;
pub use bindings::wasi::messaging::types::{Client, Error, GuestConfiguration, Message};
pub use bindings::wasi::messaging::{consumer, producer};

/// Metadata key of the host-issued delivery id.
pub const DELIVERY_ID: &str = "courier-delivery-id";
/// Metadata key of the delivery attempt, on a redelivery only (none: the
/// first delivery).
pub const ATTEMPT: &str = "courier-attempt";

/// A message on `topic` with `data` and nothing else.
pub fn message(topic: impl Into<String>, data: impl Into<Vec<u8>>) -> Message {
    Message {
        topic: topic.into(),
        content_type: None,
        reply_to: None,
        data: data.into(),
        metadata: None,
    }
}

/// Sends `messages` through the default client. A non-empty `channel`
/// overrides each message's topic.
pub fn send(channel: &str, messages: Vec<Message>) -> Result<(), Error> {
    send_with("", channel, messages)
}

/// Sends `messages` through the client named `client`.
pub fn send_with(client: &str, channel: &str, messages: Vec<Message>) -> Result<(), Error> {
    let c = Client::connect(client)?;
    producer::send(c, channel, &messages)
}

/// The first metadata value of `key`.
pub fn meta<'a>(m: &'a Message, key: &str) -> Option<&'a str> {
    m.metadata
        .as_deref()?
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// The host-issued delivery id of a received message.
pub fn delivery_id(m: &Message) -> Option<&str> {
    meta(m, DELIVERY_ID)
}

/// The delivery attempt of a received message (1 for the first delivery).
pub fn attempt(m: &Message) -> u32 {
    meta(m, ATTEMPT).and_then(|a| a.parse().ok()).unwrap_or(1)
}

/// Accepts a received message now.
pub fn complete(m: &Message) -> Result<(), Error> {
    consumer::complete_message(m)
}

/// Rejects a received message: redelivered later, or dead-lettered.
pub fn abandon(m: &Message) -> Result<(), Error> {
    consumer::abandon_message(m)
}

/// Replaces the guest's subscriptions with `channels`.
pub fn subscribe(channels: &[&str], extensions: &[(&str, &str)]) -> Result<(), Error> {
    let gc = GuestConfiguration {
        channels: channels.iter().map(|c| c.to_string()).collect(),
        extensions: (!extensions.is_empty()).then(|| {
            extensions
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        }),
    };
    consumer::update_guest_configuration(&gc)
}

/// The value of environment variable `name` (set in the guest's config
/// under `env`), or `default`.
pub fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// Renders an error the way the examples report it: `unauthorized`,
/// `timeout`, `connection:…` or `other:…`.
pub fn describe(e: &Error) -> String {
    match e {
        Error::Unauthorized => "unauthorized".into(),
        Error::Timeout => "timeout".into(),
        Error::Connection(s) => format!("connection:{s}"),
        Error::Other(s) => format!("other:{s}"),
    }
}
