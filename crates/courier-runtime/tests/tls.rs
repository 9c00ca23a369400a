//! TLS with credentials on every remote backend, against private brokers
//! that speak TLS only, with certificates made at test time: nats-server
//! (`--tlsverify`: mutual TLS, and a user), redis-server (`tls-port`, an ACL
//! user), Mosquitto (a TLS listener and a password file) and a RabbitMQ node
//! of the test's own (an `ssl` listener).
//!
//! For each broker: the right password over TLS, trusting the test's
//! authority (`tls.ca-file`), passes a message through a guest; a wrong
//! password, an untrusted authority, a `server-name` the certificate does
//! not hold and plain text to the TLS port each fail as a connection error
//! within the client's timeout, naming the cause; `insecure-skip-verify`
//! connects whatever the authority, with a warning in the log; no password
//! reaches an error or the log.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use courier_broker::{ErrorKind, Message};
use courier_runtime::{Config, Runtime};
use courier_test_support::logs::{self, logged};
use courier_test_support::messages::{next, text, watch};
use courier_test_support::private::PrivateBroker;
use courier_test_support::{Broker, Need, Trials, guests, unique};

/// The client's timeout: every failure must come well within twice this.
const TIMEOUT_MS: u64 = 3000;

/// How a client is configured for one attempt.
struct Attempt<'a> {
    url: String,
    /// The `tls` table's entries, as TOML (`ca-file = "…", …`), or `None`
    /// for no `tls` entry.
    tls: Option<String>,
    what: &'a str,
}

/// The config of an `uppercase` guest whose default client is `backend`,
/// its url read from the environment variable `var`.
fn config(backend: &str, var: &str, tls: Option<&str>, ns: &str) -> String {
    let tls = tls
        .map(|t| format!(", tls = {{ {t} }}"))
        .unwrap_or_default();
    guests::fill(&format!(
        r#"
        clients.default = {{ backend = "{backend}", url-env = "{var}", timeout-ms = {TIMEOUT_MS}, options = {{ connect-timeout-ms = {TIMEOUT_MS} }}{tls} }}
        [guests.up]
        component = "{{uppercase}}"
        subscribe = ["{ns}.in"]
        allow-publish = ["{ns}.>"]
        env = {{ OUT = "{ns}.out" }}
        "#
    ))
}

/// A runtime for `attempt`, its url given through the environment.
fn runtime(broker: Broker, attempt: &Attempt<'_>, ns: &str) -> Runtime {
    let backend = broker.backend();
    let var = format!("COURIER_TEST_TLS_{}_URL", backend.to_uppercase());
    // SAFETY: each variable is this test's own; nothing else reads it.
    unsafe { std::env::set_var(&var, &attempt.url) };
    let config = Config::from_toml(&config(backend, &var, attempt.tls.as_deref(), ns))
        .unwrap_or_else(|e| panic!("{backend} ({}): config refused: {e:#}", attempt.what));
    Runtime::new(config).unwrap()
}

/// The message passes through the guest over the attempt's connection.
async fn round_trip(broker: Broker, attempt: Attempt<'_>) {
    let ns = unique("tls");
    let runtime = runtime(broker, &attempt, &ns);
    let client = match runtime.clients().get("default").await {
        Ok(client) => client,
        Err(e) => panic!("{:?} ({}): did not connect: {e}", broker, attempt.what),
    };
    runtime.start().await.expect("the guest starts");
    let mut out = watch(client.as_ref(), &format!("{ns}.out")).await;
    client
        .publish(vec![Message::new(format!("{ns}.in"), "over tls")])
        .await
        .unwrap();
    assert_eq!(text(&next(&mut out).await), "OVER TLS", "{:?}", broker);
    runtime.stop().await;
}

