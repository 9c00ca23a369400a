//! Client options of the NATS backend (`[clients.NAME.options]`) and the
//! subscription extensions it understands, as typed `serde` structs.

use std::num::NonZeroI64;
use std::path::PathBuf;

use courier_broker::BrokerError;
use courier_broker::factory::ConnectTimeout;
use courier_broker::secret::Secret;
use serde::{Deserialize, Deserializer};

/// Where JetStream keeps a stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Storage {
    /// On disk: survives a server restart.
    #[default]
    File,
    /// In memory.
    Memory,
}

/// `[clients.NAME.options]` of a `nats` client.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct NatsOptions {
    /// Publish to and consume from a JetStream stream (durable, acked).
    pub jetstream: bool,
    /// The stream (default `COURIER`).
    pub stream: Option<String>,
    /// Subjects of the stream, used when Courier creates it: a list, or
    /// one text of comma-separated subjects.
    #[serde(deserialize_with = "subjects")]
    pub subjects: Option<Vec<String>>,
    /// Storage of a stream Courier creates: `file` (default) or `memory`.
    pub storage: Option<Storage>,
    /// Replicas of a stream Courier creates (1 to 5; default 1): on a
    /// clustered JetStream, 3 keeps the stream when one server is lost.
    pub replicas: Option<usize>,
    /// Deadline of the first connection and of each request.
    #[serde(rename = "connect-timeout-ms")]
    pub connect_timeout: ConnectTimeout,
    /// A `.creds` file (a user JWT and its NKey seed) to authenticate with.
    pub creds_file: Option<PathBuf>,
    /// A file holding the NKey seed (`SU…`) to authenticate with.
    pub nkey_seed_file: Option<PathBuf>,
    /// The environment variable holding the NKey seed.
    pub nkey_seed_env: Option<String>,
}

/// How a client authenticates, besides credentials in its url.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// An NKey seed, read from its file or variable.
    Nkey(Secret),
    /// A `.creds` file, read by the client library when it connects.
    CredsFile(PathBuf),
}

/// JetStream settings of a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JetStreamOptions {
    /// The stream messages are published into and consumed from.
    pub stream: String,
    /// Subjects of the stream, used when Courier creates it.
    pub subjects: Vec<String>,
    /// Storage of a stream Courier creates.
    pub storage: Storage,
    /// Replicas of a stream Courier creates.
    pub replicas: usize,
}

impl NatsOptions {
    /// Checks keys that depend on each other: `stream`, `subjects` and
    /// `storage` are JetStream settings, and a stream's name has no `.`,
    /// wildcard or space.
    pub fn check(&self) -> Result<(), BrokerError> {
        if !self.jetstream {
            let set = [
                ("stream", self.stream.is_some()),
                ("subjects", self.subjects.is_some()),
                ("storage", self.storage.is_some()),
                ("replicas", self.replicas.is_some()),
            ];
            if let Some((key, _)) = set.iter().find(|(_, on)| *on) {
                return Err(BrokerError::invalid(format!(
                    "nats option `{key}` needs `jetstream = true`"
                )));
            }
        }
        if let Some(n) = self.replicas
            && !(1..=5).contains(&n)
        {
            return Err(BrokerError::invalid(format!(
                "nats option `replicas`: expected 1 to 5 (JetStream's limit), got {n}"
            )));
        }
        let auths = [
            self.creds_file.is_some(),
            self.nkey_seed_file.is_some(),
            self.nkey_seed_env.is_some(),
        ];
        if auths.iter().filter(|on| **on).count() > 1 {
            return Err(BrokerError::invalid(
                "nats options `creds-file`, `nkey-seed-file` and `nkey-seed-env`: give one",
            ));
        }
        if let Some(stream) = &self.stream
            && (stream.is_empty() || stream.contains(['.', '*', '>', ' ', '\t']))
        {
            return Err(BrokerError::invalid(format!(
                "nats option `stream`: expected a name without `.`, `*`, `>` or spaces, got `{stream}`"
            )));
        }
        Ok(())
    }

