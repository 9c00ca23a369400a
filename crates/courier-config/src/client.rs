//! `[clients.NAME]`: named connections to brokers. The `backend` names a
//! kind of the registry, whose own typed struct reads `options` when the
//! file is read, so a bad option value is refused with its key and line.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use courier_broker::secret::redact_url;
use courier_broker::tls::{ClientTls, Endpoint, TlsOptions};

use courier_broker::factory::{AnyFactory, ClientOptions, Registry};
use courier_broker::{Features, factory::millis};
use serde::Deserialize;
use toml::Spanned;

use crate::error::ConfigError;
use crate::locate::{line_of, line_of_key};

/// A named connection to a broker, read and checked. Its `Debug` never
/// shows the credentials a url may hold.
#[derive(Clone)]
pub struct ClientConfig {
    /// The backend kind (`embedded`, `nats`, ...), one of the registry's.
    pub backend: &'static str,
    /// Whether the broker runs outside Courier (the backend needs a url).
    pub remote: bool,
    /// The broker's address, for remote backends: `url`, or read from the
    /// environment variable named by `url-env` or the file named by
    /// `url-file`, so that a password need not be written in the file.
    pub url: Option<String>,
    /// Deadline of connect and publish.
    pub timeout: Duration,
    /// `[clients.NAME.options]`, read by the backend's own options struct.
    pub options: ClientOptions,
    /// `tls = true` or `[clients.NAME.tls]`, with its files read; a TLS
    /// scheme in the url (`rediss://`, ...) turns TLS on without it.
    pub tls: Option<ClientTls>,
}

impl ClientConfig {
    /// Where the client connects: its url and TLS settings.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint {
            url: self.url.clone().unwrap_or_default(),
            tls: self.tls.clone(),
        }
    }
}

/// `tls` of a client as written: `true`/`false`, or a table of settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TlsSetting {
    /// `tls = true` (defaults) or `tls = false`.
    On(bool),
    /// `[clients.NAME.tls]`.
    Table(TlsOptions),
}

impl<'de> Deserialize<'de> for TlsSetting {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = TlsSetting;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`true`, `false` or a table of TLS settings")
            }
            fn visit_bool<E: serde::de::Error>(self, on: bool) -> Result<TlsSetting, E> {
                Ok(TlsSetting::On(on))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<TlsSetting, A::Error> {
                TlsOptions::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(TlsSetting::Table)
            }
        }
        d.deserialize_any(Visitor)
    }
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
            tls: None,
        }
    }

    /// What this client's backend promises with these options.
    pub fn features(&self) -> Features {
        self.options.features()
    }
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("backend", &self.backend)
            .field("url", &self.url.as_deref().map(redact_url))
            .field("timeout", &self.timeout)
            .field("options", &self.options)
            .field("tls", &self.tls)
            .finish()
    }
}

/// `[clients.NAME]` as written, before its backend reads the options.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawClient {
    backend: Spanned<String>,
    url: Option<String>,
    url_env: Option<String>,
    url_file: Option<PathBuf>,
    #[serde(
        default = "default_timeout",
        rename = "timeout-ms",
        deserialize_with = "millis"
    )]
    timeout: Duration,
    options: Option<Spanned<toml::Table>>,
    tls: Option<Spanned<TlsSetting>>,
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
        base: &Path,
    ) -> Result<ClientConfig, ConfigError> {
        let key = |k: &str| format!("clients.{name}.{k}");
        let line = Some(line_of(text, self.backend.span().start));
        let url = match (self.url, self.url_env, self.url_file) {
            (url, None, None) => url,
            (None, Some(var), None) => {
                Some(std::env::var(&var).map_err(|_| ConfigError::Invalid {
                    key: key("url-env"),
                    line,
                    message: format!("the environment variable `{var}` is not set (or not UTF-8)"),
                })?)
            }
            (None, None, Some(file)) => {
                let path = base.join(file);
                let text = std::fs::read_to_string(&path).map_err(|e| ConfigError::Invalid {
                    key: key("url-file"),
                    line,
                    message: format!("cannot read `{}`: {e}", path.display()),
                })?;
                Some(text.trim_end().to_string())
            }
            _ => {
                return Err(ConfigError::Invalid {
                    key: key("url"),
                    line,
                    message: "give one of `url`, `url-env` and `url-file`".into(),
                });
            }
        };
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
        if factory.remote() && url.is_none() {
            return Err(ConfigError::Invalid {
                key: key("url"),
                line,
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
        let tls = match self.tls {
            None => None,
            Some(setting) => {
                let line = Some(line_of(text, setting.span().start));
                let invalid = |message: String| ConfigError::Invalid {
                    key: key("tls"),
                    line,
                    message,
                };
                if !factory.remote() {
                    return Err(invalid(format!(
                        "the {} backend runs inside Courier: there is no connection to secure",
                        factory.kind()
                    )));
                }
                let options = match setting.into_inner() {
                    TlsSetting::On(false) => None,
                    TlsSetting::On(true) => Some(TlsOptions::default()),
                    TlsSetting::Table(mut options) => {
                        for path in [
                            &mut options.ca_file,
                            &mut options.cert_file,
                            &mut options.key_file,
                        ]
                        .into_iter()
                        .flatten()
                        {
                            *path = base.join(&*path);
                        }
                        Some(options)
                    }
                };
                match options {
                    None => None,
                    Some(options) => {
                        let tls = ClientTls::load(options)
                            .map_err(|e| invalid(e.message().to_string()))?;
                        factory
                            .check_tls(&tls)
                            .map_err(|e| invalid(e.message().to_string()))?;
                        Some(tls)
                    }
                }
            }
        };
        Ok(ClientConfig {
            backend: factory.kind(),
            remote: factory.remote(),
            url,
            timeout: self.timeout,
            options,
            tls,
        })
    }
}

/// The clients of a file, read.
pub(crate) fn resolve_all(
    raw: BTreeMap<String, RawClient>,
    registry: &Registry,
    text: &str,
    base: &Path,
) -> Result<BTreeMap<String, ClientConfig>, ConfigError> {
    raw.into_iter()
        .map(|(name, c)| Ok((name.clone(), c.resolve(&name, registry, text, base)?)))
        .collect()
}
