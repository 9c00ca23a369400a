//! Reading configurations: what is accepted, and how refusals name the key
//! and the line.

use std::time::Duration;

use super::*;

fn err(text: &str) -> String {
    Config::from_toml(text).unwrap_err().to_string()
}

#[test]
fn full_config_parses() {
    let c = Config::from_toml(
        r#"
        host = { listen = "127.0.0.1:0", sync = "os" }
        clients.default = { backend = "embedded" }
        [guests.up]
        component = "up.wasm"
        subscribe = ["in.*"]
        allow-subscribe = ["in.>"]
        allow-publish = ["out"]
        mode = "point-to-point"
        max-attempts = 3
        ack-wait-ms = 1500
        dead-letter = "dlq"
        "#,
    )
    .unwrap();
    let g = &c.guests["up"];
    assert_eq!(g.mode, DeliveryMode::PointToPoint);
    assert_eq!(g.max_attempts, 3);
    assert_eq!(g.batch_size, 100);
    assert_eq!(g.ack_wait(), Duration::from_millis(1500));
    assert_eq!(g.subscribe[0].as_str(), "in.*");
    assert_eq!(g.dead_letter.as_ref().unwrap().as_str(), "dlq");
    assert_eq!(g.granted_clients(), vec!["default".to_string()]);
    assert_eq!(c.host.sync, courier_embedded::SyncPolicy::Os);
    assert_eq!(c.clients["default"].backend, "embedded");
}

#[test]
fn unknown_key_is_named_with_its_line() {
    let e = err("[guests.a]\ncomponent = \"a.wasm\"\nmax-atempts = 3\n");
    assert!(e.contains("max-atempts"), "{e}");
    assert!(e.contains("line 3"), "{e}");
}

#[test]
fn bad_values_name_the_key() {
    let e = err("[guests.a]\nclient = \"nope\"\n");
    assert!(e.contains("guests.a.client") && e.contains("nope"), "{e}");
    let e = err("[guests.a]\nsubscribe = [\"a..b\"]\n");
    assert!(e.contains("line 2") && e.contains("subscribe"), "{e}");
    let e = err("[guests.a]\nsubscribe = [\"x\"]\nallow-subscribe = [\"y\"]\n");
    assert!(e.contains("outside allow-subscribe"), "{e}");
    let e = err("[guests.a]\nbatch-size = 0\n");
    assert!(e.contains("guests.a.batch-size"), "{e}");
    let e = err("[guests.a]\nack-wait-ms = 0\n");
    assert!(e.contains("line 2") && e.contains("above 0"), "{e}");
    let e = err("[guests.a]\ndead-letter = \"dlq.*\"\n");
    assert!(e.contains("line 2") && e.contains("dead-letter"), "{e}");
    let e = err("[host]\nlisten = \"nowhere\"\n");
    assert!(e.contains("line 2") && e.contains("listen"), "{e}");
    let e = err("[host]\nsync = \"sometimes\"\n");
    assert!(e.contains("line 2") && e.contains("sometimes"), "{e}");
}

#[test]
fn unknown_backends_name_the_ones_this_build_has() {
    let e = err("[clients.x]\nbackend = \"carrier-pigeon\"\n");
    assert!(
        e.contains("line 2 `clients.x.backend`") && e.contains("carrier-pigeon"),
        "{e}"
    );
    assert!(e.contains("embedded"), "{e}");
}

#[test]
fn embedded_clients_take_no_options() {
    let e = err("[clients.x]\nbackend = \"embedded\"\n[clients.x.options]\ndurable = true\n");
    assert!(e.contains("line 4 `clients.x.options.durable`"), "{e}");
}

