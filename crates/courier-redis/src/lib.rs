//! The Redis backend of Courier: pub/sub or Streams with consumer groups.
//!
//! - [`options`]: the client options of `[clients.NAME.options]` and the
//!   subscription extensions, typed.
//! - [`Redis`]: the backend's entry in the registry (`backend = "redis"`).
//! - [`pubsub`]: `PUBLISH` / `PSUBSCRIBE`: broadcast only, at most once, the
//!   payload alone (Redis pub/sub has no headers), redelivery in process.
//! - [`streams`]: `XADD` / `XREADGROUP` / `XACK`: durable, broadcast (a group
//!   per subscription) or competing (a group per Courier group), with the
//!   message's fields as stream fields, redelivery of stale entries with
//!   `XAUTOCLAIM`, and the attempt from the entry's delivery counter.
//! - [`fields`]: message ↔ stream entry fields.
#![deny(missing_docs)]

pub mod fields;
pub mod options;
pub mod pubsub;
pub mod streams;

use std::sync::Arc;

use async_trait::async_trait;
use courier_broker::reconnect::Link;
use courier_broker::tls::{ClientTls, Endpoint};
use courier_broker::{
    Backend, BrokerError, ErrorKind, Features, Message, Subscription, SubscriptionSpec,
};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

pub use options::{RedisExtensions, RedisOptions};

pub(crate) const KIND: &str = "redis";

pub(crate) fn connection_error(e: impl Into<courier_broker::error::BoxError>) -> BrokerError {
    BrokerError::connection(KIND, e)
}

/// The Redis backend in the registry: `backend = "redis"`, a url
/// (`redis://host:port/db`) and [`RedisOptions`].
pub struct Redis;

#[async_trait]
impl courier_broker::factory::BackendFactory for Redis {
    const KIND: &'static str = KIND;
    const REMOTE: bool = true;
    type Options = RedisOptions;
    type Extensions = RedisExtensions;

    fn check(options: &RedisOptions) -> Result<(), BrokerError> {
        options.check()
    }

    fn features(options: &RedisOptions) -> Features {
        features(options)
    }

    fn check_extensions(
        options: &RedisOptions,
        extensions: &RedisExtensions,
    ) -> Result<(), BrokerError> {
        if options.streams {
            Ok(())
        } else {
            pubsub::no_extensions(extensions)
        }
    }

    fn check_tls(tls: &ClientTls) -> Result<(), BrokerError> {
        if tls.server_name().is_some() {
            return Err(BrokerError::unsupported(
                KIND,
                "tls `server-name`: the Redis client verifies the url's host name; connect by a name the certificate holds",
            ));
        }
        Ok(())
    }

    async fn connect(
        &self,
        endpoint: &Endpoint,
        options: &RedisOptions,
    ) -> Result<Arc<dyn Backend>, BrokerError> {
        Ok(Arc::new(RedisBackend::connect_to(endpoint, options).await?))
    }
}

/// What a Redis client promises: Streams are durable, with competing
/// consumers and headers, but no wildcards; pub/sub has wildcards only.
fn features(options: &RedisOptions) -> Features {
    if options.streams {
        Features {
            wildcards: false,
            ..Features::ALL
        }
    } else {
        Features {
            durable: false,
            native_headers: false,
            competing: false,
            ..Features::ALL
        }
    }
}

/// A connection to a Redis server.
pub struct RedisBackend {
    client: redis::Client,
    conn: ConnectionManager,
    options: RedisOptions,
    /// The health of the publishing connection.
    link: Arc<Link>,
}

impl RedisBackend {
    /// Connects to `url` (`redis://host:port/db`, with `user:password@` for
    /// an ACL user or `:password@` for the default one; the credentials are
    /// never shown).
    pub async fn connect(url: &str, options: &RedisOptions) -> Result<Self, BrokerError> {
        Self::connect_to(&Endpoint::plain(url), options).await
    }

