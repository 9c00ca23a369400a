//! The `consumer` side of `wasi:messaging` for one guest instance: a new
//! instance is made with a consumer that settles the guest's own deliveries
//! and replaces its subscriptions.

use std::sync::{Arc, Weak};

use async_trait::async_trait;
use courier_broker::{Message, Pattern};
use courier_wasi_messaging::{Consumer, MessagingError, WasiMessagingCtx};

use super::GuestRuntime;
use crate::deliveries::InFlight;
use crate::instance::{CallScope, Instance};
use crate::stats::Stat;

impl GuestRuntime {
    /// A new instance of the guest, with a consumer of its own that settles
    /// this guest's deliveries.
    pub(super) async fn instantiate(self: &Arc<Self>) -> anyhow::Result<Instance> {
        let scope = Arc::new(CallScope::default());
        let messaging = WasiMessagingCtx {
            policy: self.policy.clone(),
            connector: self.clients.clone(),
            consumer: Arc::new(GuestConsumer {
                guest: Arc::downgrade(self),
                scope: scope.clone(),
            }),
        };
        Instance::new(
            &self.engine,
            &self.pre,
            &self.name,
            &self.config,
            messaging,
            scope,
        )
        .await
    }
}

/// The `consumer` interface of one guest instance, as the messaging host
/// sees it.
struct GuestConsumer {
    guest: Weak<GuestRuntime>,
    /// The deliveries of the call the instance is running.
    scope: Arc<CallScope>,
}

impl GuestConsumer {
    fn guest(&self) -> Result<Arc<GuestRuntime>, MessagingError> {
        self.guest
            .upgrade()
            .ok_or_else(|| MessagingError::Other("the guest is shutting down".into()))
    }

    fn take(&self, guest: &GuestRuntime, message: &Message) -> Result<InFlight, MessagingError> {
        guest
            .tracker
            .take_for(message, &self.scope.current())
            .ok_or_else(not_held)
    }
}

fn not_held() -> MessagingError {
    MessagingError::Other(
        "no such delivery: the message was not delivered to this guest, or is already settled"
            .into(),
    )
}

#[async_trait]
impl Consumer for GuestConsumer {
    async fn update(
        &self,
        channels: Vec<Pattern>,
        extensions: Vec<(String, String)>,
    ) -> Result<(), MessagingError> {
        self.guest()?.update(channels, extensions).await
    }

    async fn complete(&self, message: Message) -> Result<(), MessagingError> {
        let guest = self.guest()?;
        let held = self.take(&guest, &message)?;
        super::settlement::bounded("ack", held.acker.ack())
            .await
            .map_err(|e| MessagingError::Other(format!("the broker refused the ack: {e}")))?;
        guest.stats.add(Stat::Accepted, 1);
        Ok(())
    }

    async fn abandon(&self, message: Message) -> Result<(), MessagingError> {
        let guest = self.guest()?;
        let held = self.take(&guest, &message)?;
        guest.reject(held, "abandoned by the guest".into()).await;
        Ok(())
    }
}