#[cfg(all(
    feature = "nats",
    feature = "redis",
    feature = "amqp",
    feature = "mqtt",
    feature = "kafka"
))]
#[test]
fn bad_backend_option_values_are_refused_when_read_naming_key_and_line() {
    let cases = [
        (
            "[clients.q]\nbackend = \"nats\"\nurl = \"nats://127.0.0.1:4222\"\n\n[clients.q.options]\njetstream = \"yes\"\n",
            "line 6 `clients.q.options.jetstream`",
        ),
        (
            "[clients.q]\nbackend = \"nats\"\nurl = \"nats://h\"\noptions = { jetstream = true, connect-timeout-ms = 0 }\n",
            "line 4 `clients.q.options.connect-timeout-ms`",
        ),
        (
            "[clients.r]\nbackend = \"redis\"\nurl = \"redis://h\"\n[clients.r.options]\nstreams = true\nmaxlen = -5\n",
            "line 6 `clients.r.options.maxlen`",
        ),
        (
            "[clients.m]\nbackend = \"mqtt\"\nurl = \"mqtt://h\"\n[clients.m.options]\nqos = 3\n",
            "line 5 `clients.m.options.qos`",
        ),
        (
            "[clients.a]\nbackend = \"amqp\"\nurl = \"amqp://h\"\n[clients.a.options]\nprefetch = 70000\n",
            "line 5 `clients.a.options.prefetch`",
        ),
        (
            "[clients.a]\nbackend = \"amqp\"\nurl = \"amqp://h\"\n[clients.a.options]\nexchnage = \"x\"\n",
            "line 5 `clients.a.options.exchnage`",
        ),
        (
            "[clients.k]\nbackend = \"kafka\"\nurl = \"kafka://h:9092\"\n[clients.k.options]\nacks = \"some\"\n",
            "line 5 `clients.k.options.acks`",
        ),
        (
            "[clients.k]\nbackend = \"kafka\"\nurl = \"kafka://h:9092\"\n[clients.k.options]\nlinger = 5\n",
            "line 5 `clients.k.options.linger`",
        ),
        // A check across keys names the options table and its line.
        (
            "[clients.q]\nbackend = \"nats\"\nurl = \"nats://h\"\n[clients.q.options]\nstream = \"S\"\n",
            "line 4 `clients.q.options`",
        ),
    ];
    for (text, expected) in cases {
        let e = err(text);
        assert!(e.contains(expected), "expected {expected:?} in: {e}");
    }
    let e = err("[clients.q]\nbackend = \"nats\"\n");
    assert!(
        e.contains("`clients.q.url`") && e.contains("needs a url"),
        "{e}"
    );
}

#[cfg(all(feature = "nats", feature = "redis"))]
#[test]
fn subscriptions_are_checked_against_their_client() {
    const REDIS: &str = r#"{ backend = "redis", url = "redis://h" }"#;
    const STREAMS: &str =
        r#"{ backend = "redis", url = "redis://h", options = { streams = true } }"#;
    const NATS: &str = r#"{ backend = "nats", url = "nats://h" }"#;
    // (client, the guest's settings beside `subscribe`, what the error says)
    let refused = [
        (
            REDIS,
            r#"mode = "point-to-point""#,
            "guests.g.mode` … not supported",
        ),
        (
            STREAMS,
            "",
            "guests.g.subscribe` … wildcards are not supported",
        ),
        (
            STREAMS,
            r#"subscribe-options = { start = "yesterday" }"#,
            "guests.g.subscribe-options` … yesterday",
        ),
        (
            NATS,
            r#"subscribe-options = { durable = "d" }"#,
            "guests.g.subscribe-options` … JetStream",
        ),
    ];
    let config = |client: &str, settings: &str| {
        let subscribe = if client == STREAMS && settings.is_empty() {
            "in.*"
        } else {
            "in"
        };
        format!(
            "clients.default = {client}\n[guests.g]\nsubscribe = [\"{subscribe}\"]\n{settings}\n"
        )
    };
    for (client, settings, expected) in refused {
        let e = err(&config(client, settings));
        let (key, what) = expected.split_once(" … ").unwrap();
        assert!(e.contains(key) && e.contains(what), "{expected}: {e}");
    }
    // Dispatcher extensions are the dispatcher's, on every backend.
    Config::from_toml(&config(NATS, "subscribe-options = { ack-wait-ms = 100 }")).unwrap();
}

