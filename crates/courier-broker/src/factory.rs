//! The backend registry: how each backend crate declares itself once, and
//! how the host finds a backend by the name written in its configuration.
//!
//! A backend crate implements [`BackendFactory`] for one small type: its kind
//! name (`backend = "nats"`), whether its clients need a url, a typed `serde`
//! struct for `[clients.NAME.options]` (with `deny_unknown_fields`), a typed
//! struct for the subscription extensions it understands, the [`Features`] a
//! client with given options has, and `connect`. A [`Registry`] holds the
//! factories of a build; the host looks backends up in it by name and never
//! matches on backend kinds (in the spirit of Spin's runtime-config factors).
//!
//! ```
//! use std::sync::Arc;
//! use courier_broker::factory::{BackendFactory, Registry};
//! use courier_broker::tls::Endpoint;
//! use courier_broker::{Backend, BrokerError, Features};
//!
//! /// A backend that can never connect (a real one opens its connection here).
//! struct Nowhere;
//!
//! #[derive(Debug, Default, serde::Deserialize)]
//! #[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
//! struct NowhereOptions {
//!     retries: u32,
//! }
//!
//! #[async_trait::async_trait]
//! impl BackendFactory for Nowhere {
//!     const KIND: &'static str = "nowhere";
//!     const REMOTE: bool = true;
//!     type Options = NowhereOptions;
//!     type Extensions = courier_broker::factory::NoExtensions;
//!     fn features(_: &NowhereOptions) -> Features {
//!         Features::ALL
//!     }
//!     async fn connect(&self, at: &Endpoint, _: &NowhereOptions) -> Result<Arc<dyn Backend>, BrokerError> {
//!         Err(BrokerError::connection("nowhere", format!("{}: no such place", at.url)))
//!     }
//! }
//!
//! let mut registry = Registry::default();
//! registry.register(Nowhere);
//! let nowhere = registry.get("nowhere").unwrap();
//! let table: toml::Table = toml::from_str("retries = 3").unwrap();
//! assert!(nowhere.parse_options(table).is_ok());
//! let table: toml::Table = toml::from_str("retires = 3").unwrap();
//! let err = nowhere.parse_options(table).unwrap_err();
//! assert_eq!(err.key, "retires");
//! ```

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use serde::de::DeserializeOwned;

use crate::tls::{ClientTls, Endpoint};
use crate::{Backend, BrokerError, Features};

/// One kind of broker, declared once by its backend crate.
#[async_trait]
pub trait BackendFactory: Send + Sync + 'static {
    /// The name written in configuration: `backend = "KIND"`.
    const KIND: &'static str;
    /// Whether the broker runs outside Courier, so that a client needs a `url`.
    const REMOTE: bool;
    /// `[clients.NAME.options]`: deserialized from the configuration when it
    /// is read (use `deny_unknown_fields` and `default`, so that an empty table
    /// gives the defaults and a misspelt key is refused).
    type Options: DeserializeOwned + fmt::Debug + Send + Sync + 'static;
    /// The subscription extensions (`update-guest-configuration`'s
    /// `extensions`, a guest's `subscribe-options`) the backend understands,
    /// read from text with [`crate::extensions::parse`].
    type Extensions: DeserializeOwned + fmt::Debug + Send + Sync + 'static;

    /// Checks the options as a whole, where keys depend on each other
    /// (e.g. `stream` needs `jetstream = true`).
    fn check(options: &Self::Options) -> Result<(), BrokerError> {
        let _ = options;
        Ok(())
    }

    /// What a client with these options promises.
    fn features(options: &Self::Options) -> Features;

    /// Checks subscription extensions against the client's options (e.g.
    /// core NATS takes none: they need JetStream).
    fn check_extensions(
        options: &Self::Options,
        extensions: &Self::Extensions,
    ) -> Result<(), BrokerError> {
        let _ = (options, extensions);
        Ok(())
    }

    /// Checks a client's TLS settings against what the backend's client
    /// library can do (e.g. a library without a `server-name` override).
    fn check_tls(tls: &ClientTls) -> Result<(), BrokerError> {
        let _ = tls;
        Ok(())
    }

    /// Connects a client. Called once per configured client; the connection
    /// is shared by every guest that uses it. TLS is on when the endpoint
    /// has TLS settings or its url has the backend's TLS scheme
    /// ([`Endpoint::tls`]).
    async fn connect(
        &self,
        endpoint: &Endpoint,
        options: &Self::Options,
    ) -> Result<Arc<dyn Backend>, BrokerError>;
}

/// Extensions of a backend that takes none.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoExtensions {}

/// A backend's options that failed to deserialize, with the key they concern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionsError {
    /// The key under `[clients.NAME.options]` (`jetstream`, `subjects[1]`);
    /// empty when the error concerns the table as a whole.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for OptionsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "`{}`: {}", self.key, self.message)
        }
    }
}

impl std::error::Error for OptionsError {}

/// A client's options, read by its backend's factory and kept typed behind
/// this handle; only that factory looks inside.
#[derive(Clone)]
pub struct ClientOptions {
    kind: &'static str,
    value: Arc<dyn AnyOptions>,
    features: Features,
}

trait AnyOptions: Any + fmt::Debug + Send + Sync {
    fn as_any(&self) -> &dyn Any;
}

