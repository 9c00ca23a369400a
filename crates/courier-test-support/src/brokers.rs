//! The shared brokers the tests use on loopback, and CI mode.
//!
//! Each broker listens on its standard port unless its variable says
//! otherwise: `COURIER_TEST_NATS_PORT` (4222), `COURIER_TEST_REDIS_PORT`
//! (6379), `COURIER_TEST_AMQP_PORT` (5672) and `COURIER_TEST_MQTT_PORT`
//! (1883). Pointing one at a closed port shows what its tests do without
//! that broker: ignored with the reason, or failed when `CI=true`.

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
}

impl Broker {
    /// Every broker.
    pub const ALL: [Broker; 4] = [
        Broker::Nats,
        Broker::Redis,
        Broker::RabbitMq,
        Broker::Mosquitto,
    ];

    /// The server's name, as in messages and `scripts/brokers.sh`.
    pub fn name(self) -> &'static str {
        match self {
            Broker::Nats => "nats-server",
            Broker::Redis => "redis-server",
            Broker::RabbitMq => "rabbitmq",
            Broker::Mosquitto => "mosquitto",
        }
    }

    /// The Courier backend that talks to it.
    pub fn backend(self) -> &'static str {
        match self {
            Broker::Nats => "nats",
            Broker::Redis => "redis",
            Broker::RabbitMq => "amqp",
            Broker::Mosquitto => "mqtt",
        }
    }

    /// The variable that overrides the shared broker's port.
    pub fn port_var(self) -> &'static str {
        match self {
            Broker::Nats => "COURIER_TEST_NATS_PORT",
            Broker::Redis => "COURIER_TEST_REDIS_PORT",
            Broker::RabbitMq => "COURIER_TEST_AMQP_PORT",
            Broker::Mosquitto => "COURIER_TEST_MQTT_PORT",
        }
    }

    /// The standard port.
    pub fn default_port(self) -> u16 {
        match self {
            Broker::Nats => 4222,
            Broker::Redis => 6379,
            Broker::RabbitMq => 5672,
            Broker::Mosquitto => 1883,
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
        };
        std::env::var(var).unwrap_or_else(|_| default.to_string())
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
