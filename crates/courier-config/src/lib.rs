//! Courier's configuration file, read once into typed values.
//!
//! Clients are named connections to brokers; guests name the clients they
//! may use (like Spin's runtime config, the names in the guest map to
//! backends in the host's config). Everything is checked when the file is
//! read: unknown keys and bad values with the key and the line (a backend's
//! `options` by that backend's own typed struct, found in the
//! [`Registry`]), references between sections and what a guest's
//! subscriptions need from their client.
//!
//! - [`host`]: `[host]`, host-wide settings.
//! - [`ingress`]: `[host.ingress-tokens.NAME]`, who may publish over HTTP.
//! - [`client`]: `[clients.NAME]`, broker connections.
//! - [`guest`]: `[guests.NAME]`, guests with their grants and limits.
//! - [`error`]: what is wrong, where.
//!
//! ```
//! let config = courier_config::Config::from_toml(r#"
//!     [clients.default]
//!     backend = "embedded"
//!
//!     [guests.uppercase]
//!     component = "uppercase.wasm"
//!     subscribe = ["in"]
//!     allow-publish = ["out"]
//!     max-attempts = 3
//!     dead-letter = "dlq.uppercase"
//! "#).unwrap();
//! assert_eq!(config.guests["uppercase"].max_attempts, 3);
//!
//! let err = courier_config::Config::from_toml(
//!     "[clients.q]\nbackend = \"embedded\"\n[clients.q.options]\ndurable = true\n",
//! ).unwrap_err();
//! assert_eq!(
//!     err.to_string(),
//!     "invalid config: line 4 `clients.q.options.durable`: unknown field `durable`, there are no fields"
//! );
//! ```
#![deny(missing_docs)]

pub mod client;
pub mod error;
pub mod guest;
pub mod host;
pub mod ingress;
mod locate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use courier_broker::factory::Registry;
use serde::Deserialize;

pub use client::ClientConfig;
pub use error::ConfigError;
pub use guest::{AckMode, DeliveryMode, GuestConfig};
pub use host::{HostConfig, TlsIdentity};

use error::invalid;

/// The whole configuration file, read and checked.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// Host-wide settings.
    pub host: HostConfig,
    /// Named broker connections.
    pub clients: BTreeMap<String, ClientConfig>,
    /// Guests to run, by name.
    pub guests: BTreeMap<String, GuestConfig>,
    /// The HTTP ingress's bearer tokens, read (`host.ingress-tokens`).
    pub ingress_tokens: BTreeMap<String, ingress::IngressToken>,
    /// The HTTP endpoint's certificate and key, read (`host.tls-cert-file`,
    /// `host.tls-key-file`): with them it serves HTTPS.
    pub tls: Option<TlsIdentity>,
}

/// The file as written, before the backends read their options.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawConfig {
    #[serde(default)]
    host: HostConfig,
    #[serde(default)]
    clients: BTreeMap<String, client::RawClient>,
    #[serde(default)]
    guests: BTreeMap<String, GuestConfig>,
}

impl Config {
    /// Reads and checks a config file with this build's backends; relative
    /// component paths, `host.data-dir`, `host.cache-dir` and the TLS files
    /// are made relative to the file's folder.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let registry = courier_registry::builtin();
        let mut config = Self::read(&text, &registry, base).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })?;
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

    /// Reads and checks TOML text with this build's backends
    /// ([`courier_registry::builtin`]).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Self::from_toml_with(text, &courier_registry::builtin())
    }

    /// Reads and checks TOML text with the backends of `registry`; a
    /// client's `url-file` (and every other file named) is relative to the
    /// current folder.
    pub fn from_toml_with(text: &str, registry: &Registry) -> Result<Self, ConfigError> {
        Self::read(text, registry, Path::new("."))
    }

    /// Reads and checks TOML text; `url-file`s are relative to `base`.
    fn read(text: &str, registry: &Registry, base: &Path) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<inline>"),
            message: e.to_string(),
        })?;
        let config = Config {
            ingress_tokens: ingress::resolve(&raw.host.ingress_tokens, base)?,
            tls: raw.host.read_tls(text, base)?,
            host: raw.host,
            clients: client::resolve_all(raw.clients, registry, text, base)?,
            guests: raw.guests,
        };
        config.validate_with(registry)?;
        Ok(config)
    }

    /// Checks references between sections and each guest against its
    /// clients, with this build's backends (for a configuration changed or
    /// made in code; a file is checked when read).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_with(&courier_registry::builtin())
    }

    /// Checks references between sections and each guest against its
    /// clients, with the backends of `registry`.
    pub fn validate_with(&self, registry: &Registry) -> Result<(), ConfigError> {
        if let Some(addr) = self.host.listen
            && !addr.ip().is_loopback()
            && self.ingress_tokens.is_empty()
        {
            return Err(invalid(
                "host.listen",
                format!(
                    "`{addr}` is reachable from other machines, and without \
                     [host.ingress-tokens.NAME] anyone there could publish to any channel: \
                     declare tokens, or listen on 127.0.0.1"
                ),
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
        for (name, guest) in &self.guests {
            guest.validate(name, &self.clients, registry)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
