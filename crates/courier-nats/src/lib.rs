//! The NATS backend of Courier: core NATS and JetStream.
//!
//! - [`options`]: the client options of `[clients.NAME.options]` and the
//!   subscription extensions, typed.
//! - [`Nats`]: the backend's entry in the registry (`backend = "nats"`).
//! - [`headers`]: message fields ↔ NATS headers and reply subjects.
//! - [`core`]: core NATS subscriptions (broadcast and queue groups), with
//!   in-process redelivery since core NATS has no acks.
//! - [`jetstream`]: durable subscriptions on JetStream pull consumers, with
//!   explicit ack, nak with delay and term; `progress` keeps the server from
//!   redelivering what Courier still holds.
//!
//! Channels are NATS subjects already, so patterns need no translation.
#![deny(missing_docs)]

pub mod core;
pub mod headers;
pub mod jetstream;
pub mod options;
mod progress;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use courier_broker::reconnect::{Link, backoff};
use courier_broker::secret::{Credentials, redact_url};
use courier_broker::tls::Endpoint;
use courier_broker::{Backend, BrokerError, Features, Message, Subscription, SubscriptionSpec};

pub use options::{NatsExtensions, NatsOptions};

/// The NATS backend in the registry: `backend = "nats"`, a url
/// (`nats://host:port`) and [`NatsOptions`].
pub struct Nats;

#[async_trait]
impl courier_broker::factory::BackendFactory for Nats {
    const KIND: &'static str = KIND;
    const REMOTE: bool = true;
    type Options = NatsOptions;
    type Extensions = NatsExtensions;

    fn check(options: &NatsOptions) -> Result<(), BrokerError> {
        options.check()
    }

    fn features(options: &NatsOptions) -> Features {
        features(options.jetstream)
    }

    fn check_extensions(
        options: &NatsOptions,
        extensions: &NatsExtensions,
    ) -> Result<(), BrokerError> {
        if options.jetstream || *extensions == NatsExtensions::default() {
            Ok(())
        } else {
            Err(core_takes_no_extensions())
        }
    }

    async fn connect(
        &self,
        endpoint: &Endpoint,
        options: &NatsOptions,
    ) -> Result<Arc<dyn Backend>, BrokerError> {
        Ok(Arc::new(NatsBackend::connect_to(endpoint, options).await?))
    }
}

/// What a NATS client promises: everything; durable on JetStream.
fn features(jetstream: bool) -> Features {
    Features {
        durable: jetstream,
        ..Features::ALL
    }
}

fn core_takes_no_extensions() -> BrokerError {
    BrokerError::invalid(
        "subscription extensions (`durable`, `deliver-policy`, `max-ack-pending`) need a JetStream client (options.jetstream = true)",
    )
}

pub(crate) const KIND: &str = "nats";

pub(crate) fn connection_error(e: impl Into<courier_broker::error::BoxError>) -> BrokerError {
    BrokerError::connection(KIND, e)
}

/// A connection to a NATS server.
pub struct NatsBackend {
    client: async_nats::Client,
    js: Option<jetstream::JetStream>,
    timeout: Duration,
}

impl NatsBackend {
    /// Connects to `url`; fails with a
    /// [`Connection`](courier_broker::ErrorKind::Connection) error when the
    /// server cannot be reached within the connect timeout. Once connected,
    /// the client reconnects by itself for as long as it lives, with capped
    /// exponential backoff ([`courier_broker::reconnect`]); losses and
    /// recoveries are logged and counted. While it is disconnected,
    /// `publish` fails at once with a
    /// [`Connection`](courier_broker::ErrorKind::Connection) error.
    ///
    /// Credentials in the url are used, never shown: `nats://user:password@…`
    /// for a user, `nats://token@…` for a token. The url may list the
    /// servers of a cluster separated by commas
    /// (`nats://h1:4222,nats://h2:4222`): the client connects to one of them
    /// and fails over to the others.
    pub async fn connect(url: &str, options: &NatsOptions) -> Result<Self, BrokerError> {
        Self::connect_to(&Endpoint::plain(url), options).await
    }