/// Messages pass through the guest before and after the broker restarts:
/// the client reconnects over TLS with its credentials (and logs the loss
/// and the recovery, without the password).
async fn through_a_restart(b: &mut PrivateBroker, attempt: Attempt<'_>) {
    let broker = b.kind();
    let ns = unique("tls");
    let runtime = runtime(broker, &attempt, &ns);
    let client = runtime.clients().get("default").await.unwrap();
    runtime.start().await.expect("the guest starts");
    let mut out = watch(client.as_ref(), &format!("{ns}.out")).await;
    client
        .publish(vec![Message::new(format!("{ns}.in"), "before")])
        .await
        .unwrap();
    assert_eq!(text(&next(&mut out).await), "BEFORE");
    b.stop();
    b.restart();
    // Until the guest's subscription and the test's are back, a message may
    // go nowhere (pub/sub): send one each 200 ms until one comes through.
    let deadline = Instant::now() + Duration::from_secs(60);
    let through = loop {
        assert!(
            Instant::now() < deadline,
            "{broker:?}: nothing came through within a minute of the restart"
        );
        let _ = client
            .publish(vec![Message::new(format!("{ns}.in"), "after")])
            .await;
        match tokio::time::timeout(Duration::from_millis(200), out.next()).await {
            Ok(Some(Ok(delivery))) => break delivery,
            // Reported while the subscription reconnects.
            Ok(Some(Err(_))) | Err(_) => continue,
            Ok(None) => panic!("{broker:?}: the subscription ended"),
        }
    };
    assert_eq!(text(&through.message), "AFTER");
    through.acker.ack().await.unwrap();
    // The loss was logged (and the log is searched for passwords later).
    let backend = format!("\"{}\"", broker.backend());
    assert!(
        logged()
            .lines()
            .any(|l| l.contains("broker connection lost") && l.contains(&backend)),
        "{broker:?}: the restart was not logged"
    );
    runtime.stop().await;
}

/// The attempt fails as a connection error within the timeout, its text
/// (with its causes) containing one of `causes`.
async fn refused(broker: Broker, attempt: Attempt<'_>, causes: &[&str]) -> String {
    let ns = unique("tls");
    let runtime = runtime(broker, &attempt, &ns);
    let started = Instant::now();
    let err = match runtime.clients().get("default").await {
        Ok(_) => panic!("{:?} ({}): connected", broker, attempt.what),
        Err(e) => e,
    };
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(2 * TIMEOUT_MS),
        "{:?} ({}): refused after {took:?}, past the client's timeout",
        broker,
        attempt.what
    );
    assert_eq!(
        err.kind(),
        ErrorKind::Connection,
        "{:?} ({}): {err}",
        broker,
        attempt.what
    );
    let shown = chain(&err);
    assert!(
        shown.contains("client `default`"),
        "{broker:?}: the error does not name the client: {shown}"
    );
    eprintln!("{broker:?} ({}): refused in {took:?}: {err}", attempt.what);
    let lower = shown.to_lowercase();
    assert!(
        causes.iter().any(|c| lower.contains(&c.to_lowercase())),
        "{:?} ({}): the error does not name the cause (one of {causes:?}): {shown}",
        broker,
        attempt.what
    );
    shown
}

/// An error and its causes, as text.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = format!("{err} {err:?}");
    let mut source = err.source();
    while let Some(e) = source {
        text.push_str(&format!(" / {e}"));
        source = e.source();
    }
    text
}

fn file(path: &Path) -> String {
    path.display().to_string()
}

