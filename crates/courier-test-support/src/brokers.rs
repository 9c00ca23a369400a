//! The shared brokers the tests use on loopback, and CI mode.
//!
//! Each broker listens on its standard port unless its variable says
//! otherwise: `COURIER_TEST_NATS_PORT` (4222), `COURIER_TEST_REDIS_PORT`
//! (6379), `COURIER_TEST_AMQP_PORT` (5672), `COURIER_TEST_MQTT_PORT`
//! (1883) and `COURIER_TEST_KAFKA_PORT` (9092). Pointing one at a closed
//! port shows what its tests do without that broker: ignored with the
//! reason, or failed when `CI=true`.

use std::path::{Path, PathBuf};

/// Whether this is a CI run (`CI=true`), where a missing broker fails.
pub fn ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// A broker the tests run against, shared or private.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broker {
    /// nats-server with JetStream.
    Nats,
    /// redis-server.
    Redis,
    /// RabbitMQ (AMQP 0-9-1).
    RabbitMq,
    /// Mosquitto (MQTT 5).
    Mosquitto,
    /// tansu, a Kafka-protocol broker (in-memory storage).
    Kafka,
}

impl Broker {
    /// Every broker.
    pub const ALL: [Broker; 5] = [
        Broker::Nats,
        Broker::Redis,
        Broker::RabbitMq,
        Broker::Mosquitto,
        Broker::Kafka,
    ];

    /// The server's name, as in messages and `scripts/brokers.sh`.
    pub fn name(self) -> &'static str {
        match self {
            Broker::Nats => "nats-server",
            Broker::Redis => "redis-server",
            Broker::RabbitMq => "rabbitmq",
            Broker::Mosquitto => "mosquitto",
            Broker::Kafka => "tansu",
        }
    }

    /// The Courier backend that talks to it.
    pub fn backend(self) -> &'static str {
        match self {
            Broker::Nats => "nats",
            Broker::Redis => "redis",
            Broker::RabbitMq => "amqp",
            Broker::Mosquitto => "mqtt",
            Broker::Kafka => "kafka",
        }
    }

    /// The variable that overrides the shared broker's port.
    pub fn port_var(self) -> &'static str {
        match self {
            Broker::Nats => "COURIER_TEST_NATS_PORT",
            Broker::Redis => "COURIER_TEST_REDIS_PORT",
            Broker::RabbitMq => "COURIER_TEST_AMQP_PORT",
            Broker::Mosquitto => "COURIER_TEST_MQTT_PORT",
            Broker::Kafka => "COURIER_TEST_KAFKA_PORT",
        }
    }

    /// The standard port.
    pub fn default_port(self) -> u16 {
        match self {
            Broker::Nats => 4222,
            Broker::Redis => 6379,
            Broker::RabbitMq => 5672,
            Broker::Mosquitto => 1883,
            Broker::Kafka => 9092,
        }
    }

    /// The shared broker's port on 127.0.0.1: [`Broker::port_var`] if set
    /// (panics if it is not a port), else the standard one.
    pub fn port(self) -> u16 {
        match std::env::var(self.port_var()) {
            Ok(v) => v
                .parse()
                .unwrap_or_else(|_| panic!("{}={v:?} is not a port", self.port_var())),
            Err(_) => self.default_port(),
        }
    }

    /// The URL of this broker on 127.0.0.1:`port`.
    pub fn url_at(self, port: u16) -> String {
        match self {
            Broker::Nats => format!("nats://127.0.0.1:{port}"),
            Broker::Redis => format!("redis://127.0.0.1:{port}"),
            Broker::RabbitMq => format!("amqp://guest:guest@127.0.0.1:{port}/%2f"),
            Broker::Mosquitto => format!("mqtt://127.0.0.1:{port}"),
            Broker::Kafka => format!("kafka://127.0.0.1:{port}"),
        }
    }

    /// The URL of the shared broker.
    pub fn url(self) -> String {
        self.url_at(self.port())
    }

    /// The `backend` and `url` lines of a `[clients.*]` table for this
    /// broker on 127.0.0.1:`port`.
    pub fn client_at(self, port: u16) -> String {
        format!(
            "backend = \"{}\"\nurl = \"{}\"",
            self.backend(),
            self.url_at(port)
        )
    }

    /// The `backend` and `url` lines of a `[clients.*]` table for the
    /// shared broker.
    pub fn client(self) -> String {
        self.client_at(self.port())
    }

    /// Whether the shared broker accepts connections; `Err` says why not.
    pub fn check(self) -> Result<(), String> {
        let port = self.port();
        if crate::net::accepting(port) {
            Ok(())
        } else {
            Err(format!(
                "{} is not listening on 127.0.0.1:{port}",
                self.name()
            ))
        }
    }

    /// The program that runs a private broker, and the variable that
    /// overrides it.
    fn program_name(self) -> String {
        let (var, default) = match self {
            Broker::Nats => ("COURIER_NATS_SERVER", "nats-server"),
            Broker::Redis => ("COURIER_REDIS_SERVER", "redis-server"),
            Broker::Mosquitto => ("COURIER_MOSQUITTO", "mosquitto"),
            Broker::RabbitMq => ("COURIER_RABBITMQ_SERVER", "rabbitmq-server"),
            Broker::Kafka => ("COURIER_TANSU", "tansu"),
        };
        if let Ok(program) = std::env::var(var) {
            return program;
        }
        // scripts/brokers.sh builds tansu into the cache, not onto the PATH.
        if self == Broker::Kafka {
            let built = courier_cache().join("tansu-0.6.0/bin/tansu");
            if built.exists() {
                return built.display().to_string();
            }
        }
        default.to_string()
    }

    /// Where the program that runs a private broker is; `Err` says why it
    /// cannot be found.
    pub fn program(self) -> Result<PathBuf, String> {
        let name = self.program_name();
        find_program(&name).ok_or_else(|| format!("`{name}` is not installed"))
    }
}