impl<T: Any + fmt::Debug + Send + Sync> AnyOptions for T {
    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl ClientOptions {
    /// The backend kind these options are for.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// What a client with these options promises (computed once, when read).
    pub fn features(&self) -> Features {
        self.features
    }

    /// The typed options, when they are `T`'s.
    pub fn get<T: Any>(&self) -> Option<&T> {
        // Deref first: the `Arc` itself is `Any` too.
        (*self.value).as_any().downcast_ref()
    }
}

impl fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.value, f)
    }
}

/// A backend factory seen without its types: what the registry holds.
#[async_trait]
pub trait AnyFactory: Send + Sync {
    /// The kind name.
    fn kind(&self) -> &'static str;
    /// Whether clients need a url.
    fn remote(&self) -> bool;
    /// Reads `[clients.NAME.options]`.
    fn parse_options(&self, table: toml::Table) -> Result<ClientOptions, OptionsError>;
    /// Reads and checks subscription extensions for a client with `options`.
    fn check_extensions(
        &self,
        options: &ClientOptions,
        extensions: &BTreeMap<String, String>,
    ) -> Result<(), BrokerError>;
    /// Checks TLS settings against what the backend can do.
    fn check_tls(&self, tls: &ClientTls) -> Result<(), BrokerError>;
    /// Connects a client with options this factory read.
    async fn connect(
        &self,
        endpoint: &Endpoint,
        options: &ClientOptions,
    ) -> Result<Arc<dyn Backend>, BrokerError>;
}

/// `options` as `F`'s own type.
fn typed<F: BackendFactory>(options: &ClientOptions) -> Result<&F::Options, BrokerError> {
    options.get::<F::Options>().ok_or_else(|| {
        BrokerError::invalid(format!(
            "options of a {} client given to the {} backend",
            options.kind,
            F::KIND
        ))
    })
}

#[async_trait]
impl<F: BackendFactory> AnyFactory for F {
    fn kind(&self) -> &'static str {
        F::KIND
    }

    fn remote(&self) -> bool {
        F::REMOTE
    }

    fn parse_options(&self, table: toml::Table) -> Result<ClientOptions, OptionsError> {
        let options: F::Options = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| OptionsError {
                key: e.path().to_string().trim_start_matches('.').to_string(),
                // toml adds the key on a line of its own: it is in `key`.
                message: e
                    .into_inner()
                    .to_string()
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_string(),
            })?;
        F::check(&options).map_err(|e| OptionsError {
            key: String::new(),
            message: e.message().to_string(),
        })?;
        Ok(ClientOptions {
            kind: F::KIND,
            features: F::features(&options),
            value: Arc::new(options),
        })
    }

    fn check_extensions(
        &self,
        options: &ClientOptions,
        extensions: &BTreeMap<String, String>,
    ) -> Result<(), BrokerError> {
        let extensions: F::Extensions = crate::extensions::parse(F::KIND, extensions)?;
        F::check_extensions(typed::<F>(options)?, &extensions)
    }

    fn check_tls(&self, tls: &ClientTls) -> Result<(), BrokerError> {
        F::check_tls(tls)
    }

    async fn connect(
        &self,
        endpoint: &Endpoint,
        options: &ClientOptions,
    ) -> Result<Arc<dyn Backend>, BrokerError> {
        BackendFactory::connect(self, endpoint, typed::<F>(options)?).await
    }
}

/// The backends of a build, by kind name.
#[derive(Clone, Default)]
pub struct Registry {
    factories: BTreeMap<&'static str, Arc<dyn AnyFactory>>,
}

impl Registry {
    /// Adds a backend; one registered before under the same kind is replaced
    /// (a host replaces the embedded broker's factory with one that holds
    /// its own broker).
    pub fn register<F: BackendFactory>(&mut self, factory: F) -> &mut Self {
        self.factories.insert(F::KIND, Arc::new(factory));
        self
    }

    /// The backend of that kind, if this build has it.
    pub fn get(&self, kind: &str) -> Option<&Arc<dyn AnyFactory>> {
        self.factories.get(kind)
    }

    /// The kinds this registry has, in order.
    pub fn kinds(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.factories.keys().copied()
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.kinds()).finish()
    }
}

/// Reads a duration given in milliseconds, above zero, for options such as
/// `connect-timeout-ms` (`#[serde(deserialize_with = "...")]`).
pub fn millis<'de, D: serde::Deserializer<'de>>(d: D) -> Result<std::time::Duration, D::Error> {
    let ms = <u64 as serde::Deserialize>::deserialize(d)?;
    if ms == 0 {
        return Err(serde::de::Error::custom(
            "expected milliseconds above 0, got 0",
        ));
    }
    Ok(std::time::Duration::from_millis(ms))
}

/// `connect-timeout-ms` of a remote backend's options: the deadline of
/// connecting and of each broker acknowledgement, in milliseconds above
/// zero; 5 seconds unless set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectTimeout(std::time::Duration);

impl ConnectTimeout {
    /// The deadline.
    pub fn get(self) -> std::time::Duration {
        self.0
    }
}

impl Default for ConnectTimeout {
    fn default() -> Self {
        Self(std::time::Duration::from_secs(5))
    }
}

impl<'de> serde::Deserialize<'de> for ConnectTimeout {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        millis(d).map(Self)
    }
}
