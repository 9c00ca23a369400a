//! The imports of the world, implemented over [`WasiMessagingCtx`].
//!
//! Each import runs in a `tracing` span named after it, with the guest and
//! what the call is about (client, channel, message count, channels,
//! delivery id) as fields — never payloads or metadata values.

use std::future::Future;
use std::time::Duration;

use courier_broker::message::DELIVERY_ID_KEY;
use courier_broker::pattern::{allowed_pattern, allowed_topic};
use courier_broker::{Message, Pattern};
use wasmtime::component::Resource;

use crate::bindings::wasi::messaging::{consumer, producer, types};
use crate::bindings::{Error, GuestConfiguration, Message as WitMessage};
use crate::{Client, MessagingError, WasiMessaging, from_wit};

type Outcome = Result<(), Error>;

/// The delivery id a guest's message refers to, for traces.
fn delivery_id(m: &WitMessage) -> Option<&str> {
    m.metadata
        .as_deref()?
        .iter()
        .find(|(k, _)| k == DELIVERY_ID_KEY)
        .map(|(_, v)| v.as_str())
}

impl WasiMessaging<'_> {
    fn refuse(&self, e: MessagingError) -> Error {
        let guest = &self.ctx.policy.name;
        match &e {
            MessagingError::Unauthorized(why) => {
                tracing::warn!(guest = %guest, "refused: {why}")
            }
            other => tracing::debug!(guest = %guest, "messaging call failed: {other}"),
        }
        e.into()
    }

    /// Checks and prepares a guest's messages for `send`, all before any is sent.
    fn prepare(&self, ch: &str, messages: Vec<WitMessage>) -> Result<Vec<Message>, MessagingError> {
        let policy = &self.ctx.policy;
        let mut out: Vec<Message> = Vec::with_capacity(messages.len());
        for m in messages {
            let mut m = from_wit(m);
            if !ch.is_empty() {
                m.topic = ch.to_string();
            }
            if m.topic.is_empty() {
                return Err(MessagingError::Other(
                    "no channel: both the channel argument and the message topic are empty".into(),
                ));
            }
            // A batch mostly goes to one topic: checked once per run of it.
            if out.last().is_none_or(|prev| prev.topic != m.topic) {
                Pattern::parse_literal(&m.topic)?;
                if !allowed_topic(&policy.publish, &m.topic) {
                    return Err(MessagingError::Unauthorized(format!(
                        "publishing to `{}` is outside the publish allow-list",
                        m.topic
                    )));
                }
            }
            if m.data.len() > policy.max_message_bytes {
                return Err(MessagingError::Other(format!(
                    "message to `{}` has {} bytes, more than the limit of {} bytes",
                    m.topic,
                    m.data.len(),
                    policy.max_message_bytes
                )));
            }
            // `courier-*` keys are Courier's own (delivery ids are per guest
            // and per delivery; dead-letter keys say where a letter came
            // from): a guest never sends one.
            m.remove_reserved();
            out.push(m);
        }
        Ok(out)
    }
}

/// Runs a broker call under the guest's broker deadline.
async fn deadline<T>(
    after: Duration,
    operation: &str,
    f: impl Future<Output = Result<T, courier_broker::BrokerError>>,
) -> Result<T, MessagingError> {
    match tokio::time::timeout(after, f).await {
        Ok(r) => r.map_err(MessagingError::from),
        Err(_) => Err(MessagingError::Timeout(format!(
            "{operation} took longer than {after:?}"
        ))),
    }
}

impl types::Host for WasiMessaging<'_> {}

impl types::HostClient for WasiMessaging<'_> {
    #[tracing::instrument(name = "connect", skip_all, fields(guest = %self.ctx.policy.name, client = %name))]
    async fn connect(&mut self, name: String) -> wasmtime::Result<Result<Resource<Client>, Error>> {
        let policy = self.ctx.policy.clone();
        let name = if name.is_empty() {
            policy.default_client.clone()
        } else {
            name
        };
        if !self.ctx.connector.knows(&name) {
            return Ok(Err(self.refuse(MessagingError::Connection(format!(
                "no client named `{name}`"
            )))));
        }
        if !policy.clients.contains(&name) {
            return Ok(Err(self.refuse(MessagingError::Unauthorized(format!(
                "client `{name}` is not granted to this guest"
            )))));
        }
        let backend = match deadline(
            policy.broker_timeout,
            "connect",
            self.ctx.connector.connect(&name),
        )
        .await
        {
            Ok(b) => b,
            Err(e) => return Ok(Err(self.refuse(e))),
        };
        Ok(Ok(self.table.push(Client { name, backend })?))
    }

    async fn drop(&mut self, rep: Resource<Client>) -> wasmtime::Result<()> {
        self.table.delete(rep)?;
        Ok(())
    }
}

impl producer::Host for WasiMessaging<'_> {
    #[tracing::instrument(name = "send", skip_all, fields(guest = %self.ctx.policy.name, channel = %ch, messages = m.len()))]
    async fn send(
        &mut self,
        c: Resource<Client>,
        ch: String,
        m: Vec<WitMessage>,
    ) -> wasmtime::Result<Outcome> {
        let client = self.table.delete(c)?;
        let messages = match self.prepare(&ch, m) {
            Ok(ms) => ms,
            Err(e) => return Ok(Err(self.refuse(e))),
        };
        if messages.is_empty() {
            return Ok(Ok(()));
        }
        let timeout = self.ctx.policy.broker_timeout;
        match deadline(timeout, "send", client.backend.publish(messages)).await {
            Ok(()) => Ok(Ok(())),
            Err(e) => Ok(Err(self.refuse(e))),
        }
    }
}

impl consumer::Host for WasiMessaging<'_> {
    #[tracing::instrument(
        name = "update-guest-configuration",
        skip_all,
        fields(guest = %self.ctx.policy.name, channels = ?gc.channels)
    )]
    async fn update_guest_configuration(
        &mut self,
        gc: GuestConfiguration,
    ) -> wasmtime::Result<Outcome> {
        let policy = self.ctx.policy.clone();
        let mut channels = Vec::with_capacity(gc.channels.len());
        for ch in &gc.channels {
            let pattern = match Pattern::parse(ch) {
                Ok(p) => p,
                Err(e) => return Ok(Err(self.refuse(e.into()))),
            };
            if !allowed_pattern(&policy.subscribe, &pattern) {
                return Ok(Err(self.refuse(MessagingError::Unauthorized(format!(
                    "subscribing to `{ch}` is outside the subscribe allow-list"
                )))));
            }
            channels.push(pattern);
        }
        let result = self
            .ctx
            .consumer
            .update(channels, gc.extensions.unwrap_or_default())
            .await;
        Ok(result.map_err(|e| self.refuse(e)))
    }

    #[tracing::instrument(name = "complete-message", skip_all, fields(guest = %self.ctx.policy.name, delivery = delivery_id(&m)))]
    async fn complete_message(&mut self, m: WitMessage) -> wasmtime::Result<Outcome> {
        let result = self.ctx.consumer.complete(from_wit(m)).await;
        Ok(result.map_err(|e| self.refuse(e)))
    }

    #[tracing::instrument(name = "abandon-message", skip_all, fields(guest = %self.ctx.policy.name, delivery = delivery_id(&m)))]
    async fn abandon_message(&mut self, m: WitMessage) -> wasmtime::Result<Outcome> {
        let result = self.ctx.consumer.abandon(from_wit(m)).await;
        Ok(result.map_err(|e| self.refuse(e)))
    }
}