/// Where `program` is, searching `PATH` and the usual `sbin` directories
/// (a path with a directory is taken as it is).
pub fn find_program(program: &str) -> Option<PathBuf> {
    let p = Path::new(program);
    if p.components().count() > 1 {
        return p.is_file().then(|| p.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|f| f.is_file())
}

/// Why the Kafka tests that kill a consumer-group member are ignored: the
/// test broker, tansu 0.6.0, does not hand a dead member's partitions over
/// reliably. Found from its logs and librdkafka's (docs/backends.md, tansu):
/// a member that expires while the group is formed stays the group's leader,
/// so the members left wait for its assignment forever; a survivor that
/// joins again after the expiry is given the previous generation's
/// assignment back (its own partitions only); and a join does not count as
/// contact, so a follower held in tansu's 3 s join pauses is expelled in turn.
pub const TANSU_GROUP_TAKEOVER: &str = "tansu 0.6.0 does not hand a killed group member's partitions \
     over reliably (a dead leader is kept, a survivor gets its old assignment back; see \
     docs/backends.md, tansu); run against Apache Kafka with COURIER_TEST_KAFKA_PORT and --ignored";

/// The directory holding the `librdkafka.so.1` that `kcat` runs with in the
/// interop test (Debian 12's own, 2.0.2, cannot talk to tansu):
/// `COURIER_KCAT_LIBRARY_PATH`, else where `scripts/brokers.sh` puts the one
/// of the pinned confluent-kafka wheel.
pub fn kcat_library_path() -> PathBuf {
    if let Some(dir) = std::env::var_os("COURIER_KCAT_LIBRARY_PATH") {
        return dir.into();
    }
    courier_cache().join("librdkafka-2.16.2")
}

/// Where `scripts/brokers.sh` keeps what it builds or fetches once:
/// `$XDG_CACHE_HOME/courier-brokers`, or `~/.cache/courier-brokers` (not
/// `courier`: that is the compile cache, whose clean-up removes files it
/// does not know).
fn courier_cache() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"))
        .join("courier-brokers")
}
