//! The host configuration: clients, guests and limits, read from TOML.
//!
//! Clients are named connections to brokers; guests name the clients they may
//! use (like Spin's runtime config, the names in the guest map to backends in
//! the host's config). Parsing rejects unknown keys with the key and the line;
//! [`Config::validate`] checks what the types cannot, naming the key.
//!
//! ```toml
//! [clients.default]
//! backend = "embedded"
//!
//! [guests.uppercase]
//! component = "uppercase.wasm"
//! subscribe = ["in"]
//! allow-publish = ["out"]
//! max-attempts = 3
//! dead-letter = "dlq.uppercase"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use courier_broker::Pattern;
use serde::Deserialize;

/// A configuration error, naming the file and key it concerns.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file `{path}`: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Bad TOML, unknown key, or wrong type (the message has the line).
    #[error("invalid config file `{path}`: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's message, with line and column.
        message: String,
    },
    /// A value that parses but makes no sense.
    #[error("invalid config: `{key}`: {message}")]
    Invalid {
        /// The dotted key, e.g. `guests.uppercase.client`.
        key: String,
        /// What is wrong with it.
        message: String,
    },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// Host-wide settings.
    #[serde(default)]
    pub host: HostConfig,
    /// Named broker connections.
    #[serde(default)]
    pub clients: BTreeMap<String, ClientConfig>,
    /// Guests to run, by name.
    #[serde(default)]
    pub guests: BTreeMap<String, GuestConfig>,
}

/// Host-wide settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct HostConfig {
    /// Address of the HTTP endpoint (ingress, `/metrics`, `/healthz`).
    pub listen: Option<String>,
    /// The client HTTP ingress and `--stdin` publish to.
    pub ingress_client: Option<String>,
    /// Largest message accepted at the HTTP ingress.
    pub max_ingress_bytes: usize,
    /// Seconds between progress summaries in the log (0 turns them off).
    pub summary_secs: u64,
    /// Where the embedded broker stores its point-to-point queues; without
    /// it the embedded broker keeps messages in memory only.
    pub data_dir: Option<PathBuf>,
    /// When a message published to the stored embedded broker counts as
    /// stored: `always` (fsync before `send` returns) or `os` (written to the
    /// operating system: survives a crash of Courier, not of the machine).
    pub sync: String,
    /// Keep compiled components across runs, so that `courier run` starts
    /// without compiling an unchanged component again.
    pub compile_cache: bool,
    /// Where compiled components are kept (default: `$XDG_CACHE_HOME/courier`
    /// or `~/.cache/courier`).
    pub cache_dir: Option<PathBuf>,
    /// Take instances from wasmtime's pooling allocator (preallocated slots)
    /// rather than mapping fresh memory for each.
    pub pooling: bool,
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            listen: None,
            ingress_client: None,
            max_ingress_bytes: 1 << 20,
            summary_secs: 10,
            data_dir: None,
            sync: "always".into(),
            compile_cache: true,
            cache_dir: None,
            pooling: false,
        }
    }
}

/// Which broker a client talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendKind {
    /// The in-process broker.
    Embedded,
    /// NATS, core or JetStream (`options.jetstream = true`).
    #[cfg(feature = "nats")]
    Nats,
    /// Redis, pub/sub or Streams (`options.streams = true`).
    #[cfg(feature = "redis")]
    Redis,
    /// AMQP 0-9-1 (RabbitMQ).
    #[cfg(feature = "amqp")]
    Amqp,
    /// MQTT 5 (Mosquitto, ...).
    #[cfg(feature = "mqtt")]
    Mqtt,
}

impl BackendKind {
    /// The name used in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Embedded => "embedded",
            #[cfg(feature = "nats")]
            Self::Nats => "nats",
            #[cfg(feature = "redis")]
            Self::Redis => "redis",
            #[cfg(feature = "amqp")]
            Self::Amqp => "amqp",
            #[cfg(feature = "mqtt")]
            Self::Mqtt => "mqtt",
        }
    }

    /// The keys of `[clients.NAME.options]` this backend understands.
    pub fn option_keys(self) -> &'static [&'static str] {
        match self {
            Self::Embedded => &[],
            #[cfg(feature = "nats")]
            Self::Nats => courier_nats::CLIENT_OPTION_KEYS,
            #[cfg(feature = "redis")]
            Self::Redis => courier_redis::CLIENT_OPTION_KEYS,
            #[cfg(feature = "amqp")]
            Self::Amqp => courier_amqp::CLIENT_OPTION_KEYS,
            #[cfg(feature = "mqtt")]
            Self::Mqtt => courier_mqtt::CLIENT_OPTION_KEYS,
        }
    }

    /// Whether the backend needs a `url`.
    pub fn needs_url(self) -> bool {
        !matches!(self, Self::Embedded)
    }
}

