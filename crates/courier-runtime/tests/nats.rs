//! A guest between plain NATS clients: request/reply across Courier.
//!
//! The binary needs the `nats` feature (`required-features` in `Cargo.toml`).

use std::process::ExitCode;
use std::time::Duration;

use courier_runtime::{Config, Runtime};
use courier_test_support::{Broker, Need, Trials, unique};
use futures::StreamExt;

async fn plain_nats_request_gets_the_guests_reply() {
    let subject = unique("rr");
    let toml = format!(
        r#"
        [clients.default]
        {client}
        [guests.up]
        component = "{}"
        subscribe = ["{subject}.svc"]
        allow-publish = ["_INBOX.>", "{subject}.>"]
        "#,
        test_programs::UPPERCASE,
        client = Broker::Nats.client(),
    );
    let runtime = Runtime::new(Config::from_toml(&toml).unwrap()).unwrap();
    runtime.start().await.unwrap();

    let plain = async_nats::connect(Broker::Nats.url()).await.unwrap();
    // Request/reply: the guest answers on the request's reply subject.
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("tenant", "acme");
    let reply = tokio::time::timeout(
        Duration::from_secs(10),
        plain.request_with_headers(format!("{subject}.svc"), headers, "ping".into()),
    )
    .await
    .expect("reply in time")
    .expect("reply");
    assert_eq!(&reply.payload[..], b"PING");
    let tenant = reply.headers.as_ref().and_then(|h| h.get("tenant"));
    assert_eq!(tenant.map(|v| v.as_str()), Some("acme"));

    // Publish/subscribe: a plain publisher in, a plain subscriber out.
    let mut out = plain.subscribe(format!("{subject}.out")).await.unwrap();
    plain.flush().await.unwrap();
    let runtime2 = Runtime::new(
        Config::from_toml(&toml.replace(
            "allow-publish",
            &format!("env = {{ OUT = \"{subject}.out\" }}\n        allow-publish"),
        ))
        .unwrap(),
    )
    .unwrap();
    runtime.stop().await;
    runtime2.start().await.unwrap();
    plain
        .publish(format!("{subject}.svc"), "hello".into())
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), out.next())
        .await
        .expect("output in time")
        .unwrap();
    assert_eq!(&got.payload[..], b"HELLO");
    runtime2.stop().await;
}

async fn unreachable_server_is_a_connection_error() {
    let toml = r#"
        [clients.default]
        backend = "nats"
        url = "nats://127.0.0.1:1"
        options = { connect-timeout-ms = 1000 }
    "#;
    let runtime = Runtime::new(Config::from_toml(toml).unwrap()).unwrap();
    let started = std::time::Instant::now();
    let err = runtime.clients().get("default").await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(err.kind() == courier_broker::ErrorKind::Connection, "{err}");
    assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
    // The client library's error is kept as the cause, not flattened.
    let cause = std::error::Error::source(&err).expect("a cause");
    assert!(
        cause.downcast_ref::<async_nats::ConnectError>().is_some(),
        "{cause:?}"
    );
}

fn main() -> ExitCode {
    let mut trials = Trials::new();
    trials.tokio(
        "plain_nats_request_gets_the_guests_reply",
        &[Need::Broker(Broker::Nats)],
        plain_nats_request_gets_the_guests_reply,
    );
    trials.tokio(
        "unreachable_server_is_a_connection_error",
        &[],
        unreachable_server_is_a_connection_error,
    );
    trials.run()
}
