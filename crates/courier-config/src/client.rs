//! `[clients.NAME]`: named connections to brokers. The `backend` names a
//! kind of the registry, whose own typed struct reads `options` when the
//! file is read, so a bad option value is refused with its key and line.

use std::collections::BTreeMap;
use std::time::Duration;

use courier_broker::factory::{AnyFactory, ClientOptions, Registry};
use courier_broker::{Features, factory::millis};
use serde::Deserialize;
use toml::Spanned;

use crate::error::ConfigError;
use crate::locate::{line_of, line_of_key};

/// A named connection to a broker, read and checked.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The backend kind (`embedded`, `nats`, ...), one of the registry's.
    pub backend: &'static str,
    /// Whether the broker runs outside Courier (the backend needs a url).
    pub remote: bool,
    /// The broker's address, for remote backends.
    pub url: Option<String>,
    /// Deadline of connect and publish.
    pub timeout: Duration,
    /// `[clients.NAME.options]`, read by the backend's own options struct.
    pub options: ClientOptions,
}

impl ClientConfig {
    /// An embedded-broker client with default settings.
    pub fn embedded() -> Self {
        let options = courier_registry::builtin()
            .get("embedded")
            .expect("the embedded broker is in every build")
            .parse_options(toml::Table::new())
            .expect("the embedded broker has no options to get wrong");
        Self {
            backend: "embedded",
            remote: false,
            url: None,
            timeout: default_timeout(),
            options,
        }
    }

    /// What this client's backend promises with these options.
    pub fn features(&self) -> Features {
        self.options.features()
    }
}

/// `[clients.NAME]` as written, before its backend reads the options.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawClient {
    backend: Spanned<String>,
    url: Option<String>,
    #[serde(
        default = "default_timeout",
        rename = "timeout-ms",
        deserialize_with = "millis"
    )]
    timeout: Duration,
    options: Option<Spanned<toml::Table>>,
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

impl RawClient {
    /// Reads the options with the backend's factory; `text` is the file,
    /// for the lines of errors.
    pub(crate) fn resolve(
        self,
        name: &str,
        registry: &Registry,
        text: &str,
    ) -> Result<ClientConfig, ConfigError> {
        let key = |k: &str| format!("clients.{name}.{k}");
        let factory: &dyn AnyFactory = registry
            .get(self.backend.get_ref())
            .map(|f| f.as_ref())
            .ok_or_else(|| ConfigError::Invalid {
                key: key("backend"),
                line: Some(line_of(text, self.backend.span().start)),
                message: format!(
                    "unknown backend `{}` (this build has: {})",
                    self.backend.get_ref(),
                    registry.kinds().collect::<Vec<_>>().join(", ")
                ),
            })?;
        if factory.remote() && self.url.is_none() {
            return Err(ConfigError::Invalid {
                key: key("url"),
                line: Some(line_of(text, self.backend.span().start)),
                message: format!("the {} backend needs a url", factory.kind()),
            });
        }
        let (span, table) = match self.options {
            Some(t) => (t.span(), t.into_inner()),
            None => (self.backend.span(), toml::Table::new()),
        };
        let options = factory.parse_options(table).map_err(|e| {
            let (dotted, line) = if e.key.is_empty() {
                (key("options"), line_of(text, span.start))
            } else {
                (
                    format!("{}.{}", key("options"), e.key),
                    line_of_key(text, span.clone(), &e.key),
                )
            };
            ConfigError::Invalid {
                key: dotted,
                line: Some(line),
                message: e.message,
            }
        })?;
        Ok(ClientConfig {
            backend: factory.kind(),
            remote: factory.remote(),
            url: self.url,
            timeout: self.timeout,
            options,
        })
    }
}

/// The clients of a file, read.
pub(crate) fn resolve_all(
    raw: BTreeMap<String, RawClient>,
    registry: &Registry,
    text: &str,
) -> Result<BTreeMap<String, ClientConfig>, ConfigError> {
    raw.into_iter()
        .map(|(name, c)| Ok((name.clone(), c.resolve(&name, registry, text)?)))
        .collect()
}
