//! The backend conformance suite: one set of tests, written once, run against
//! every backend through Courier with real guest components.
//!
//! Each backend module calls [`conformance!`] with a function that returns
//! the `[clients.default]` TOML of that backend, or `None` when its broker is
//! not available (which is an error when `CI=true`). The tests assert what the
//! backend's [`Features`](courier_broker::Features) promise, no more, no less.

mod suite;

use suite::{Target, conformance};

#[path = "../common/mod.rs"]
mod common;

use common::broker;

mod embedded {
    use super::Target;

    fn client() -> Option<Target> {
        Some(Target {
            client: "backend = \"embedded\"".into(),
            prefix: "embedded",
            ..Default::default()
        })
    }
    super::conformance!(client);
}

/// The embedded broker with a data directory: durable.
mod embedded_durable {
    use super::Target;

    fn client() -> Option<Target> {
        let data = tempfile::tempdir().unwrap();
        Some(Target {
            client: format!(
                "backend = \"embedded\"\n[host]\ndata-dir = \"{}\"",
                data.path().display()
            ),
            prefix: "durable",
            _data: Some(data),
        })
    }
    super::conformance!(client);
}

#[cfg(feature = "nats")]
mod nats {
    use super::Target;

    fn client() -> Option<Target> {
        super::broker("nats-server", 4222).then(|| Target {
            client: "backend = \"nats\"\nurl = \"nats://127.0.0.1:4222\"".into(),
            prefix: "core",
            ..Default::default()
        })
    }
    super::conformance!(client);
}

#[cfg(feature = "nats")]
mod jetstream {
    use super::Target;

    fn client() -> Option<Target> {
        super::broker("nats-server", 4222).then(|| Target {
            client: "backend = \"nats\"\nurl = \"nats://127.0.0.1:4222\"\n\
                     options = { jetstream = true, stream = \"COURIER_CONFORMANCE\", \
                     subjects = \"js.>\", storage = \"memory\" }"
                .into(),
            prefix: "js",
            ..Default::default()
        })
    }
    super::conformance!(client);
}

#[cfg(feature = "redis")]
mod redis_pubsub {
    use super::Target;

    fn client() -> Option<Target> {
        super::broker("redis-server", 6379).then(|| Target {
            client: "backend = \"redis\"\nurl = \"redis://127.0.0.1:6379\"".into(),
            prefix: "rps",
            ..Default::default()
        })
    }
    super::conformance!(client);
}

#[cfg(feature = "redis")]
mod redis_streams {
    use super::Target;

    fn client() -> Option<Target> {
        super::broker("redis-server", 6379).then(|| Target {
            client: "backend = \"redis\"\nurl = \"redis://127.0.0.1:6379\"\n\
                     options = { streams = true, maxlen = 100000 }"
                .into(),
            prefix: "rst",
            ..Default::default()
        })
    }
    super::conformance!(client);
}

#[cfg(feature = "amqp")]
mod amqp {
    use super::Target;

    fn client() -> Option<Target> {
        super::broker("rabbitmq", 5672).then(|| Target {
            client: "backend = \"amqp\"\nurl = \"amqp://guest:guest@127.0.0.1:5672/%2f\"\n\
                     options = { exchange = \"courier.conformance\" }"
                .into(),
            prefix: "amqp",
            ..Default::default()
        })
    }
    super::conformance!(client);
}

#[cfg(feature = "mqtt")]
mod mqtt {
    use super::Target;

    fn client() -> Option<Target> {
        super::broker("mosquitto", 1883).then(|| Target {
            client: "backend = \"mqtt\"\nurl = \"mqtt://127.0.0.1:1883\"".into(),
            prefix: "mqtt",
            ..Default::default()
        })
    }
    super::conformance!(client);
}
