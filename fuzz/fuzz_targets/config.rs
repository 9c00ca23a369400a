//! The config parser: `Config::from_toml` never panics, on any text and on
//! TOML built from the config's own keys with arbitrary values; what it
//! accepts keeps the invariants `validate` promises; what it refuses names
//! a key of the file.
//!
//! It depends on `courier-config` like any other user (no wasmtime), which
//! reads each backend's options with that backend's own typed struct.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use courier_broker::pattern::allowed_pattern;
use courier_config::{Config, ConfigError};
use libfuzzer_sys::fuzz_target;
use toml::{Table, Value};

const NAMES: &[&str] = &["default", "a", "b", "x.y", ""];
const BACKENDS: &[&str] = &["embedded", "nats", "redis", "amqp", "mqtt", "pigeon"];
/// Option names to try, valid for one backend or another (or none): what a
/// backend accepts is its own options struct's to say.
const SAMPLE_OPTIONS: &[&str] = &[
    "jetstream",
    "stream",
    "subjects",
    "storage",
    "streams",
    "maxlen",
    "key-prefix",
    "exchange",
    "durable",
    "prefetch",
    "qos",
    "client-id",
    "connect-timeout-ms",
    "nope",
];
const CHANNELS: &[&str] = &[
    "in", "out", "in.*", "in.>", ">", "*", "a..b", "", "dlq", "a b", ".x",
];
const NUMBER_KEYS: &[&str] = &[
    "concurrency",
    "batch-size",
    "batch-linger-ms",
    "ack-wait-ms",
    "max-attempts",
    "backoff-ms",
    "backoff-max-ms",
    "memory-limit-mib",
    "handler-timeout-ms",
    "max-message-bytes",
];

fn number(u: &mut Unstructured<'_>) -> arbitrary::Result<Value> {
    // Mostly in range, so that whole files get accepted too.
    Ok(Value::Integer(match u.int_in_range(0..=7)? {
        0 => 0,
        1 => -1,
        2 => i64::arbitrary(u)?,
        3 => u.int_in_range(1..=5000)?,
        _ => u.int_in_range(1..=1000)?,
    }))
}

fn any_value(u: &mut Unstructured<'_>) -> arbitrary::Result<Value> {
    Ok(match u.int_in_range(0..=4)? {
        0 => Value::String(String::arbitrary(u)?),
        1 => number(u)?,
        2 => Value::Boolean(bool::arbitrary(u)?),
        3 => Value::Float(f64::arbitrary(u)?),
        _ => Value::Array(vec![Value::String(String::arbitrary(u)?)]),
    })
}

fn channels(u: &mut Unstructured<'_>) -> arbitrary::Result<Value> {
    let mut list = Vec::new();
    for _ in 0..u.int_in_range(0..=3)? {
        list.push(Value::String(u.choose(CHANNELS)?.to_string()));
    }
    Ok(Value::Array(list))
}