    /// Connects to `endpoint`: like [`NatsBackend::connect`], over TLS when
    /// the endpoint has TLS settings or a `tls://` url, and with the NKey
    /// seed or `.creds` file the options name.
    pub async fn connect_to(
        endpoint: &Endpoint,
        options: &NatsOptions,
    ) -> Result<Self, BrokerError> {
        let Servers {
            addresses,
            credentials,
            shown,
        } = servers(endpoint.url.as_str())?;
        let link = Arc::new(Link::new(KIND, shown.clone()));
        let auth = match (credentials, options.auth()?) {
            (Some(_), Some(_)) => {
                return Err(BrokerError::invalid(format!(
                    "nats: `{shown}` holds credentials and the options name an NKey or a .creds file: give one"
                )));
            }
            (None, Some(options::Auth::Nkey(seed))) => {
                async_nats::ConnectOptions::with_nkey(seed.expose().to_string())
            }
            (None, Some(options::Auth::CredsFile(path))) => {
                async_nats::ConnectOptions::with_credentials_file(&path)
                    .await
                    .map_err(|e| {
                        BrokerError::invalid(format!(
                            "nats option `creds-file`: `{}`: {e}",
                            path.display()
                        ))
                    })?
            }
            (credentials, None) => match credentials {
                Some(Credentials {
                    user,
                    password: Some(password),
                }) => async_nats::ConnectOptions::with_user_and_password(
                    user,
                    password.expose().to_string(),
                ),
                Some(Credentials {
                    user: token,
                    password: None,
                }) => async_nats::ConnectOptions::with_token(token),
                None => async_nats::ConnectOptions::new(),
            },
        };
        let auth = match endpoint.tls("tls")? {
            Some(tls) => auth
                .require_tls(true)
                .tls_client_config((*tls.config()).clone()),
            None => auth,
        };
        let connect = auth
            .connection_timeout(options.connect_timeout.get())
            .max_reconnects(None)
            .reconnect_delay_callback(|attempts| {
                // async-nats counts from 1 after the first failed attempt;
                // the first reconnection is immediate.
                if attempts == 0 {
                    Duration::ZERO
                } else {
                    backoff(u32::try_from(attempts).unwrap_or(u32::MAX))
                }
            })
            .event_callback(move |event| {
                let link = link.clone();
                async move {
                    match event {
                        async_nats::Event::Disconnected => {
                            link.lost(&"disconnected");
                        }
                        async_nats::Event::Connected => link.restored(),
                        async_nats::Event::ClientError(e) if link.is_down() => {
                            link.retry_failed(&e);
                        }
                        other => tracing::debug!("nats: {other}"),
                    }
                }
            })
            .connect(addresses);
        let client = match tokio::time::timeout(options.connect_timeout.get(), connect).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => return Err(connection_error(e).context(&shown)),
            Err(_) => {
                return Err(connection_error(format!(
                    "{shown}: no answer within {:?}",
                    options.connect_timeout.get()
                )));
            }
        };
        let js = match options.jetstream() {
            Some(js) => Some(
                jetstream::JetStream::new(client.clone(), js, options.connect_timeout.get())
                    .await?,
            ),
            None => None,
        };
        Ok(Self {
            client,
            js,
            timeout: options.connect_timeout.get(),
        })
    }

    /// The underlying client.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }
}

/// The servers of a client's url, with its credentials.
struct Servers {
    addresses: Vec<async_nats::ServerAddr>,
    credentials: Option<Credentials>,
    /// The url as logs and errors show it: credentials redacted.
    shown: String,
}

