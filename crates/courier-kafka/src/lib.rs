//! The Apache Kafka backend of Courier.
//!
//! - [`options`]: the client options of `[clients.NAME.options]` and the
//!   subscription extensions, typed.
//! - [`Kafka`]: the backend's entry in the registry (`backend = "kafka"`).
//! - [`topics`]: channels ↔ topic names, patterns → regex subscriptions.
//! - [`headers`]: message fields ↔ record headers and key.
//! - [`watermark`]: which offset a consumer may commit, per partition.
//! - [`consume`]: subscriptions as consumer groups.
//!
//! The client is librdkafka (the `rdkafka` crate, bundled). A channel is a
//! topic; `send` returns once the broker acknowledged every record with the
//! configured `acks` (all replicas by default). Point-to-point subscriptions
//! are members of the consumer group named after their group;
//! a pub-sub subscription is a group of its own. Offsets are committed only
//! up to the lowest record not yet settled, and rejected records are
//! redelivered in process ([`courier_broker::retry`]).
#![deny(missing_docs)]

pub mod consume;
pub mod headers;
pub mod options;
pub mod topics;
pub mod watermark;

use std::collections::HashSet;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use courier_broker::secret::redact_url;
use courier_broker::tls::{ClientTls, Endpoint};
use courier_broker::{Backend, BrokerError, Features, Message, Subscription, SubscriptionSpec};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::Consumer as _;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

pub use options::{KafkaExtensions, KafkaOptions};

pub(crate) const KIND: &str = "kafka";

pub(crate) fn connection_error(e: impl Into<courier_broker::error::BoxError>) -> BrokerError {
    BrokerError::connection(KIND, e)
}

/// The Kafka backend in the registry: `backend = "kafka"`, a url with the
/// bootstrap servers (`kafka://host:9092,host2:9092` or `host:9092,...`)
/// and [`KafkaOptions`].
pub struct Kafka;

#[async_trait]
impl courier_broker::factory::BackendFactory for Kafka {
    const KIND: &'static str = KIND;
    const REMOTE: bool = true;
    type Options = KafkaOptions;
    type Extensions = KafkaExtensions;

    fn check(options: &KafkaOptions) -> Result<(), BrokerError> {
        options.check()
    }

    fn features(options: &KafkaOptions) -> Features {
        features(options)
    }

    fn check_tls(_: &ClientTls) -> Result<(), BrokerError> {
        Err(tls_unsupported())
    }

    async fn connect(
        &self,
        endpoint: &Endpoint,
        options: &KafkaOptions,
    ) -> Result<Arc<dyn Backend>, BrokerError> {
        if endpoint.tls.is_some() {
            return Err(tls_unsupported());
        }
        Ok(Arc::new(
            KafkaBackend::connect(&endpoint.url, options).await?,
        ))
    }
}

fn tls_unsupported() -> BrokerError {
    BrokerError::unsupported(
        KIND,
        "TLS (librdkafka's TLS is OpenSSL only, and this build keeps one TLS stack, rustls)",
    )
}

/// What a Kafka client promises: everything; in order only where a topic
/// has one partition (Kafka orders records per partition), which is what
/// Courier creates unless `partitions` says more.
fn features(options: &KafkaOptions) -> Features {
    Features {
        ordered: options.partitions.get() == 1,
        ..Features::ALL
    }
}

/// The bootstrap servers of `url`: `host:port` entries separated by commas,
/// each with or without the `kafka://` scheme.
pub fn bootstrap(url: &str) -> Result<String, BrokerError> {
    let shown = redact_url(url);
    let mut servers = Vec::new();
    for part in url.split(',').map(str::trim) {
        let address = match part.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("kafka") => rest,
            Some((scheme, _)) if scheme.eq_ignore_ascii_case("kafka+ssl") => {
                return Err(tls_unsupported());
            }
            Some((scheme, _)) => {
                return Err(BrokerError::invalid(format!(
                    "kafka url `{shown}`: scheme `{scheme}://` is not `kafka://`"
                )));
            }
            None => part,
        };
        let address = address.trim_end_matches('/');
        if address.contains(['@', '/', '?']) {
            return Err(BrokerError::invalid(format!(
                "kafka url `{shown}`: expected `host:port` entries (no credentials, path or query)"
            )));
        }
        let Some((host, port)) = address.rsplit_once(':') else {
            return Err(BrokerError::invalid(format!(
                "kafka url `{shown}`: `{address}` has no port (expected `host:port`)"
            )));
        };
        if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(BrokerError::invalid(format!(
                "kafka url `{shown}`: `{address}` is not `host:port`"
            )));
        }
        servers.push(address.to_string());
    }
    Ok(servers.join(","))
}

