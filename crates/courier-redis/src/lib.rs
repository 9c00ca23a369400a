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

    async fn connect(
        &self,
        url: &str,
        options: &RedisOptions,
    ) -> Result<Arc<dyn Backend>, BrokerError> {
        Ok(Arc::new(RedisBackend::connect(url, options).await?))
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
        let options = options.clone();
        let shown = courier_broker::secret::redact_url(url);
        let client = redis::Client::open(url)
            .map_err(|e| BrokerError::invalid(format!("redis url `{shown}`")).with_source(e))?;
        let conn = manager(&client, &options).await?;
        Ok(Self {
            client,
            conn,
            options,
            link: Arc::new(Link::new(KIND, format!("{shown} (publisher)"))),
        })
    }
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
