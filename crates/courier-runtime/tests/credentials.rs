//! Credentials on every backend: a broker that lets in one user, its
//! password given through `url-env` (never written in the file). The right
//! password passes a message through a guest; a wrong one is a connection
//! error within the client's timeout; neither password shows in an error or
//! in the log.
//!
//! NATS (`--user`/`--pass`), Redis (an ACL user, the default user off) and
//! Mosquitto (a password file, no anonymous clients) run as private brokers;
//! on the shared RabbitMQ the test adds a user of its own with `rabbitmqctl`.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use courier_broker::{ErrorKind, Message};
use courier_runtime::{Config, Runtime};
use courier_test_support::logs::{self, logged};
use courier_test_support::messages::{next, text, watch};
use courier_test_support::private::PrivateBroker;
use courier_test_support::{Broker, Need, Trials, guests, unique};

/// The config of an `uppercase` guest whose default client is `backend`,
/// with its url read from the environment variable `var`.
fn config(backend: &str, var: &str, ns: &str) -> String {
    guests::fill(&format!(
        r#"
        clients.default = {{ backend = "{backend}", url-env = "{var}", timeout-ms = 3000, options = {{ connect-timeout-ms = 3000 }} }}
        [guests.up]
        component = "{{uppercase}}"
        subscribe = ["{ns}.in"]
        allow-publish = ["{ns}.>"]
        env = {{ OUT = "{ns}.out" }}
        "#
    ))
}

/// Sets the environment variable `var` to `url`. Each test has a variable
/// of its own.
fn set_url(var: &str, url: &str) {
    // SAFETY: each variable is this test's own; nothing else reads it.
    unsafe { std::env::set_var(var, url) };
}

/// The right password passes a message through the guest; a wrong one is
/// refused as a connection error, quickly, without the password in it; no
/// password reaches the log.
async fn credentials_are_used_and_never_shown(
    broker: Broker,
    url_with: impl Fn(&str) -> String,
    password: &str,
) {
    let ns = unique("cred");
    let backend = broker.backend();
    let var = format!("COURIER_TEST_{}_URL", backend.to_uppercase());

    set_url(&var, &url_with(password));
    let runtime = Runtime::new(Config::from_toml(&config(backend, &var, &ns)).unwrap()).unwrap();
    let client = runtime
        .clients()
        .get("default")
        .await
        .expect("the right password connects");
    runtime.start().await.expect("the guest starts");
    let mut out = watch(client.as_ref(), &format!("{ns}.out")).await;
    client
        .publish(vec![Message::new(format!("{ns}.in"), "let me in")])
        .await
        .unwrap();
    assert_eq!(text(&next(&mut out).await), "LET ME IN");
    runtime.stop().await;

    let wrong = format!("{password}-wrong");
    set_url(&var, &url_with(&wrong));
    let runtime = Runtime::new(Config::from_toml(&config(backend, &var, &ns)).unwrap()).unwrap();
    let started = Instant::now();
    let err = match runtime.clients().get("default").await {
        Ok(_) => panic!("{backend}: a wrong password connected"),
        Err(e) => e,
    };
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(6),
        "{backend}: refused after {took:?}, past the client's timeout"
    );
    assert_eq!(err.kind(), ErrorKind::Connection, "{backend}: {err}");
    let shown = format!("{err} {err:?} {:?}", std::error::Error::source(&err));
    assert!(
        !shown.contains(password) && !shown.contains(&wrong),
        "{backend}: a password in the error: {shown}"
    );
    assert!(
        runtime.start().await.is_err(),
        "{backend}: started without its broker"
    );
    let log = logged();
    assert!(
        !log.contains(password) && !log.contains(&wrong),
        "{backend}: a password in the log:\n{log}"
    );
}