/// A Kafka client: a producer shared by every `send`, consumers made per
/// subscription.
pub struct KafkaBackend {
    bootstrap: String,
    options: KafkaOptions,
    producer: FutureProducer,
    admin: AdminClient<DefaultClientContext>,
    /// Topics known to exist (created or found by Courier).
    known: Mutex<HashSet<String>>,
    /// Consumers of wildcard subscriptions, told to refresh their metadata
    /// when this client creates a topic, so they find it at once.
    wildcards: Mutex<Vec<Weak<consume::Consumer>>>,
    /// Closed subscriptions whose consumers still wait for their records
    /// to be settled.
    draining: consume::Draining,
}

impl KafkaBackend {
    /// Connects to the bootstrap servers of `url` and checks that a broker
    /// answers within the connect timeout.
    pub async fn connect(url: &str, options: &KafkaOptions) -> Result<Self, BrokerError> {
        let bootstrap = bootstrap(url)?;
        let timeout = options.connect_timeout.get();
        let producer: FutureProducer = base_config(&bootstrap, options)
            .set("acks", options.acks.as_config())
            .set("compression.codec", options.compression.as_config())
            .set("linger.ms", options.linger_ms.to_string())
            .set("batch.num.messages", options.batch_num_messages.to_string())
            .set("message.timeout.ms", timeout.as_millis().to_string())
            .create()
            .map_err(connection_error)?;
        let admin: AdminClient<DefaultClientContext> = base_config(&bootstrap, options)
            .create()
            .map_err(connection_error)?;
        let probe = producer.clone();
        tokio::task::spawn_blocking(move || probe.client().fetch_metadata(None, timeout))
            .await
            .map_err(connection_error)?
            .map_err(|e| connection_error(e).context(format!("bootstrap servers `{bootstrap}`")))?;
        Ok(Self {
            bootstrap,
            options: options.clone(),
            producer,
            admin,
            known: Mutex::new(HashSet::new()),
            wildcards: Mutex::new(Vec::new()),
            draining: consume::Draining::default(),
        })
    }

    pub(crate) fn options(&self) -> &KafkaOptions {
        &self.options
    }

    pub(crate) fn draining(&self) -> &consume::Draining {
        &self.draining
    }

    pub(crate) fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    /// Creates `topic` unless it is known to exist (or `create-topics` is off).
    pub(crate) async fn ensure_topic(&self, topic: &str) -> Result<(), BrokerError> {
        if !self.options.create_topics || self.lock_known().contains(topic) {
            return Ok(());
        }
        let replication =
            TopicReplication::Fixed(self.options.replication_factor.map_or(-1, |r| r.get()));
        let new = NewTopic::new(topic, self.options.partitions.get(), replication);
        let timeout = self.options.connect_timeout.get();
        let opts = AdminOptions::new().operation_timeout(Some(timeout));
        let results = tokio::time::timeout(timeout, self.admin.create_topics([&new], &opts))
            .await
            .map_err(|_| BrokerError::timeout(format!("creating kafka topic `{topic}`"), timeout))?
            .map_err(|e| connection_error(e).context(format!("creating topic `{topic}`")))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => {
                    return Err(BrokerError::other(format!(
                        "kafka: the broker refused to create topic `{topic}`: {code}"
                    )));
                }
            }
        }
        self.lock_known().insert(topic.to_string());
        self.refresh_wildcards();
        Ok(())
    }

    /// Registers the consumer of a wildcard subscription.
    pub(crate) fn add_wildcard(&self, consumer: &Arc<consume::Consumer>) {
        let mut w = self.wildcards.lock().unwrap_or_else(|e| e.into_inner());
        w.retain(|c| c.strong_count() > 0);
        w.push(Arc::downgrade(consumer));
    }

    /// Makes every wildcard subscription's consumer fetch the cluster's
    /// topics now (librdkafka matches its regex again on new metadata)
    /// instead of at its next periodic refresh.
    fn refresh_wildcards(&self) {
        let consumers: Vec<Arc<consume::Consumer>> = self
            .wildcards
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        let timeout = self.options.connect_timeout.get();
        for consumer in consumers {
            tokio::task::spawn_blocking(move || {
                if let Err(e) = consumer.fetch_metadata(None, timeout) {
                    tracing::debug!(error = %e, "kafka: refreshing a wildcard subscription's metadata");
                }
            });
        }
    }

    fn lock_known(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The settings every client of `options` shares.
pub(crate) fn base_config(bootstrap: &str, options: &KafkaOptions) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("client.id", &options.client_id)
        .set(
            "socket.connection.setup.timeout.ms",
            options
                .connect_timeout
                .get()
                .as_millis()
                .max(1000)
                .to_string(),
        );
    config
}