/// Every case of the module doc on `broker`; `mutual` when the broker
/// requires a client certificate, `server_name` when the backend takes a
/// `server-name`.
async fn every_case(broker: Broker, password: &str, mutual: bool, server_name: bool) {
    let user = "courier";
    let mut b = PrivateBroker::start_tls(broker, user, password);
    let (ca, other_ca) = (b.certs().ca(), b.certs().other_ca());
    let (client_cert, client_key) = (b.certs().client_cert(), b.certs().client_key());
    let identity = if mutual {
        format!(
            r#", cert-file = "{}", key-file = "{}""#,
            file(&client_cert),
            file(&client_key)
        )
    } else {
        String::new()
    };
    let trusting = |ca: &Path| format!(r#"ca-file = "{}"{identity}"#, file(ca));
    let good = b.tls_url_as(user, password);

    round_trip(
        broker,
        Attempt {
            url: good.clone(),
            tls: Some(trusting(&ca)),
            what: "the right password over TLS",
        },
    )
    .await;
    through_a_restart(
        &mut b,
        Attempt {
            url: good.clone(),
            tls: Some(trusting(&ca)),
            what: "a broker restart",
        },
    )
    .await;
    // `tls = { … }` with the plain scheme turns TLS on too.
    round_trip(
        broker,
        Attempt {
            url: b.url_as(user, password),
            tls: Some(trusting(&ca)),
            what: "a plain scheme with a tls table",
        },
    )
    .await;

    let wrong = format!("{password}-wrong");
    let shown = refused(
        broker,
        Attempt {
            url: b.tls_url_as(user, &wrong),
            tls: Some(trusting(&ca)),
            what: "a wrong password",
        },
        &[
            "authorization",
            "auth",
            "password",
            "access_refused",
            "not authorized",
            "badusername",
            "refused",
        ],
    )
    .await;
    assert!(
        !shown.contains(&wrong) && !shown.contains(password),
        "{broker:?}: a password in the error: {shown}"
    );
    refused(
        broker,
        Attempt {
            url: good.clone(),
            tls: Some(trusting(&other_ca)),
            what: "an untrusted authority",
        },
        &["certificate", "unknownissuer", "unknown issuer"],
    )
    .await;
    if server_name {
        refused(
            broker,
            Attempt {
                url: good.clone(),
                tls: Some(format!(
                    r#"{}, server-name = "broker.elsewhere.example""#,
                    trusting(&ca)
                )),
                what: "a server name the certificate does not hold",
            },
            &["certificate", "notvalidforname", "not valid for"],
        )
        .await;
        round_trip(
            broker,
            Attempt {
                url: good.clone(),
                tls: Some(format!(r#"{}, server-name = "localhost""#, trusting(&ca))),
                what: "a server name the certificate holds",
            },
        )
        .await;
    }
    refused(
        broker,
        Attempt {
            url: b.url_as(user, password),
            tls: None,
            what: "plain text to the TLS port",
        },
        &[
            "closed",
            "reset",
            "eof",
            "broken pipe",
            "tls",
            "certificate",
            "no answer",
            "protocol",
            "i/o",
            "io error",
            "unexpected",
            "disconnected",
            "failed to parse",
        ],
    )
    .await;
    if mutual {
        refused(
            broker,
            Attempt {
                url: good.clone(),
                tls: Some(format!(r#"ca-file = "{}""#, file(&ca))),
                what: "no client certificate where one is required",
            },
            &["certificate", "tls", "closed", "reset", "eof", "handshake"],
        )
        .await;
    }
    round_trip(
        broker,
        Attempt {
            url: good,
            tls: Some(format!(
                r#"ca-file = "{}", insecure-skip-verify = true{identity}"#,
                file(&other_ca)
            )),
            what: "insecure-skip-verify",
        },
    )
    .await;
    let log = logged();
    assert!(
        log.contains("TLS certificate verification is OFF"),
        "{broker:?}: insecure-skip-verify was not logged"
    );
    assert!(
        !log.contains(password) && !log.contains(&wrong),
        "{broker:?}: a password in the log"
    );
}

fn main() -> ExitCode {
    logs::capture();
    let mut trials = Trials::new();
    trials.tokio("nats", &[Need::Installed(Broker::Nats)], || {
        every_case(Broker::Nats, "nats-tls-pw-4Rw", true, true)
    });
    trials.tokio("redis", &[Need::Installed(Broker::Redis)], || {
        // The Redis client verifies the url's host name only: no server-name.
        every_case(Broker::Redis, "redis-tls-pw-8Jq", false, false)
    });
    trials.tokio(
        "mqtt",
        &[
            Need::Installed(Broker::Mosquitto),
            Need::Tool("mosquitto_passwd"),
        ],
        || every_case(Broker::Mosquitto, "mqtt-tls-pw-2Lp", false, true),
    );
    trials.tokio(
        "amqp",
        &[Need::Installed(Broker::RabbitMq), Need::Tool("rabbitmqctl")],
        || every_case(Broker::RabbitMq, "amqp-tls-pw-6Hs", false, true),
    );
    trials.run()
}