/// A named connection to a broker.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ClientConfig {
    /// The backend.
    pub backend: BackendKind,
    /// The broker's address, for backends that have one.
    pub url: Option<String>,
    /// Deadline for connect and publish, in milliseconds.
    #[serde(default = "default_broker_timeout_ms")]
    pub timeout_ms: u64,
    /// Backend-specific settings (`[clients.NAME.options]`), as text.
    #[serde(default, deserialize_with = "option_values")]
    pub options: BTreeMap<String, String>,
}

/// Reads a table of strings, numbers and booleans as text.
fn option_values<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, String>, D::Error> {
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

fn default_broker_timeout_ms() -> u64 {
    5_000
}

impl ClientConfig {
    /// An embedded-broker client.
    pub fn embedded() -> Self {
        Self {
            backend: BackendKind::Embedded,
            url: None,
            timeout_ms: default_broker_timeout_ms(),
            options: BTreeMap::new(),
        }
    }
}

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
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct GuestConfig {
    /// Path of the component, relative to the config file.
    pub component: Option<PathBuf>,
    /// The client `connect("")` and the subscriptions use.
    #[serde(default = "default_client")]
    pub client: String,
    /// Clients the guest may connect to (the default client is always granted).
    #[serde(default)]
    pub clients: Vec<String>,
    /// Channels subscribed at start.
    #[serde(default)]
    pub subscribe: Vec<String>,
    /// Extensions of the subscriptions made at start, as a guest would give
    /// them to `update-guest-configuration` (e.g. `{ durable = "orders" }`
    /// for a persistent MQTT session, `{ qos = "2" }`).
    #[serde(default)]
    pub subscribe_options: BTreeMap<String, String>,
    /// Channel patterns the guest may subscribe to (default: `subscribe`).
    pub allow_subscribe: Option<Vec<String>>,
    /// Channel patterns the guest may publish to (default: none).
    #[serde(default)]
    pub allow_publish: Vec<String>,
    /// Broadcast or competing consumers.
    #[serde(default)]
    pub mode: DeliveryMode,
    /// Group name for point-to-point (default: the guest's name).
    pub group: Option<String>,
    /// Other point-to-point groups the guest may join through
    /// `update-guest-configuration` (a group is its guest's own otherwise).
    #[serde(default)]
    pub allow_groups: Vec<String>,
    /// Instances handling batches at once.
    #[serde(default = "one")]
    pub concurrency: usize,
    /// Largest batch handed to `handler`.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// How long to wait for a batch to fill, in milliseconds.
    #[serde(default)]
    pub batch_linger_ms: u64,
    /// Auto or manual acks.
    #[serde(default)]
    pub ack: AckMode,
    /// How long a delivery may stay unsettled before redelivery, in ms.
    #[serde(default = "default_ack_wait_ms")]
    pub ack_wait_ms: u64,
    /// Deliveries of one message before it is dead-lettered.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// First redelivery delay, doubled on each attempt, in ms.
    #[serde(default = "default_backoff_ms")]
    pub backoff_ms: u64,
    /// Largest redelivery delay, in ms.
    #[serde(default = "default_backoff_max_ms")]
    pub backoff_max_ms: u64,
    /// Channel that receives messages after `max-attempts` (default: drop and log).
    pub dead_letter: Option<String>,
    /// Linear memory limit per instance, in MiB.
    #[serde(default = "default_memory_mib")]
    pub memory_limit_mib: u64,
    /// Deadline of one `handler` call, in ms.
    #[serde(default = "default_handler_timeout_ms")]
    pub handler_timeout_ms: u64,
    /// Largest message payload the guest is handed or may send, in bytes.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// Let the guest see the host's environment variables.
    #[serde(default)]
    pub inherit_env: bool,
    /// Environment variables given to the guest.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

fn default_client() -> String {
    "default".into()
}
fn one() -> usize {
    1
}
fn default_batch_size() -> usize {
    100
}
fn default_ack_wait_ms() -> u64 {
    30_000
}
fn default_max_attempts() -> u32 {
    5
}
fn default_backoff_ms() -> u64 {
    100
}
fn default_backoff_max_ms() -> u64 {
    10_000
}
fn default_memory_mib() -> u64 {
    64
}
fn default_handler_timeout_ms() -> u64 {
    5_000
}
fn default_max_message_bytes() -> usize {
    1 << 20
}

impl Default for GuestConfig {
    fn default() -> Self {
        toml::from_str("").expect("every guest key has a default")
    }
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
    pub fn subscribe_allow_list(&self) -> &[String] {
        self.allow_subscribe.as_deref().unwrap_or(&self.subscribe)
    }

    /// The redelivery delay before attempt `attempt + 1`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u64 << attempt.saturating_sub(1).min(20);
        Duration::from_millis(
            self.backoff_ms
                .saturating_mul(factor)
                .min(self.backoff_max_ms),
        )
    }

    /// The handler deadline.
    pub fn handler_timeout(&self) -> Duration {
        Duration::from_millis(self.handler_timeout_ms)
    }

    /// The ack deadline.
    pub fn ack_wait(&self) -> Duration {
        Duration::from_millis(self.ack_wait_ms)
    }

    /// The group used in point-to-point mode.
    pub fn group_or<'a>(&'a self, name: &'a str) -> &'a str {
        self.group.as_deref().unwrap_or(name)
    }
}

impl Config {
    /// Reads and validates a config file; relative component paths,
    /// `host.data-dir` and `host.cache-dir` are made relative to the file's
    /// folder.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config = Self::from_toml(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        for dir in [&mut config.host.data_dir, &mut config.host.cache_dir] {
            if let Some(d) = dir
                && d.is_relative()
            {
                *d = base.join(&*d);
            }
        }
        for guest in config.guests.values_mut() {
            if let Some(c) = &guest.component
                && c.is_relative()
            {
                guest.component = Some(base.join(c));
            }
        }
        Ok(config)
    }

    /// Parses and validates TOML text.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<inline>"),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what the types cannot: references between sections, patterns, ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if courier_broker::embedded::store::SyncPolicy::parse(&self.host.sync).is_none() {
            return Err(invalid(
                "host.sync",
                format!("expected `always` or `os`, got `{}`", self.host.sync),
            ));
        }
        if let Some(addr) = &self.host.listen
            && addr.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(invalid(
                "host.listen",
                format!("`{addr}` is not an address like 127.0.0.1:8080"),
            ));
        }
        if let Some(c) = &self.host.ingress_client
            && !self.clients.contains_key(c)
        {
            return Err(invalid(
                "host.ingress-client",
                format!("no client named `{c}`"),
            ));
        }
        for (name, client) in &self.clients {
            if client.timeout_ms == 0 {
                return Err(invalid(
                    format!("clients.{name}.timeout-ms"),
                    "must be above 0",
                ));
            }
            let kind = client.backend;
            if kind.needs_url() && client.url.is_none() {
                return Err(invalid(
                    format!("clients.{name}.url"),
                    format!("the {} backend needs a url", kind.as_str()),
                ));
            }
            let known = kind.option_keys();
            if let Some(k) = client.options.keys().find(|k| !known.contains(&k.as_str())) {
                let list = if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                };
                return Err(invalid(
                    format!("clients.{name}.options.{k}"),
                    format!(
                        "unknown option for the {} backend (known: {list})",
                        kind.as_str()
                    ),
                ));
            }
        }
        for (name, guest) in &self.guests {
            validate_guest(name, guest, &self.clients)?;
        }
        Ok(())
    }
}