/// Splits `url` into its servers: one url, or several separated by commas
/// (the servers of a cluster). Credentials may be written in any of them;
/// where several are given they must be the same. Errors never show them.
fn servers(url: &str) -> Result<Servers, BrokerError> {
    let parts: Vec<&str> = url.split(',').map(str::trim).collect();
    let shown = parts
        .iter()
        .map(|p| redact_url(p))
        .collect::<Vec<_>>()
        .join(",");
    let mut addresses = Vec::with_capacity(parts.len());
    let mut credentials: Option<Credentials> = None;
    for part in parts {
        if part.is_empty() {
            return Err(BrokerError::invalid(format!(
                "nats url `{shown}`: an empty server in the comma-separated list"
            )));
        }
        let (address, given) = courier_broker::secret::credentials(part)?;
        match (&credentials, given) {
            (Some(known), Some(given)) if *known != given => {
                return Err(BrokerError::invalid(format!(
                    "nats url `{shown}`: its servers give different credentials"
                )));
            }
            (None, Some(given)) => credentials = Some(given),
            _ => {}
        }
        let address = address.parse::<async_nats::ServerAddr>().map_err(|e| {
            BrokerError::invalid(format!(
                "nats url `{shown}`: `{}` is not a server address: {e}",
                redact_url(part)
            ))
        })?;
        addresses.push(address);
    }
    Ok(Servers {
        addresses,
        credentials,
        shown,
    })
}

#[async_trait]
impl Backend for NatsBackend {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn features(&self) -> Features {
        features(self.js.is_some())
    }

    async fn publish(&self, messages: Vec<Message>) -> Result<(), BrokerError> {
        courier_broker::pattern::check_topics(&messages)?;
        // While disconnected, async-nats would buffer the messages and answer
        // only when the server is back: refuse them now instead.
        if self.client.connection_state() != async_nats::connection::State::Connected {
            return Err(connection_error(
                "not connected to the server (reconnecting)",
            ));
        }
        match &self.js {
            Some(js) => js.publish(messages).await,
            None => core::publish(&self.client, messages, self.timeout).await,
        }
    }

    async fn subscribe(
        &self,
        spec: SubscriptionSpec,
    ) -> Result<Box<dyn Subscription>, BrokerError> {
        match &self.js {
            Some(js) => js.subscribe(spec).await,
            None => {
                let extensions: NatsExtensions =
                    courier_broker::extensions::parse(KIND, &spec.options)?;
                if extensions != NatsExtensions::default() {
                    return Err(core_takes_no_extensions());
                }
                core::subscribe(&self.client, spec, self.timeout).await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(url: &str) -> Vec<String> {
        let s = servers(url).unwrap();
        s.addresses
            .iter()
            .map(|a| format!("{}:{}", a.host(), a.port()))
            .collect()
    }

    #[test]
    fn a_url_lists_the_servers_of_a_cluster() {
        assert_eq!(hosts("nats://127.0.0.1:4222"), vec!["127.0.0.1:4222"]);
        assert_eq!(
            hosts("nats://127.0.0.1:4222, nats://127.0.0.1:4223,nats://h3:4224"),
            vec!["127.0.0.1:4222", "127.0.0.1:4223", "h3:4224"]
        );
        let s = servers("nats://u:secret@h1:1,nats://h2:2,nats://u:secret@h3:3").unwrap();
        assert_eq!(s.addresses.len(), 3);
        let c = s.credentials.expect("credentials");
        assert_eq!(c.user, "u");
        assert_eq!(
            c.password.map(|p| p.expose().to_string()).as_deref(),
            Some("secret")
        );
        assert!(!s.shown.contains("secret"), "{}", s.shown);
        assert!(
            s.shown.contains("h1:1") && s.shown.contains("h3:3"),
            "{}",
            s.shown
        );
    }

    #[test]
    fn a_bad_server_list_is_refused_without_its_credentials() {
        for url in [
            "nats://h1:1,",
            "nats://h1:1,,nats://h2:2",
            "nats://u:secret@h1:1,nats://u:other@h2:2",
            "nats://u:secret@h1:1,nats://h2:notaport",
        ] {
            let e = match servers(url) {
                Ok(_) => panic!("`{url}` was accepted"),
                Err(e) => e.to_string(),
            };
            assert!(e.contains("nats url"), "{url}: {e}");
            assert!(!e.contains("secret") && !e.contains("other"), "{url}: {e}");
        }
    }
}
