//! A guest's subscriptions: the settings a subscription is made with (from
//! the configuration and a guest's `update-guest-configuration` extensions),
//! which point-to-point groups a guest may join, and replacing the set all
//! or nothing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use courier_broker::{Mode, Pattern, SubscriptionSpec};
use courier_wasi_messaging::MessagingError;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::pump::{Control, pump};
use super::{GuestRuntime, broker_ack_wait};
use crate::config::DeliveryMode;
use crate::deliveries::Source;

/// How one subscription is made; equal settings mean the subscription can stay.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SubSettings {
    client: String,
    mode: Mode,
    ack_wait: Duration,
    options: BTreeMap<String, String>,
}

pub(super) struct ActiveSub {
    settings: SubSettings,
    /// Stops the pump; `true` at shutdown, when the pump keeps the
    /// subscription open until the workers have settled their batches.
    pub(super) stop: oneshot::Sender<bool>,
    /// Told once the pump has begun closing an unsubscribed subscription.
    began_closing: oneshot::Receiver<()>,
    pub(super) task: JoinHandle<()>,
}

impl ActiveSub {
    /// Tells the pump to stop taking messages now; it closes the
    /// subscription by itself (a network round trip or more, which a guest
    /// unsubscribing from inside its handler must not wait for). Returns the
    /// pump, to be awaited at shutdown, and the word that it began closing.
    fn unsubscribe(self) -> (JoinHandle<()>, oneshot::Receiver<()>) {
        let _ = self.stop.send(false);
        (self.task, self.began_closing)
    }
}

impl GuestRuntime {
    /// Stops a subscription's pump and keeps it to await at shutdown;
    /// returns the word that the pump began closing it.
    fn retire(&self, sub: ActiveSub) -> oneshot::Receiver<()> {
        let (task, began_closing) = sub.unsubscribe();
        let mut closing = self.closing.lock().unwrap_or_else(|e| e.into_inner());
        closing.retain(|p| !p.is_finished());
        closing.push(task);
        began_closing
    }

    /// Waits until the pumps of `retired` subscriptions have begun closing
    /// them (no I/O: a pump answers its stop at once): a subscription the
    /// guest makes next may take over what they hold at the broker, such as
    /// an MQTT session and the messages it was sent.
    async fn began_closing(retired: Vec<oneshot::Receiver<()>>) {
        // A pump that ended otherwise dropped its sender: nothing to wait for.
        futures::future::join_all(retired).await;
    }

    async fn settings_from(
        &self,
        extensions: Vec<(String, String)>,
    ) -> Result<SubSettings, MessagingError> {
        let mut client = self.config.client.clone();
        let mut mode = self.config.mode;
        let mut group = self.config.group_or(&self.name).to_string();
        let mut ack_wait = self.config.ack_wait();
        let mut rest = BTreeMap::new();
        for (k, v) in extensions {
            let bad =
                |what: &str| MessagingError::Other(format!("extension `{k}`: {what}, got `{v}`"));
            match k.as_str() {
                "mode" => {
                    mode = DeliveryMode::parse(&v)
                        .ok_or_else(|| bad("expected `pub-sub` or `point-to-point`"))?
                }
                "group" | "queue-group" => {
                    if v.is_empty() {
                        return Err(bad("expected a group name"));
                    }
                    group = v;
                }
                "ack-wait-ms" => {
                    let ms: u64 = v
                        .parse()
                        .ok()
                        .filter(|ms| *ms > 0)
                        .ok_or_else(|| bad("expected milliseconds above 0"))?;
                    ack_wait = Duration::from_millis(ms);
                }
                "client" => client = v,
                _ => {
                    rest.insert(k, v);
                }
            }
        }
        if !self.policy.clients.contains(&client) {
            return Err(MessagingError::Unauthorized(format!(
                "client `{client}` is not granted to this guest"
            )));
        }
        if mode == DeliveryMode::PointToPoint {
            self.may_join(&group)?;
        }
        self.clients
            .check_extensions(&client, &rest)
            .map_err(|e| MessagingError::Other(e.to_string()))?;
        let mode = match mode {
            DeliveryMode::PubSub => Mode::Broadcast,
            DeliveryMode::PointToPoint => Mode::Competing { group },
        };
        Ok(SubSettings {
            client,
            mode,
            ack_wait,
            options: rest,
        })
    }