fn validate_guest(
    name: &str,
    g: &GuestConfig,
    clients: &BTreeMap<String, ClientConfig>,
) -> Result<(), ConfigError> {
    let key = |k: &str| format!("guests.{name}.{k}");
    // The default client may be implicit (an embedded broker) when no clients are declared.
    let known = |c: &str| clients.contains_key(c) || (clients.is_empty() && c == "default");
    if !known(&g.client) {
        return Err(invalid(
            key("client"),
            format!("no client named `{}`", g.client),
        ));
    }
    for c in &g.clients {
        if !known(c) {
            return Err(invalid(key("clients"), format!("no client named `{c}`")));
        }
    }
    let check_patterns = |k: &str, list: &[String]| -> Result<(), ConfigError> {
        for p in list {
            Pattern::parse(p).map_err(|e| invalid(key(k), e.to_string()))?;
        }
        Ok(())
    };
    check_patterns("subscribe", &g.subscribe)?;
    check_patterns("allow-publish", &g.allow_publish)?;
    if let Some(list) = &g.allow_subscribe {
        check_patterns("allow-subscribe", list)?;
        let allow: Vec<Pattern> = list.iter().filter_map(|p| Pattern::parse(p).ok()).collect();
        for s in &g.subscribe {
            let p = Pattern::parse(s).map_err(|e| invalid(key("subscribe"), e.to_string()))?;
            if !courier_broker::pattern::allowed_pattern(&allow, &p) {
                return Err(invalid(
                    key("subscribe"),
                    format!("`{s}` is outside allow-subscribe"),
                ));
            }
        }
    }
    if g.group.as_deref() == Some("") {
        return Err(invalid(key("group"), "must not be empty"));
    }
    if g.allow_groups.iter().any(String::is_empty) {
        return Err(invalid(
            key("allow-groups"),
            "a group name must not be empty",
        ));
    }
    if let Some(dl) = &g.dead_letter {
        Pattern::parse_literal(dl).map_err(|e| invalid(key("dead-letter"), e.to_string()))?;
    }
    let positive = [
        ("concurrency", g.concurrency as u64),
        ("batch-size", g.batch_size as u64),
        ("max-attempts", u64::from(g.max_attempts)),
        ("memory-limit-mib", g.memory_limit_mib),
        ("handler-timeout-ms", g.handler_timeout_ms),
        ("ack-wait-ms", g.ack_wait_ms),
        ("max-message-bytes", g.max_message_bytes as u64),
    ];
    for (k, v) in positive {
        if v == 0 {
            return Err(invalid(key(k), "must be above 0"));
        }
    }
    if g.concurrency > 1024 {
        return Err(invalid(key("concurrency"), "at most 1024"));
    }
    if g.memory_limit_mib > 4096 {
        return Err(invalid(
            key("memory-limit-mib"),
            "at most 4096 (a 32-bit memory)",
        ));
    }
    if g.backoff_max_ms < g.backoff_ms {
        return Err(invalid(
            key("backoff-max-ms"),
            "must not be below backoff-ms",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Config::from_toml(text).unwrap_err().to_string()
    }

    #[test]
    fn full_config_parses() {
        let c = Config::from_toml(
            r#"
            [host]
            listen = "127.0.0.1:0"
            [clients.default]
            backend = "embedded"
            [guests.up]
            component = "up.wasm"
            subscribe = ["in.*"]
            allow-subscribe = ["in.>"]
            allow-publish = ["out"]
            mode = "point-to-point"
            max-attempts = 3
            dead-letter = "dlq"
            "#,
        )
        .unwrap();
        let g = &c.guests["up"];
        assert_eq!(g.mode, DeliveryMode::PointToPoint);
        assert_eq!(g.max_attempts, 3);
        assert_eq!(g.batch_size, 100);
        assert_eq!(g.granted_clients(), vec!["default".to_string()]);
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let e = err("[guests.a]\ncomponent = \"a.wasm\"\nmax-atempts = 3\n");
        assert!(e.contains("max-atempts"), "{e}");
        assert!(e.contains("line 3"), "{e}");
    }

    #[test]
    fn bad_values_name_the_key() {
        let e = err("[guests.a]\nclient = \"nope\"\n");
        assert!(e.contains("guests.a.client") && e.contains("nope"), "{e}");
        let e = err("[guests.a]\nsubscribe = [\"a..b\"]\n");
        assert!(e.contains("guests.a.subscribe"), "{e}");
        let e = err("[guests.a]\nsubscribe = [\"x\"]\nallow-subscribe = [\"y\"]\n");
        assert!(e.contains("outside allow-subscribe"), "{e}");
        let e = err("[guests.a]\nbatch-size = 0\n");
        assert!(e.contains("guests.a.batch-size"), "{e}");
        let e = err("[guests.a]\ndead-letter = \"dlq.*\"\n");
        assert!(e.contains("guests.a.dead-letter"), "{e}");
        let e = err("[clients.x]\nbackend = \"carrier-pigeon\"\n");
        assert!(e.contains("carrier-pigeon") && e.contains("line 2"), "{e}");
        let e = err("[host]\nlisten = \"nowhere\"\n");
        assert!(e.contains("host.listen"), "{e}");
        let e = err("[clients.x]\nbackend = \"embedded\"\n[clients.x.options]\ndurable = true\n");
        assert!(e.contains("clients.x.options.durable"), "{e}");
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let g = GuestConfig {
            backoff_ms: 100,
            backoff_max_ms: 350,
            ..GuestConfig::default()
        };
        assert_eq!(g.backoff(1), Duration::from_millis(100));
        assert_eq!(g.backoff(2), Duration::from_millis(200));
        assert_eq!(g.backoff(3), Duration::from_millis(350));
        assert_eq!(g.backoff(60), Duration::from_millis(350));
    }
}