/// NATS with an NKey: the seed, read from `nkey-seed-env`, passes a message
/// through a guest; another key's seed is refused as a connection error
/// within the timeout; no seed reaches an error or the log. A `.creds`
/// file that cannot be read is refused naming the option.
async fn nats_nkeys_are_used_and_never_shown() {
    let ns = unique("nkey");
    let user = nkeys::KeyPair::new_user();
    let seed = user.seed().unwrap();
    let broker = PrivateBroker::start_nkey(&user.public_key());
    let config = |options: &str| {
        let text = guests::fill(&format!(
            r#"
            clients.default = {{ backend = "nats", url = "{}", timeout-ms = 3000, options = {{ connect-timeout-ms = 3000, {options} }} }}
            [guests.up]
            component = "{{uppercase}}"
            subscribe = ["{ns}.in"]
            allow-publish = ["{ns}.>"]
            env = {{ OUT = "{ns}.out" }}
            "#,
            broker.url_as("x", "y").replacen("x:y@", "", 1)
        ));
        Runtime::new(Config::from_toml(&text).unwrap()).unwrap()
    };
    let var = "COURIER_TEST_NKEY_SEED";
    // SAFETY: this variable is this test's own; nothing else reads it.
    unsafe { std::env::set_var(var, &seed) };
    let runtime = config(&format!(r#"nkey-seed-env = "{var}""#));
    let client = runtime
        .clients()
        .get("default")
        .await
        .expect("the right seed connects");
    runtime.start().await.expect("the guest starts");
    let mut out = watch(client.as_ref(), &format!("{ns}.out")).await;
    client
        .publish(vec![Message::new(format!("{ns}.in"), "signed")])
        .await
        .unwrap();
    assert_eq!(text(&next(&mut out).await), "SIGNED");
    runtime.stop().await;

    let other = nkeys::KeyPair::new_user().seed().unwrap();
    // SAFETY: as above.
    unsafe { std::env::set_var(var, &other) };
    let runtime = config(&format!(r#"nkey-seed-env = "{var}""#));
    let started = Instant::now();
    let err = match runtime.clients().get("default").await {
        Ok(_) => panic!("another key's seed connected"),
        Err(e) => e,
    };
    assert!(started.elapsed() < Duration::from_secs(6), "refused late");
    assert_eq!(err.kind(), ErrorKind::Connection, "{err}");
    assert!(err.to_string().contains("authorization"), "{err}");
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains(&seed) && !shown.contains(&other), "{shown}");

    let runtime = config(r#"creds-file = "/nonexistent/user.creds""#);
    let err = match runtime.clients().get("default").await {
        Ok(_) => panic!("connected without its creds file"),
        Err(e) => e,
    };
    assert!(err.to_string().contains("`creds-file`"), "{err}");
    let log = logged();
    assert!(
        !log.contains(&seed) && !log.contains(&other),
        "a seed in the log"
    );
}

/// Makes `user` a user of the shared RabbitMQ with `password` and every
/// permission on the default virtual host.
fn rabbitmq_user(user: &str, password: &str) {
    let ctl = |args: &[&str]| {
        std::process::Command::new("rabbitmqctl")
            .args(args)
            .output()
            .expect("rabbitmqctl")
    };
    if !ctl(&["add_user", user, password]).status.success() {
        // There from an earlier run: set the password again.
        let changed = ctl(&["change_password", user, password]);
        assert!(changed.status.success(), "{changed:?}");
    }
    let allowed = ctl(&["set_permissions", "-p", "/", user, ".*", ".*", ".*"]);
    assert!(allowed.status.success(), "{allowed:?}");
}

fn main() -> ExitCode {
    logs::capture();
    let mut trials = Trials::new();
    trials.tokio("nats", &[Need::Installed(Broker::Nats)], || async {
        let b = PrivateBroker::start_authenticated(Broker::Nats, "courier", "nats-pw-7Qx");
        credentials_are_used_and_never_shown(
            Broker::Nats,
            |pw| b.url_as("courier", pw),
            "nats-pw-7Qx",
        )
        .await;
    });
    trials.tokio(
        "nats_nkey",
        &[Need::Installed(Broker::Nats)],
        nats_nkeys_are_used_and_never_shown,
    );
    trials.tokio("redis", &[Need::Installed(Broker::Redis)], || async {
        let b = PrivateBroker::start_authenticated(Broker::Redis, "courier", "redis-pw-3Kd");
        credentials_are_used_and_never_shown(
            Broker::Redis,
            |pw| b.url_as("courier", pw),
            "redis-pw-3Kd",
        )
        .await;
    });
    trials.tokio(
        "mqtt",
        &[
            Need::Installed(Broker::Mosquitto),
            Need::Tool("mosquitto_passwd"),
        ],
        || async {
            let b = PrivateBroker::start_authenticated(Broker::Mosquitto, "courier", "mqtt-pw-9Zt");
            credentials_are_used_and_never_shown(
                Broker::Mosquitto,
                |pw| b.url_as("courier", pw),
                "mqtt-pw-9Zt",
            )
            .await;
        },
    );
    trials.tokio(
        "amqp",
        &[Need::Broker(Broker::RabbitMq), Need::Tool("rabbitmqctl")],
        || async {
            let (user, password) = ("courier-credentials", "amqp-pw-5Vn");
            rabbitmq_user(user, password);
            let url = |pw: &str| {
                Broker::RabbitMq
                    .url()
                    .replacen("guest:guest@", &format!("{user}:{pw}@"), 1)
            };
            credentials_are_used_and_never_shown(Broker::RabbitMq, url, password).await;
        },
    );
    trials.run()
}
