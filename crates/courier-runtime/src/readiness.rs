//! Whether the host can do its work now — every client connected, every
//! guest able to run — as `/readyz` and `/healthz` report it
//! ([`crate::Runtime::readiness`]).

use serde::Serialize;

/// The host's readiness: each client and each guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Readiness {
    /// Every configured client, by name.
    pub clients: Vec<ClientReadiness>,
    /// Every guest, by name.
    pub guests: Vec<GuestReadiness>,
}

/// One client's connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClientReadiness {
    /// The client's name (`[clients.NAME]`).
    pub name: String,
    /// Its backend kind.
    pub backend: &'static str,
    /// Connected or not, and why.
    #[serde(flatten)]
    pub status: ClientStatus,
}

/// Whether a client is connected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum ClientStatus {
    /// Connected, and no connection of its backend is down.
    Connected,
    /// Connected once, but a connection of its backend kind is down now
    /// (the backend is reconnecting). Backends report link health per kind,
    /// so two clients of one kind are down together.
    Down {
        /// What is down.
        reason: String,
    },
    /// The last attempt to connect failed.
    Unreachable {
        /// Why (urls shown without their credentials).
        error: String,
    },
    /// An attempt to connect is under way, with no answer yet.
    Connecting,
}

impl ClientStatus {
    /// Whether the client can be used now.
    pub fn is_ready(&self) -> bool {
        matches!(self, Self::Connected)
    }
}

/// One guest's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GuestReadiness {
    /// The guest's name (`[guests.NAME]`).
    pub name: String,
    /// Running or not, and why.
    #[serde(flatten)]
    pub status: GuestStatus,
}

/// Whether a guest can take messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum GuestStatus {
    /// Subscribed, its workers running, its last instantiation fine.
    Running,
    /// Not started yet.
    Starting,
    /// Stopping or stopped (the host is shutting down).
    Stopped,
    /// Some of its worker tasks ended while the guest runs (a panic in the
    /// host): the messages they would take wait.
    WorkersDied {
        /// Tasks ended.
        dead: usize,
        /// Tasks started.
        of: usize,
    },
    /// The last attempt to make an instance failed (after a trap or a
    /// deadline threw the old one away): its messages fail until one can
    /// be made again.
    CannotInstantiate {
        /// Why.
        error: String,
    },
}

impl GuestStatus {
    /// Whether the guest takes messages now.
    pub fn is_ready(&self) -> bool {
        matches!(self, Self::Running)
    }

    /// Whether the guest can still run without a restart of the host: true
    /// unless its workers died or it is stopped.
    pub fn is_alive(&self) -> bool {
        !matches!(self, Self::WorkersDied { .. } | Self::Stopped)
    }
}

impl Readiness {
    /// Every client connected and every guest running.
    pub fn is_ready(&self) -> bool {
        self.clients.iter().all(|c| c.status.is_ready())
            && self.guests.iter().all(|g| g.status.is_ready())
    }

    /// Whether at least one guest can still run (or there are none): when
    /// none can, the host is alive but useless, and a restart is the cure.
    pub fn any_guest_alive(&self) -> bool {
        self.guests.is_empty() || self.guests.iter().any(|g| g.status.is_alive())
    }

    /// What is not ready, one line each: `client NAME: ...`, `guest NAME: ...`.
    pub fn not_ready(&self) -> Vec<String> {
        let clients = self.clients.iter().filter(|c| !c.status.is_ready());
        let guests = self.guests.iter().filter(|g| !g.status.is_ready());
        clients
            .map(|c| {
                let why = match &c.status {
                    ClientStatus::Connected => "connected".to_string(),
                    ClientStatus::Down { reason } => format!("down: {reason}"),
                    ClientStatus::Unreachable { error } => format!("unreachable: {error}"),
                    ClientStatus::Connecting => "connecting".to_string(),
                };
                format!("client {}: {why}", c.name)
            })
            .chain(guests.map(|g| {
                let why = match &g.status {
                    GuestStatus::Running => "running".to_string(),
                    GuestStatus::Starting => "starting".to_string(),
                    GuestStatus::Stopped => "stopped".to_string(),
                    GuestStatus::WorkersDied { dead, of } => {
                        format!("{dead} of its {of} worker tasks died")
                    }
                    GuestStatus::CannotInstantiate { error } => {
                        format!("cannot instantiate: {error}")
                    }
                };
                format!("guest {}: {why}", g.name)
            }))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(status: ClientStatus) -> ClientReadiness {
        ClientReadiness {
            name: "events".into(),
            backend: "nats",
            status,
        }
    }

    fn guest(name: &str, status: GuestStatus) -> GuestReadiness {
        GuestReadiness {
            name: name.into(),
            status,
        }
    }

    #[test]
    fn ready_only_when_everything_is() {
        let mut r = Readiness {
            clients: vec![client(ClientStatus::Connected)],
            guests: vec![guest("a", GuestStatus::Running)],
        };
        assert!(r.is_ready() && r.not_ready().is_empty());
        r.clients[0].status = ClientStatus::Unreachable {
            error: "connection refused".into(),
        };
        assert!(!r.is_ready());
        assert_eq!(
            r.not_ready(),
            ["client events: unreachable: connection refused"]
        );
        assert!(r.any_guest_alive());
        r.clients[0].status = ClientStatus::Connected;
        r.guests
            .push(guest("b", GuestStatus::WorkersDied { dead: 1, of: 2 }));
        assert!(!r.is_ready() && r.any_guest_alive());
        assert_eq!(r.not_ready(), ["guest b: 1 of its 2 worker tasks died"]);
        r.guests[0].status = GuestStatus::Stopped;
        assert!(!r.any_guest_alive());
        r.guests[0].status = GuestStatus::CannotInstantiate {
            error: "out of memory".into(),
        };
        assert!(r.any_guest_alive(), "an instance may be made again");
    }

    #[test]
    fn the_json_names_each_status() {
        let r = Readiness {
            clients: vec![client(ClientStatus::Unreachable {
                error: "refused".into(),
            })],
            guests: vec![guest("b", GuestStatus::WorkersDied { dead: 1, of: 2 })],
        };
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(
            json,
            r#"{"clients":[{"name":"events","backend":"nats","status":"unreachable","error":"refused"}],"guests":[{"name":"b","status":"workers-died","dead":1,"of":2}]}"#
        );
    }
}
