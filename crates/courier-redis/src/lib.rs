//! The Redis backend of Courier: pub/sub or Streams with consumer groups.
//!
//! - [`options`]: the client options of `[clients.NAME.options]`.
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

pub use options::{CLIENT_OPTION_KEYS, RedisOptions};

pub(crate) const KIND: &str = "redis";

pub(crate) fn connection_error(e: impl Into<courier_broker::error::BoxError>) -> BrokerError {
    BrokerError::connection(KIND, e)
}

/// Subscription option keys (`extensions`) the Redis backend understands.
pub const SUBSCRIPTION_OPTION_KEYS: &[&str] = &["durable", "start"];

/// A connection to a Redis server.
pub struct RedisBackend {
    client: redis::Client,
    conn: ConnectionManager,
    options: RedisOptions,
    /// The health of the publishing connection.
    link: Arc<Link>,
}

impl RedisBackend {
    /// Connects to `url` (`redis://host:port/db`).
    pub async fn connect(
        url: &str,
        options: &std::collections::BTreeMap<String, String>,
    ) -> Result<Self, BrokerError> {
        let options = RedisOptions::parse(options)?;
        let client = redis::Client::open(url)
            .map_err(|e| BrokerError::invalid(format!("redis url `{url}`")).with_source(e))?;
        let conn = manager(&client, &options).await?;
        Ok(Self {
            client,
            conn,
            options,
            link: Arc::new(Link::new(KIND, format!("{url} (publisher)"))),
        })
    }
}

/// A reconnecting connection, for commands that may block up to `BLOCK_MS`.
pub(crate) async fn manager(
    client: &redis::Client,
    options: &RedisOptions,
) -> Result<ConnectionManager, BrokerError> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(options.connect_timeout))
        .set_response_timeout(Some(options.connect_timeout + streams::BLOCK))
        .set_number_of_retries(2);
    match tokio::time::timeout(
        options.connect_timeout * 3,
        client.get_connection_manager_with_config(config),
    )
    .await
    {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(connection_error(e)),
        Err(_) => Err(connection_error(format!(
            "no answer within {:?}",
            options.connect_timeout * 3
        ))),
    }
}

#[async_trait]
impl Backend for RedisBackend {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn features(&self) -> Features {
        if self.options.streams {
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

    fn option_keys(&self) -> &'static [&'static str] {
        SUBSCRIPTION_OPTION_KEYS
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
