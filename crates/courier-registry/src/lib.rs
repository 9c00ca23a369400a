//! The backends of this build of Courier, by the kind name written in
//! configuration (`backend = "nats"`).
//!
//! This is the one place that names the backend crates: the embedded broker
//! always, each remote broker behind a cargo feature of its name. Adding a
//! backend is one feature in `Cargo.toml` and one `register` line below; the
//! configuration, the runtime and the CLI find it through the registry.
//!
//! ```
//! let registry = courier_registry::builtin();
//! assert!(registry.get("embedded").is_some());
//! let embedded = registry.get("embedded").unwrap();
//! assert!(!embedded.remote());
//! // A misspelt option is refused when the configuration is read.
//! let table: toml::Table = toml::from_str("durable = true").unwrap();
//! assert_eq!(embedded.parse_options(table).unwrap_err().key, "durable");
//! ```
#![deny(missing_docs)]

pub use courier_broker::factory::Registry;
pub use courier_embedded::Embedded;

/// Every backend of this build; the embedded broker keeps its messages in
/// memory (a host registers its own [`Embedded`] over it to share one broker
/// opened on a data directory).
pub fn builtin() -> Registry {
    let mut registry = Registry::default();
    registry.register(Embedded::default());
    #[cfg(feature = "nats")]
    registry.register(courier_nats::Nats);
    #[cfg(feature = "redis")]
    registry.register(courier_redis::Redis);
    #[cfg(feature = "amqp")]
    registry.register(courier_amqp::Amqp);
    #[cfg(feature = "mqtt")]
    registry.register(courier_mqtt::Mqtt);
    #[cfg(feature = "kafka")]
    registry.register(courier_kafka::Kafka);
    registry
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_backend_of_the_build_is_registered_once() {
        let kinds: Vec<&str> = super::builtin().kinds().collect();
        let mut expected = vec!["embedded"];
        if cfg!(feature = "nats") {
            expected.push("nats");
        }
        if cfg!(feature = "redis") {
            expected.push("redis");
        }
        if cfg!(feature = "amqp") {
            expected.push("amqp");
        }
        if cfg!(feature = "mqtt") {
            expected.push("mqtt");
        }
        if cfg!(feature = "kafka") {
            expected.push("kafka");
        }
        expected.sort();
        assert_eq!(kinds, expected);
    }
}