#[test]
fn backoff_doubles_up_to_the_cap() {
    let g = GuestConfig {
        backoff_first: Duration::from_millis(100),
        backoff_max: Duration::from_millis(350),
        ..GuestConfig::default()
    };
    assert_eq!(g.backoff(1), Duration::from_millis(100));
    assert_eq!(g.backoff(2), Duration::from_millis(200));
    assert_eq!(g.backoff(3), Duration::from_millis(350));
    assert_eq!(g.backoff(60), Duration::from_millis(350));
}

#[cfg(feature = "nats")]
#[test]
fn a_url_with_credentials_can_come_from_the_environment_or_a_file() {
    let url = "nats://alice:s3cret-pw@127.0.0.1:4222";
    // The variable's name is this test's own: tests run in threads of one
    // process, and no other reads it.
    // SAFETY: no other thread reads or writes this variable.
    unsafe { std::env::set_var("COURIER_CONFIG_TEST_NATS_URL", url) };
    let c = Config::from_toml(
        "[clients.q]\nbackend = \"nats\"\nurl-env = \"COURIER_CONFIG_TEST_NATS_URL\"\n",
    )
    .unwrap();
    assert_eq!(c.clients["q"].url.as_deref(), Some(url));
    // The password never shows in Debug output.
    let shown = format!("{c:?}");
    assert!(
        !shown.contains("s3cret-pw") && shown.contains("<redacted>@127.0.0.1"),
        "{shown}"
    );

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("url"), format!("{url}\n")).unwrap();
    let file = dir.path().join("courier.toml");
    std::fs::write(
        &file,
        "[clients.q]\nbackend = \"nats\"\nurl-file = \"url\"\n",
    )
    .unwrap();
    let c = Config::from_file(&file).unwrap();
    assert_eq!(c.clients["q"].url.as_deref(), Some(url));

    let e = err("[clients.q]\nbackend = \"nats\"\nurl-env = \"COURIER_CONFIG_TEST_UNSET\"\n");
    assert!(
        e.contains("line 2 `clients.q.url-env`") && e.contains("not set"),
        "{e}"
    );
    let e = err("[clients.q]\nbackend = \"nats\"\nurl = \"nats://h\"\nurl-file = \"u\"\n");
    assert!(e.contains("`clients.q.url`") && e.contains("one of"), "{e}");
}

#[test]
fn the_ingress_needs_tokens_to_listen_beyond_loopback() {
    let e = err("[host]\nlisten = \"0.0.0.0:8080\"\n");
    assert!(
        e.contains("`host.listen`") && e.contains("ingress-tokens"),
        "{e}"
    );
    Config::from_toml("[host]\nlisten = \"127.0.0.1:8080\"\n").unwrap();
    // SAFETY: this variable is this test's own; nothing else reads it.
    unsafe { std::env::set_var("COURIER_CONFIG_TEST_TOKEN", "a-token-long-enough-0123") };
    let c = Config::from_toml(
        "[host]\nlisten = \"0.0.0.0:8080\"\n[host.ingress-tokens.ci]\n\
         token-env = \"COURIER_CONFIG_TEST_TOKEN\"\nallow-publish = [\"in.>\"]\n",
    )
    .unwrap();
    let t = &c.ingress_tokens["ci"];
    assert_eq!(t.token.expose(), "a-token-long-enough-0123");
    assert!(!format!("{c:?}").contains("a-token-long-enough"));
    // SAFETY: as above.
    unsafe { std::env::set_var("COURIER_CONFIG_TEST_SHORT_TOKEN", "short") };
    let e = err(
        "[host.ingress-tokens.ci]\ntoken-env = \"COURIER_CONFIG_TEST_SHORT_TOKEN\"\nallow-publish = []\n",
    );
    assert!(
        e.contains("host.ingress-tokens.ci") && e.contains("16"),
        "{e}"
    );
}