/// Sets `key` in `t` about half the time.
fn maybe(
    u: &mut Unstructured<'_>,
    t: &mut Table,
    key: &str,
    value: impl FnOnce(&mut Unstructured<'_>) -> arbitrary::Result<Value>,
) -> arbitrary::Result<()> {
    if u.arbitrary()? {
        let v = value(u)?;
        t.insert(key.to_string(), v);
    }
    Ok(())
}

fn name(u: &mut Unstructured<'_>) -> arbitrary::Result<String> {
    Ok(u.choose(NAMES)?.to_string())
}

/// A config file made of the config's own sections and keys (plus the odd
/// unknown one), with values of every type.
fn structured(u: &mut Unstructured<'_>) -> arbitrary::Result<String> {
    let mut root = Table::new();
    let mut host = Table::new();
    maybe(u, &mut host, "listen", |u| {
        Ok(Value::String(
            u.choose(&["127.0.0.1:8080", "[::1]:0", "nowhere", ""])?
                .to_string(),
        ))
    })?;
    maybe(u, &mut host, "ingress-client", |u| {
        Ok(Value::String(name(u)?))
    })?;
    maybe(u, &mut host, "max-ingress-bytes", number)?;
    maybe(u, &mut host, "summary-secs", number)?;
    maybe(u, &mut host, "unknown-key", any_value)?;
    root.insert("host".into(), Value::Table(host));

    let mut clients = Table::new();
    for _ in 0..u.int_in_range(0..=3)? {
        let mut c = Table::new();
        maybe(u, &mut c, "backend", |u| {
            Ok(Value::String(u.choose(BACKENDS)?.to_string()))
        })?;
        maybe(u, &mut c, "url", |u| {
            Ok(Value::String(String::arbitrary(u)?))
        })?;
        maybe(u, &mut c, "timeout-ms", number)?;
        let mut options = Table::new();
        for _ in 0..u.int_in_range(0..=2)? {
            options.insert(u.choose(SAMPLE_OPTIONS)?.to_string(), any_value(u)?);
        }
        c.insert("options".into(), Value::Table(options));
        clients.insert(name(u)?, Value::Table(c));
    }
    root.insert("clients".into(), Value::Table(clients));

    let mut guests = Table::new();
    for _ in 0..u.int_in_range(0..=3)? {
        let mut g = Table::new();
        maybe(u, &mut g, "component", |_| {
            Ok(Value::String("g.wasm".into()))
        })?;
        maybe(u, &mut g, "client", |u| Ok(Value::String(name(u)?)))?;
        maybe(u, &mut g, "clients", |u| {
            Ok(Value::Array(vec![Value::String(name(u)?)]))
        })?;
        maybe(u, &mut g, "subscribe", channels)?;
        maybe(u, &mut g, "allow-subscribe", channels)?;
        maybe(u, &mut g, "allow-publish", channels)?;
        maybe(u, &mut g, "dead-letter", |u| {
            Ok(Value::String(u.choose(CHANNELS)?.to_string()))
        })?;
        maybe(u, &mut g, "mode", |u| {
            Ok(Value::String(
                u.choose(&["pub-sub", "point-to-point", "broadcast"])?
                    .to_string(),
            ))
        })?;
        maybe(u, &mut g, "ack", |u| {
            Ok(Value::String(
                u.choose(&["auto", "manual", "never"])?.to_string(),
            ))
        })?;
        for key in NUMBER_KEYS {
            maybe(u, &mut g, key, number)?;
        }
        maybe(u, &mut g, "inherit-env", any_value)?;
        maybe(u, &mut g, "max-atempts", number)?;
        guests.insert(name(u)?, Value::Table(g));
    }
    root.insert("guests".into(), Value::Table(guests));
    Ok(toml::to_string(&root).unwrap_or_default())
}

/// What `validate` promises about a config it accepts.
fn check_invariants(c: &Config) {
    if let Some(ingress) = &c.host.ingress_client {
        assert!(c.clients.contains_key(ingress));
    }
    let registry = courier_registry::builtin();
    for client in c.clients.values() {
        assert!(!client.timeout.is_zero());
        assert!(!client.remote || client.url.is_some());
        assert_eq!(client.options.kind(), client.backend);
        assert!(registry.get(client.backend).is_some());
    }
    let known = |n: &str| c.clients.contains_key(n) || (c.clients.is_empty() && n == "default");
    for g in c.guests.values() {
        assert!(known(&g.client));
        assert!(g.granted_clients().iter().all(|n| known(n)));
        assert!((1..=1024).contains(&g.concurrency));
        assert!(g.batch_size >= 1);
        assert!(g.max_attempts >= 1);
        assert!((1..=4096).contains(&g.memory_limit_mib));
        assert!(!g.handler_timeout.is_zero() && !g.ack_wait.is_zero());
        assert!(g.max_message_bytes >= 1);
        assert!(g.backoff_max >= g.backoff_first);
        for attempt in [0, 1, 2, 30, u32::MAX] {
            assert!(g.backoff(attempt) <= g.backoff_max);
        }
        let allow = g.subscribe_allow_list();
        for p in &g.subscribe {
            assert!(allowed_pattern(allow, p), "{p:?} outside its allow-list");
        }
        if let Some(dl) = &g.dead_letter {
            assert!(dl.is_literal());
        }
    }
}

fn check(text: &str) {
    match Config::from_toml(text) {
        Ok(c) => check_invariants(&c),
        Err(ConfigError::Invalid { key, message, .. }) => {
            assert!(!message.is_empty());
            assert!(
                ["host.", "clients.", "guests."]
                    .iter()
                    .any(|s| key.starts_with(s)),
                "the error names no key of the file: `{key}`"
            );
        }
        Err(ConfigError::Parse { message, .. }) => assert!(!message.is_empty()),
        Err(e @ ConfigError::Read { .. }) => panic!("no file was read: {e}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    // The first byte picks raw text or a structured file.
    match u.arbitrary::<bool>() {
        Ok(true) => {
            if let Ok(text) = structured(&mut u) {
                check(&text);
            }
        }
        _ => {
            if let Ok(text) = std::str::from_utf8(data.get(1..).unwrap_or_default()) {
                check(text);
            }
        }
    }
});