    /// The NKey seed or `.creds` file to authenticate with, if any; the seed
    /// is read from its file or variable now. Errors name the option, never
    /// the seed.
    pub fn auth(&self) -> Result<Option<Auth>, BrokerError> {
        let seed = |text: String, from: String| {
            let seed = text.trim().to_string();
            if seed.starts_with('S') && seed.len() > 10 && !seed.contains(char::is_whitespace) {
                Ok(Some(Auth::Nkey(Secret::new(seed))))
            } else {
                Err(BrokerError::invalid(format!(
                    "nats: {from} does not hold an NKey seed (one line starting with `S`)"
                )))
            }
        };
        if let Some(path) = &self.creds_file {
            return Ok(Some(Auth::CredsFile(path.clone())));
        }
        if let Some(path) = &self.nkey_seed_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                BrokerError::invalid(format!(
                    "nats option `nkey-seed-file`: cannot read `{}`: {e}",
                    path.display()
                ))
            })?;
            return seed(text, format!("`{}`", path.display()));
        }
        if let Some(var) = &self.nkey_seed_env {
            let text = std::env::var(var).map_err(|_| {
                BrokerError::invalid(format!(
                    "nats option `nkey-seed-env`: the environment variable `{var}` is not set"
                ))
            })?;
            return seed(text, format!("the environment variable `{var}`"));
        }
        Ok(None)
    }

    /// The JetStream settings, when `jetstream = true`.
    pub fn jetstream(&self) -> Option<JetStreamOptions> {
        self.jetstream.then(|| JetStreamOptions {
            stream: self.stream.clone().unwrap_or_else(|| "COURIER".into()),
            subjects: self.subjects.clone().unwrap_or_default(),
            storage: self.storage.unwrap_or_default(),
            replicas: self.replicas.unwrap_or(1),
        })
    }
}

/// Subjects as a list, or as one comma-separated text.
fn subjects<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Subjects {
        Text(String),
        List(Vec<String>),
    }
    let list = match Subjects::deserialize(d)? {
        Subjects::Text(t) => t.split(',').map(str::to_string).collect(),
        Subjects::List(l) => l,
    };
    Ok(Some(
        list.into_iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
    ))
}

/// Where a new JetStream consumer starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeliverPolicy {
    /// Everything the stream holds.
    All,
    /// Only messages published from now on.
    New,
    /// The last message, then new ones.
    Last,
}

/// Subscription extensions of the NATS backend (JetStream only).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct NatsExtensions {
    /// A durable consumer name for a broadcast subscription.
    pub durable: Option<String>,
    /// Where a new consumer starts (default: `all` for durable consumers,
    /// `new` for the others).
    pub deliver_policy: Option<DeliverPolicy>,
    /// Unacknowledged messages the server lets the consumer hold.
    pub max_ack_pending: Option<NonZeroI64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<NatsOptions, String> {
        let o: NatsOptions = toml::from_str(text).map_err(|e| e.to_string())?;
        o.check().map_err(|e| e.to_string())?;
        Ok(o)
    }

    #[test]
    fn defaults_and_jetstream() {
        assert_eq!(parse("").unwrap().jetstream(), None);
        let js = parse("jetstream = true\nsubjects = \"a.>, b.*\"")
            .unwrap()
            .jetstream()
            .unwrap();
        assert_eq!(js.stream, "COURIER");
        assert_eq!(js.subjects, vec!["a.>", "b.*"]);
        assert_eq!(js.storage, Storage::File);
        assert_eq!(js.replicas, 1);
        let js = parse("jetstream = true\nreplicas = 3").unwrap().jetstream();
        assert_eq!(js.map(|js| js.replicas), Some(3));
        let js = parse("jetstream = true\nsubjects = [\"a.>\"]\nstorage = \"memory\"")
            .unwrap()
            .jetstream()
            .unwrap();
        assert_eq!(
            (js.subjects, js.storage),
            (vec!["a.>".into()], Storage::Memory)
        );
    }

    #[test]
    fn errors_name_the_key() {
        let e = parse("jetstram = true").unwrap_err();
        assert!(e.contains("jetstram"), "{e}");
        let e = parse("jetstream = \"yes\"").unwrap_err();
        assert!(e.contains("jetstream") || e.contains("boolean"), "{e}");
        let e = parse("stream = \"S\"").unwrap_err();
        assert!(e.contains("needs `jetstream = true`"), "{e}");
        let e = parse("jetstream = true\nstream = \"a.b\"").unwrap_err();
        assert!(e.contains("`stream`"), "{e}");
        let e = parse("replicas = 3").unwrap_err();
        assert!(e.contains("`replicas` needs `jetstream = true`"), "{e}");
        for bad in ["0", "6"] {
            let e = parse(&format!("jetstream = true\nreplicas = {bad}")).unwrap_err();
            assert!(e.contains("`replicas`: expected 1 to 5"), "{e}");
        }
        let e = parse("jetstream = true\nreplicas = -1").unwrap_err();
        assert!(e.contains("replicas"), "{e}");
        let e = parse("connect-timeout-ms = 0").unwrap_err();
        assert!(e.contains("above 0"), "{e}");
    }
}