    /// Connects to `endpoint`: like [`RedisBackend::connect`], over TLS when
    /// the endpoint has TLS settings or a `rediss://` url.
    pub async fn connect_to(
        endpoint: &Endpoint,
        options: &RedisOptions,
    ) -> Result<Self, BrokerError> {
        let options = options.clone();
        let shown = courier_broker::secret::redact_url(&endpoint.url);
        let client = client(endpoint)?;
        let conn = manager(&client, &options).await?;
        Ok(Self {
            client,
            conn,
            options,
            link: Arc::new(Link::new(KIND, format!("{shown} (publisher)"))),
        })
    }
}

/// The client of `endpoint`: over TLS (`rediss://`) with the configured
/// certificate authorities and client certificate, when it speaks TLS.
fn client(endpoint: &Endpoint) -> Result<redis::Client, BrokerError> {
    let refused = |e: redis::RedisError| {
        let shown = courier_broker::secret::redact_url(&endpoint.url);
        BrokerError::invalid(format!("redis url `{shown}`")).with_source(e)
    };
    let Some(tls) = endpoint.tls("rediss")? else {
        return redis::Client::open(endpoint.url.as_str()).map_err(refused);
    };
    <Redis as courier_broker::factory::BackendFactory>::check_tls(&tls)?;
    let mut url = match endpoint.url.split_once("://") {
        Some((_, rest)) => format!("rediss://{rest}"),
        None => endpoint.url.clone(),
    };
    if tls.insecure() {
        url = format!("{}#insecure", url.split('#').next().unwrap_or_default());
    }
    if tls.ca_pem().is_none() && tls.identity_pem().is_none() {
        return redis::Client::open(url).map_err(refused);
    }
    let certificates = redis::TlsCertificates {
        client_tls: tls
            .identity_pem()
            .map(|(cert, key)| redis::ClientTlsConfig {
                client_cert: cert.to_vec(),
                client_key: key.to_vec(),
            }),
        root_cert: tls.ca_pem().map(<[u8]>::to_vec),
    };
    redis::Client::build_with_tls(url, certificates).map_err(refused)
}

/// A reconnecting connection, for commands that may block up to `BLOCK_MS`.
pub(crate) async fn manager(
    client: &redis::Client,
    options: &RedisOptions,
) -> Result<ConnectionManager, BrokerError> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(options.connect_timeout.get()))
        .set_response_timeout(Some(options.connect_timeout.get() + streams::BLOCK))
        .set_number_of_retries(2);
    match tokio::time::timeout(
        options.connect_timeout.get() * 3,
        client.get_connection_manager_with_config(config),
    )
    .await
    {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(connection_error(e)),
        Err(_) => Err(connection_error(format!(
            "no answer within {:?}",
            options.connect_timeout.get() * 3
        ))),
    }
}

#[async_trait]
impl Backend for RedisBackend {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn features(&self) -> Features {
        features(&self.options)
    }

    async fn publish(&self, messages: Vec<Message>) -> Result<(), BrokerError> {
        courier_broker::pattern::check_topics(&messages)?;
        let mut conn = self.conn.clone();
        let published = if self.options.streams {
            streams::publish(&mut conn, &self.options, messages).await
        } else {
            pubsub::publish(&mut conn, messages).await
        };
        // The connection manager reconnects on the next command; the link
        // only logs and counts the outage.
        match &published {
            Ok(()) => self.link.restored(),
            Err(e) if e.kind() == ErrorKind::Connection => {
                self.link.lost(e);
            }
            Err(_) => {}
        }
        published
    }

    async fn subscribe(
        &self,
        spec: SubscriptionSpec,
    ) -> Result<Box<dyn Subscription>, BrokerError> {
        if self.options.streams {
            streams::subscribe(&self.client, self.conn.clone(), &self.options, spec).await
        } else {
            pubsub::subscribe(&self.client, spec).await
        }
    }
}
