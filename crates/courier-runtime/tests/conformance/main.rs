//! The backend conformance suite: one set of tests, written once, run against
//! every backend through Courier with real guest components.
//!
//! Each backend gives the `[clients.default]` TOML of its [`Target`] and the
//! broker it needs; every case of [`suite::CASES`] becomes the test
//! `BACKEND::CASE` (`cargo test --test conformance -- jetstream::`). A test
//! whose broker is not listening is reported ignored with the reason, and
//! fails when `CI=true` (see `courier_test_support::trials`). The tests
//! assert what the backend's [`Features`](courier_broker::Features) promise,
//! no more, no less.

mod suite;

use std::process::ExitCode;

use courier_test_support::{Broker, Need, Trials};
use suite::Target;

/// Adds every case of the suite for one backend, named `module::case`.
fn backend(trials: &mut Trials, module: &str, needs: &[Need], target: fn() -> Target) {
    for &(case, run) in suite::CASES {
        trials.tokio(format!("{module}::{case}"), needs, move || run(target()));
    }
}

fn embedded() -> Target {
    Target {
        client: "backend = \"embedded\"".into(),
        prefix: "embedded",
        ..Default::default()
    }
}

/// The embedded broker with a data directory: durable.
fn embedded_durable() -> Target {
    let data = tempfile::tempdir().unwrap();
    Target {
        client: format!(
            "backend = \"embedded\"\n[host]\ndata-dir = \"{}\"",
            data.path().display()
        ),
        prefix: "durable",
        _data: Some(data),
    }
}

#[cfg(feature = "nats")]
fn nats() -> Target {
    Target {
        client: Broker::Nats.client(),
        prefix: "core",
        ..Default::default()
    }
}

#[cfg(feature = "nats")]
fn jetstream() -> Target {
    Target {
        client: format!(
            "{}\noptions = {{ jetstream = true, stream = \"COURIER_CONFORMANCE\", \
             subjects = \"js.>\", storage = \"memory\" }}",
            Broker::Nats.client()
        ),
        prefix: "js",
        ..Default::default()
    }
}

#[cfg(feature = "redis")]
fn redis_pubsub() -> Target {
    Target {
        client: Broker::Redis.client(),
        prefix: "rps",
        ..Default::default()
    }
}

#[cfg(feature = "redis")]
fn redis_streams() -> Target {
    Target {
        client: format!(
            "{}\noptions = {{ streams = true, maxlen = 100000 }}",
            Broker::Redis.client()
        ),
        prefix: "rst",
        ..Default::default()
    }
}

#[cfg(feature = "amqp")]
fn amqp() -> Target {
    Target {
        client: format!(
            "{}\noptions = {{ exchange = \"courier.conformance\" }}",
            Broker::RabbitMq.client()
        ),
        prefix: "amqp",
        ..Default::default()
    }
}

#[cfg(feature = "mqtt")]
fn mqtt() -> Target {
    Target {
        client: Broker::Mosquitto.client(),
        prefix: "mqtt",
        ..Default::default()
    }
}

/// Kafka (tansu in CI): two partitions per topic, so that the members of a
/// group share work; records are then in order per partition, not per
/// channel (`ordered` is false).
#[cfg(feature = "kafka")]
fn kafka() -> Target {
    Target {
        client: format!("{}\noptions = {{ partitions = 2 }}", Broker::Kafka.client()),
        prefix: "kafka",
        ..Default::default()
    }
}

fn main() -> ExitCode {
    let mut trials = Trials::new();
    backend(&mut trials, "embedded", &[], embedded);
    backend(&mut trials, "embedded_durable", &[], embedded_durable);
    #[cfg(feature = "nats")]
    {
        let needs = [Need::Broker(Broker::Nats)];
        backend(&mut trials, "nats", &needs, nats);
        backend(&mut trials, "jetstream", &needs, jetstream);
    }
    #[cfg(feature = "redis")]
    {
        let needs = [Need::Broker(Broker::Redis)];
        backend(&mut trials, "redis_pubsub", &needs, redis_pubsub);
        backend(&mut trials, "redis_streams", &needs, redis_streams);
    }
    #[cfg(feature = "amqp")]
    backend(&mut trials, "amqp", &[Need::Broker(Broker::RabbitMq)], amqp);
    #[cfg(feature = "mqtt")]
    backend(
        &mut trials,
        "mqtt",
        &[Need::Broker(Broker::Mosquitto)],
        mqtt,
    );
    #[cfg(feature = "kafka")]
    backend(&mut trials, "kafka", &[Need::Broker(Broker::Kafka)], kafka);
    trials.run()
}
