//! `[guests.NAME]`: one guest — its component, the clients and channels it
//! is granted, its subscriptions and its limits — read into typed values
//! (patterns, durations, enums) and checked against its clients.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use courier_broker::Pattern;
use courier_broker::factory::{Registry, millis};
use serde::{Deserialize, Deserializer};

use crate::client::ClientConfig;
use crate::error::{ConfigError, invalid};

/// Subscription extensions the dispatcher reads itself, on every backend;
/// the others go to the client's backend.
pub const DISPATCHER_EXTENSIONS: &[&str] =
    &["mode", "group", "queue-group", "ack-wait-ms", "client"];

/// Broadcast or competing consumers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeliveryMode {
    /// Every subscriber gets every message.
    #[default]
    PubSub,
    /// Each message goes to one member of the group.
    PointToPoint,
}

impl DeliveryMode {
    /// Parses the configuration / extension spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pub-sub" => Some(Self::PubSub),
            "point-to-point" => Some(Self::PointToPoint),
            _ => None,
        }
    }
}

/// When messages are acked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AckMode {
    /// Unsettled messages of a batch are accepted when `handler` returns `ok`.
    #[default]
    Auto,
    /// Only `complete-message` accepts; the rest wait out their ack deadline.
    Manual,
}

/// One guest: its component, grants, subscriptions and limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct GuestConfig {
    /// Path of the component, relative to the config file.
    pub component: Option<PathBuf>,
    /// The client `connect("")` and the subscriptions use.
    pub client: String,
    /// Clients the guest may connect to (the default client is always granted).
    pub clients: Vec<String>,
    /// Channels subscribed at start.
    pub subscribe: Vec<Pattern>,
    /// Extensions of the subscriptions made at start, as a guest would give
    /// them to `update-guest-configuration` (e.g. `{ durable = "orders" }`
    /// for a persistent MQTT session, `{ qos = 2 }`); checked against the
    /// client's backend when the file is read.
    #[serde(deserialize_with = "text_values")]
    pub subscribe_options: BTreeMap<String, String>,
    /// Channel patterns the guest may subscribe to (default: `subscribe`).
    pub allow_subscribe: Option<Vec<Pattern>>,
    /// Channel patterns the guest may publish to (default: none).
    pub allow_publish: Vec<Pattern>,
    /// Broadcast or competing consumers.
    pub mode: DeliveryMode,
    /// Group name for point-to-point (default: the guest's name).
    pub group: Option<String>,
    /// Other point-to-point groups the guest may join through
    /// `update-guest-configuration` (a group is its guest's own otherwise).
    pub allow_groups: Vec<String>,
    /// Instances handling batches at once.
    pub concurrency: usize,
    /// Largest batch handed to `handler`.
    pub batch_size: usize,
    /// How long to wait for a batch to fill (`batch-linger-ms`).
    #[serde(rename = "batch-linger-ms", deserialize_with = "millis_or_zero")]
    pub batch_linger: Duration,
    /// Auto or manual acks.
    pub ack: AckMode,
    /// How long a delivery may stay unsettled before redelivery
    /// (`ack-wait-ms`).
    #[serde(rename = "ack-wait-ms", deserialize_with = "millis")]
    pub ack_wait: Duration,
    /// Deliveries of one message before it is dead-lettered.
    pub max_attempts: u32,
    /// First redelivery delay, doubled on each attempt (`backoff-ms`).
    #[serde(rename = "backoff-ms", deserialize_with = "millis_or_zero")]
    pub backoff_first: Duration,
    /// Largest redelivery delay (`backoff-max-ms`).
    #[serde(rename = "backoff-max-ms", deserialize_with = "millis_or_zero")]
    pub backoff_max: Duration,
    /// Channel that receives messages after `max-attempts` (default: drop and log).
    #[serde(deserialize_with = "channel")]
    pub dead_letter: Option<Pattern>,
    /// Linear memory limit per instance, in MiB.
    pub memory_limit_mib: u64,
    /// Deadline of one `handler` call (`handler-timeout-ms`).
    #[serde(rename = "handler-timeout-ms", deserialize_with = "millis")]
    pub handler_timeout: Duration,
    /// Largest message payload the guest is handed or may send, in bytes.
    pub max_message_bytes: usize,
    /// Let the guest see the host's environment variables.
    pub inherit_env: bool,
    /// Environment variables given to the guest.
    pub env: BTreeMap<String, String>,
}

impl Default for GuestConfig {
    fn default() -> Self {
        Self {
            component: None,
            client: "default".into(),
            clients: Vec::new(),
            subscribe: Vec::new(),
            subscribe_options: BTreeMap::new(),
            allow_subscribe: None,
            allow_publish: Vec::new(),
            mode: DeliveryMode::PubSub,
            group: None,
            allow_groups: Vec::new(),
            concurrency: 1,
            batch_size: 100,
            batch_linger: Duration::ZERO,
            ack: AckMode::Auto,
            ack_wait: Duration::from_secs(30),
            max_attempts: 5,
            backoff_first: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            dead_letter: None,
            memory_limit_mib: 64,
            handler_timeout: Duration::from_secs(5),
            max_message_bytes: 1 << 20,
            inherit_env: false,
            env: BTreeMap::new(),
        }
    }
}

/// A duration in milliseconds; 0 allowed.
fn millis_or_zero<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    Ok(Duration::from_millis(u64::deserialize(d)?))
}