#[test]
fn tls_settings_are_read_and_checked_when_read() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("junk.pem"), "not a certificate").unwrap();
    let read = |text: &str| {
        let file = dir.path().join("courier.toml");
        std::fs::write(&file, text).unwrap();
        Config::from_file(&file)
    };
    let c = read(
        "[clients.q]\nbackend = \"nats\"\nurl = \"nats://h:4222\"\n\
         tls = { insecure-skip-verify = true, server-name = \"broker.internal\" }\n",
    )
    .unwrap();
    let tls = c.clients["q"].tls.as_ref().unwrap();
    assert!(tls.insecure());
    assert_eq!(tls.server_name(), Some("broker.internal"));
    let c = read("[clients.q]\nbackend = \"nats\"\nurl = \"nats://h\"\ntls = false\n").unwrap();
    assert!(c.clients["q"].tls.is_none());

    let cases = [
        ("tls = \"yes\"", "`true`, `false` or a table"),
        ("tls = { ca-fle = \"x\" }", "ca-fle"),
        ("tls = { ca-file = \"missing.pem\" }", "cannot read"),
        ("tls = { ca-file = \"junk.pem\" }", "no certificate in it"),
        ("tls = { cert-file = \"junk.pem\" }", "go together"),
    ];
    for (line, expected) in cases {
        let text = format!("[clients.q]\nbackend = \"nats\"\nurl = \"nats://h\"\n{line}\n");
        let e = read(&text).unwrap_err().to_string();
        assert!(e.contains(expected) && e.contains("line 4"), "{line}: {e}");
    }
    let e = read(
        "[clients.q]\nbackend = \"redis\"\nurl = \"redis://h\"\ntls = { server-name = \"x\" }\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("clients.q.tls") && e.contains("server-name"),
        "{e}"
    );
    let e = read("[clients.q]\nbackend = \"embedded\"\ntls = true\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("clients.q.tls") && e.contains("inside Courier"),
        "{e}"
    );
}

#[test]
fn tls_files_are_read_when_the_config_is() {
    let dir = tempfile::tempdir().unwrap();
    // The PEM blocks are read, not yet checked as certificates and keys
    // (the TLS server does that when it starts).
    std::fs::write(
        dir.path().join("cert.pem"),
        "-----BEGIN CERTIFICATE-----\nAAEC\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("key.pem"),
        "-----BEGIN PRIVATE KEY-----\nAAEC\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("empty.pem"), "no PEM here\n").unwrap();
    let read = |host: &str| {
        let file = dir.path().join("courier.toml");
        std::fs::write(&file, format!("[host]\nsummary-secs = 0\n{host}")).unwrap();
        Config::from_file(&file)
    };
    let c = read("tls-cert-file = \"cert.pem\"\ntls-key-file = \"key.pem\"\n").unwrap();
    let tls = c.tls.as_ref().unwrap();
    assert_eq!(tls.cert_chain().len(), 1);
    assert!(!format!("{c:?}").contains("AAEC"), "{c:?}");
    assert!(read("").unwrap().tls.is_none());
    let refused = [
        (
            "tls-cert-file = \"cert.pem\"\n",
            "line 3 `host.tls-cert-file`: needs `tls-key-file` too",
        ),
        (
            "tls-key-file = \"key.pem\"\n",
            "line 3 `host.tls-key-file`: needs `tls-cert-file` too",
        ),
        (
            "tls-cert-file = \"missing.pem\"\ntls-key-file = \"key.pem\"\n",
            "line 3 `host.tls-cert-file`: cannot read",
        ),
        (
            "tls-cert-file = \"empty.pem\"\ntls-key-file = \"key.pem\"\n",
            "line 3 `host.tls-cert-file`: ",
        ),
        (
            "tls-cert-file = \"cert.pem\"\ntls-key-file = \"cert.pem\"\n",
            "line 4 `host.tls-key-file`: ",
        ),
    ];
    for (host, expected) in refused {
        let e = read(host).unwrap_err().to_string();
        assert!(e.contains(expected), "{host:?}: {e}");
    }
    let e = read("tls-cert-file = \"empty.pem\"\ntls-key-file = \"key.pem\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("holds no PEM CERTIFICATE"), "{e}");
    let e = read("tls-cert-file = \"cert.pem\"\ntls-key-file = \"cert.pem\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("holds no PEM private key"), "{e}");
}
