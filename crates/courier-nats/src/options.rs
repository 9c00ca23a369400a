//! Client options of the NATS backend (`[clients.NAME.options]`).

use std::collections::BTreeMap;
use std::time::Duration;

use courier_broker::BrokerError;

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

fn invalid(key: &str, what: &str, value: &str) -> BrokerError {
    BrokerError::Invalid(format!("nats option `{key}`: {what}, got `{value}`"))
}

impl NatsOptions {
    /// Parses options, naming any unknown key or bad value.
    pub fn parse(options: &BTreeMap<String, String>) -> Result<Self, BrokerError> {
        if let Some(k) = options
            .keys()
            .find(|k| !CLIENT_OPTION_KEYS.contains(&k.as_str()))
        {
            return Err(BrokerError::Invalid(format!(
                "unknown nats option `{k}` (known: {})",
                CLIENT_OPTION_KEYS.join(", ")
            )));
        }
        let get = |k: &str| options.get(k).map(String::as_str);
        let jetstream = match get("jetstream").unwrap_or("false") {
            "true" => true,
            "false" => false,
            v => return Err(invalid("jetstream", "expected true or false", v)),
        };
        let connect_timeout = match get("connect-timeout-ms") {
            None => Duration::from_secs(5),
            Some(v) => Duration::from_millis(
                v.parse()
                    .ok()
                    .filter(|ms| *ms > 0)
                    .ok_or_else(|| invalid("connect-timeout-ms", "expected milliseconds", v))?,
            ),
        };
        let stream = get("stream").unwrap_or("COURIER").to_string();
        if stream.is_empty() || stream.contains(['.', '*', '>', ' ', '\t']) {
            return Err(invalid(
                "stream",
                "a name without `.`, `*`, `>` or spaces",
                &stream,
            ));
        }
        let subjects: Vec<String> = get("subjects")
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        let storage = match get("storage").unwrap_or("file") {
            "file" => Storage::File,
            "memory" => Storage::Memory,
            v => return Err(invalid("storage", "expected file or memory", v)),
        };
        if !jetstream
            && let Some(k) = ["stream", "subjects", "storage"]
                .iter()
                .find(|k| options.contains_key(**k))
        {
            return Err(BrokerError::Invalid(format!(
                "nats option `{k}` needs `jetstream = true`"
            )));
        }
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