/// A failed delivery as a Courier error: a full local queue is `busy`, a
/// timeout is a timeout, anything else a connection failure.
fn delivery_error(topic: &str, e: KafkaError, timeout: Duration) -> BrokerError {
    match e.rdkafka_error_code() {
        Some(RDKafkaErrorCode::QueueFull) => {
            BrokerError::busy(KIND, "the producer's queue is full")
        }
        Some(RDKafkaErrorCode::MessageTimedOut) => BrokerError::timeout(
            format!("kafka acknowledgement of a record to `{topic}`"),
            timeout,
        ),
        Some(RDKafkaErrorCode::MessageSizeTooLarge) => BrokerError::invalid(format!(
            "the record to `{topic}` is larger than the broker accepts"
        ))
        .with_source(e),
        _ => connection_error(e).context(format!("producing to `{topic}`")),
    }
}

#[async_trait]
impl Backend for KafkaBackend {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn features(&self) -> Features {
        features(&self.options)
    }

    async fn publish(&self, messages: Vec<Message>) -> Result<(), BrokerError> {
        courier_broker::pattern::check_topics(&messages)?;
        let mut records = Vec::with_capacity(messages.len());
        for m in &messages {
            topics::topic(&m.topic)?;
            records.push(headers::to_record(m)?);
        }
        let mut topics: Vec<&str> = messages.iter().map(|m| m.topic.as_str()).collect();
        topics.sort_unstable();
        topics.dedup();
        for topic in topics {
            self.ensure_topic(topic).await?;
        }
        let timeout = self.options.connect_timeout.get();
        let mut pending = Vec::with_capacity(messages.len());
        for (m, record) in messages.iter().zip(records) {
            let mut r = FutureRecord::to(&m.topic)
                .payload(&m.data[..])
                .headers(record.headers);
            if let Some(key) = &record.key {
                r = r.key(key.as_str());
            }
            let future = self
                .producer
                .send_result(r)
                .map_err(|(e, _)| delivery_error(&m.topic, e, timeout))?;
            pending.push((m.topic.as_str(), future));
        }
        // librdkafka gives up on a record after `message.timeout.ms` (the
        // connect timeout); the margin covers the delivery report's trip.
        let deadline = timeout + Duration::from_secs(1);
        for (topic, future) in pending {
            match tokio::time::timeout(deadline, future).await {
                Err(_) => {
                    return Err(BrokerError::timeout(
                        format!("kafka acknowledgement of a record to `{topic}`"),
                        timeout,
                    ));
                }
                Ok(Err(_canceled)) => {
                    return Err(connection_error(
                        "the producer closed before the broker answered",
                    ));
                }
                Ok(Ok(Err((e, _)))) => return Err(delivery_error(topic, e, timeout)),
                Ok(Ok(Ok(_))) => {}
            }
        }
        Ok(())
    }

    async fn subscribe(
        &self,
        spec: SubscriptionSpec,
    ) -> Result<Box<dyn Subscription>, BrokerError> {
        consume::subscribe(self, spec).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_lists() {
        assert_eq!(bootstrap("kafka://a:9092").unwrap(), "a:9092");
        assert_eq!(
            bootstrap("kafka://a:9092, b:9093,KAFKA://c:1/").unwrap(),
            "a:9092,b:9093,c:1"
        );
        assert_eq!(bootstrap("127.0.0.1:9092").unwrap(), "127.0.0.1:9092");
        for bad in [
            "a",
            "a:0",
            "a:x",
            ":9092",
            "nats://a:1",
            "kafka://u:p@a:1",
            "a:1,",
        ] {
            let e = bootstrap(bad).unwrap_err();
            assert_eq!(e.kind(), courier_broker::ErrorKind::Invalid, "{bad}: {e}");
        }
        assert!(
            !bootstrap("kafka://u:secret@a:1")
                .unwrap_err()
                .to_string()
                .contains("secret")
        );
        assert_eq!(
            bootstrap("kafka+ssl://a:1").unwrap_err().kind(),
            courier_broker::ErrorKind::Unsupported
        );
    }
}