    /// Point-to-point groups belong to the guests configured for them: a
    /// guest may join its own group and the groups of its `allow-groups`,
    /// and no other (it would take messages meant for another guest).
    fn may_join(&self, group: &str) -> Result<(), MessagingError> {
        let own = self.config.group_or(&self.name);
        if group == own || self.config.allow_groups.iter().any(|g| g == group) {
            return Ok(());
        }
        Err(MessagingError::Unauthorized(format!(
            "group `{group}` is not this guest's: it may join `{own}`{}",
            if self.config.allow_groups.is_empty() {
                String::new()
            } else {
                format!(" and {}", self.config.allow_groups.join(", "))
            }
        )))
    }

    /// Replaces the subscription set with `channels`, all or nothing.
    pub(super) async fn update(
        self: &Arc<Self>,
        channels: Vec<Pattern>,
        extensions: Vec<(String, String)>,
    ) -> Result<(), MessagingError> {
        let settings = self.settings_from(extensions).await?;
        // One update at a time (each replaces the whole set), but the set
        // itself is locked only to read or change it, never across the
        // network I/O of opening subscriptions.
        let stopped = self.updating.lock().await;
        if *stopped {
            return Err(MessagingError::Other(format!(
                "guest `{}` is stopping",
                self.name
            )));
        }
        let to_open: Vec<Pattern> = {
            let subs = self.subs.lock().await;
            let mut to_open: Vec<Pattern> = Vec::new();
            for pattern in &channels {
                let key = pattern.as_str();
                if !subs.get(key).is_some_and(|s| s.settings == settings)
                    && !to_open.iter().any(|p| p.as_str() == key)
                {
                    to_open.push(pattern.clone());
                }
            }
            to_open
        };
        let mut opened: Vec<(String, ActiveSub)> = Vec::new();
        for pattern in to_open {
            let key = pattern.as_str().to_string();
            match self.open(pattern, settings.clone()).await {
                Ok(sub) => opened.push((key, sub)),
                Err(e) => {
                    let retired = opened.into_iter().map(|(_, s)| self.retire(s)).collect();
                    Self::began_closing(retired).await;
                    return Err(e);
                }
            }
        }
        let mut retired = Vec::new();
        let mut subs = self.subs.lock().await;
        let removed: Vec<String> = subs
            .keys()
            .filter(|k| !channels.iter().any(|p| p.as_str() == k.as_str()))
            .cloned()
            .collect();
        for key in removed {
            if let Some(s) = subs.remove(&key) {
                retired.push(self.retire(s));
            }
        }
        for (key, sub) in opened {
            if let Some(old) = subs.insert(key, sub) {
                retired.push(self.retire(old));
            }
        }
        tracing::info!(guest = %self.name, channels = ?subs.keys().collect::<Vec<_>>(), "subscriptions updated");
        drop(subs);
        Self::began_closing(retired).await;
        drop(stopped);
        Ok(())
    }

    async fn open(
        self: &Arc<Self>,
        pattern: Pattern,
        settings: SubSettings,
    ) -> Result<ActiveSub, MessagingError> {
        let backend = self.clients.get(&settings.client).await?;
        let spec = SubscriptionSpec {
            pattern,
            mode: settings.mode.clone(),
            ack_wait: broker_ack_wait(settings.ack_wait, self.config.handler_timeout()),
            // The guest's queue plus the batches its workers hold.
            prefetch: 2 * self.config.batch_size * self.config.concurrency,
            options: settings.options.clone(),
        };
        let Some(feeder) = self
            .feeder
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        else {
            return Err(MessagingError::Other(format!(
                "guest `{}` is stopping",
                self.name
            )));
        };
        let sub = backend.subscribe(spec).await?;
        let source = Arc::new(Source { backend });
        let (stop, stopped) = oneshot::channel();
        let (began, began_closing) = oneshot::channel();
        let task = tokio::spawn(pump(
            sub,
            source,
            feeder,
            Control {
                stop: stopped,
                began_closing: began,
                workers_done: self.workers_done.subscribe(),
            },
            self.name.clone(),
        ));
        Ok(ActiveSub {
            settings,
            stop,
            began_closing,
            task,
        })
    }
}