/// A channel to publish to: a pattern without wildcards.
fn channel<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Pattern>, D::Error> {
    let text = String::deserialize(d)?;
    Pattern::parse_literal(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// A table of strings, numbers and booleans, as text (extensions are text
/// in the world).
fn text_values<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Value {
        Text(String),
        Integer(i64),
        Float(f64),
        Bool(bool),
    }
    let raw = BTreeMap::<String, Value>::deserialize(d)?;
    Ok(raw
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                Value::Text(s) => s,
                Value::Integer(i) => i.to_string(),
                Value::Float(f) => f.to_string(),
                Value::Bool(b) => b.to_string(),
            };
            (k, v)
        })
        .collect())
}

impl GuestConfig {
    /// The clients this guest is granted: `clients` plus its default client.
    pub fn granted_clients(&self) -> Vec<String> {
        let mut all = self.clients.clone();
        if !all.contains(&self.client) {
            all.push(self.client.clone());
        }
        all
    }

    /// The subscribe allow-list, as written or defaulted.
    pub fn subscribe_allow_list(&self) -> &[Pattern] {
        self.allow_subscribe.as_deref().unwrap_or(&self.subscribe)
    }

    /// The redelivery delay before attempt `attempt + 1`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(20);
        self.backoff_first
            .saturating_mul(factor)
            .min(self.backoff_max)
    }

    /// The handler deadline.
    pub fn handler_timeout(&self) -> Duration {
        self.handler_timeout
    }

    /// The ack deadline.
    pub fn ack_wait(&self) -> Duration {
        self.ack_wait
    }

    /// The group used in point-to-point mode.
    pub fn group_or<'a>(&'a self, name: &'a str) -> &'a str {
        self.group.as_deref().unwrap_or(name)
    }

    /// Checks what the types cannot: references to clients, allow-lists,
    /// ranges, and the subscriptions against what their client's backend
    /// can do.
    pub(crate) fn validate(
        &self,
        name: &str,
        clients: &BTreeMap<String, ClientConfig>,
        registry: &Registry,
    ) -> Result<(), ConfigError> {
        let key = |k: &str| format!("guests.{name}.{k}");
        // The default client may be implicit (an embedded broker) when no
        // clients are declared.
        let known = |c: &str| clients.contains_key(c) || (clients.is_empty() && c == "default");
        if !known(&self.client) {
            return Err(invalid(
                key("client"),
                format!("no client named `{}`", self.client),
            ));
        }
        if let Some(c) = self.clients.iter().find(|c| !known(c)) {
            return Err(invalid(key("clients"), format!("no client named `{c}`")));
        }
        if let Some(allow) = &self.allow_subscribe
            && let Some(s) = self
                .subscribe
                .iter()
                .find(|s| !courier_broker::pattern::allowed_pattern(allow, s))
        {
            return Err(invalid(
                key("subscribe"),
                format!("`{s}` is outside allow-subscribe"),
            ));
        }
        if self.group.as_deref() == Some("") {
            return Err(invalid(key("group"), "must not be empty"));
        }
        if self.allow_groups.iter().any(String::is_empty) {
            return Err(invalid(
                key("allow-groups"),
                "a group name must not be empty",
            ));
        }
        let positive = [
            ("concurrency", self.concurrency as u64),
            ("batch-size", self.batch_size as u64),
            ("max-attempts", u64::from(self.max_attempts)),
            ("memory-limit-mib", self.memory_limit_mib),
            ("max-message-bytes", self.max_message_bytes as u64),
        ];
        if let Some((k, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(invalid(key(k), "must be above 0"));
        }
        if self.concurrency > 1024 {
            return Err(invalid(key("concurrency"), "at most 1024"));
        }
        if self.memory_limit_mib > 4096 {
            return Err(invalid(
                key("memory-limit-mib"),
                "at most 4096 (a 32-bit memory)",
            ));
        }
        if self.backoff_max < self.backoff_first {
            return Err(invalid(
                key("backoff-max-ms"),
                "must not be below backoff-ms",
            ));
        }
        match clients.get(&self.client) {
            Some(client) => self.check_subscriptions(name, client, registry),
            // The implicit embedded client can do everything.
            None => Ok(()),
        }
    }

    /// The subscriptions made at start against the client they use: what
    /// the backend cannot do is refused now, not at the first connection.
    fn check_subscriptions(
        &self,
        name: &str,
        client: &ClientConfig,
        registry: &Registry,
    ) -> Result<(), ConfigError> {
        let key = |k: &str| format!("guests.{name}.{k}");
        let features = client.features();
        if self.mode == DeliveryMode::PointToPoint && !features.competing {
            return Err(invalid(
                key("mode"),
                format!(
                    "point-to-point is not supported by client `{}` ({}): it has no competing consumers",
                    self.client, client.backend
                ),
            ));
        }
        if !features.wildcards
            && let Some(p) = self.subscribe.iter().find(|p| !p.is_literal())
        {
            return Err(invalid(
                key("subscribe"),
                format!(
                    "`{p}`: wildcards are not supported by client `{}` ({})",
                    self.client, client.backend
                ),
            ));
        }
        let backend_extensions: BTreeMap<String, String> = self
            .subscribe_options
            .iter()
            .filter(|(k, _)| !DISPATCHER_EXTENSIONS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if let Some(factory) = registry.get(client.backend) {
            factory
                .check_extensions(&client.options, &backend_extensions)
                .map_err(|e| invalid(key("subscribe-options"), e.message()))?;
        }
        Ok(())
    }
}
