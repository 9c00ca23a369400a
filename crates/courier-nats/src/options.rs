//! Client options of the NATS backend (`[clients.NAME.options]`).

use std::collections::BTreeMap;
use std::time::Duration;

use courier_broker::BrokerError;
use courier_broker::options::OptionMap;

/// Every key of `[clients.NAME.options]` the NATS backend understands.
pub const CLIENT_OPTION_KEYS: &[&str] = &[
    "jetstream",
    "stream",
    "subjects",
    "storage",
    "connect-timeout-ms",
];

/// Where JetStream keeps a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// On disk: survives a server restart.
    File,
    /// In memory.
    Memory,
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
}

/// Parsed client options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsOptions {
    /// `Some` when `jetstream = true`.
    pub jetstream: Option<JetStreamOptions>,
    /// Deadline of the first connection.
    pub connect_timeout: Duration,
}

impl NatsOptions {
    /// Parses options, naming any unknown key or bad value.
    pub fn parse(options: &BTreeMap<String, String>) -> Result<Self, BrokerError> {
        let o = OptionMap::new("nats", options, CLIENT_OPTION_KEYS)?;
        let jetstream = o.flag("jetstream", false)?;
        o.require(&["stream", "subjects", "storage"], ("jetstream", jetstream))?;
        let connect_timeout = o.millis("connect-timeout-ms", Duration::from_secs(5))?;
        let stream = o.get("stream").unwrap_or("COURIER").to_string();
        if stream.is_empty() || stream.contains(['.', '*', '>', ' ', '\t']) {
            return Err(o.invalid("stream", "a name without `.`, `*`, `>` or spaces", &stream));
        }
        let subjects: Vec<String> = o
            .get("subjects")
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        let storage = match o.get("storage").unwrap_or("file") {
            "file" => Storage::File,
            "memory" => Storage::Memory,
            v => return Err(o.invalid("storage", "file or memory", v)),
        };
        Ok(Self {
            jetstream: jetstream.then_some(JetStreamOptions {
                stream,
                subjects,
                storage,
            }),
            connect_timeout,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<NatsOptions, BrokerError> {
        NatsOptions::parse(
            &pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn defaults_and_jetstream() {
        let o = parse(&[]).unwrap();
        assert_eq!(o.jetstream, None);
        let o = parse(&[("jetstream", "true"), ("subjects", "a.>, b.*")]).unwrap();
        let js = o.jetstream.unwrap();
        assert_eq!(js.stream, "COURIER");
        assert_eq!(js.subjects, vec!["a.>", "b.*"]);
        assert_eq!(js.storage, Storage::File);
    }

    #[test]
    fn errors_name_the_key() {
        let e = parse(&[("jetstram", "true")]).unwrap_err().to_string();
        assert!(e.contains("jetstram"), "{e}");
        let e = parse(&[("jetstream", "yes")]).unwrap_err().to_string();
        assert!(e.contains("`jetstream`"), "{e}");
        let e = parse(&[("stream", "S")]).unwrap_err().to_string();
        assert!(e.contains("needs `jetstream = true`"), "{e}");
        let e = parse(&[("jetstream", "true"), ("stream", "a.b")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("`stream`"), "{e}");
    }
}
