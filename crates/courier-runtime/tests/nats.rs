//! A guest between plain NATS clients: request/reply across Courier.
//!
//! The binary needs the `nats` feature (`required-features` in `Cargo.toml`).

use std::process::ExitCode;
use std::time::Duration;

use courier_broker::{Message, Pattern, SubscriptionSpec};
use courier_runtime::{Config, Runtime};
use courier_test_support::messages::next_delivery;
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

/// A JetStream delivery Courier holds unsettled past the server's ack
/// deadline is not redelivered while it is held (Courier tells the server it
/// is in progress); one dropped unsettled is, once the deadline passes.
async fn jetstream_does_not_redeliver_what_courier_holds() {
    let toml = format!(
        "[clients.default]\n{}\noptions = {{ jetstream = true, stream = \"COURIER_HOLD\", \
         subjects = \"hold.>\", storage = \"memory\" }}\n",
        Broker::Nats.client()
    );
    let runtime = Runtime::new(Config::from_toml(&toml).unwrap()).unwrap();
    let backend = runtime.clients().get("default").await.unwrap();
    let subject = format!("hold.{}", unique("h"));
    let mut spec = SubscriptionSpec::competing(Pattern::parse(&subject).unwrap(), "holders");
    spec.ack_wait = Duration::from_millis(300);
    let mut sub = backend.subscribe(spec).await.unwrap();
    backend
        .publish(vec![Message::new(subject.clone(), "held")])
        .await
        .unwrap();
    let held = next_delivery(&mut sub).await;
    assert_eq!(held.attempt, 1);
    // Four times the server's deadline: nothing comes again meanwhile.
    let again = tokio::time::timeout(Duration::from_millis(1200), sub.next()).await;
    assert!(
        again.is_err(),
        "redelivered while held: {:?}",
        again.ok().flatten().map(|r| r.map(|d| d.attempt))
    );
    held.acker.ack().await.unwrap();

    backend
        .publish(vec![Message::new(subject.clone(), "dropped")])
        .await
        .unwrap();
    let dropped = next_delivery(&mut sub).await;
    assert_eq!(&dropped.message.data[..], b"dropped");
    drop(dropped);
    let again = next_delivery(&mut sub).await;
    assert_eq!(
        (&again.message.data[..], again.attempt),
        (&b"dropped"[..], 2)
    );
    again.acker.ack().await.unwrap();
    sub.close().await.unwrap();
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

/// Core NATS hands over what has arrived in one batch, bounded by `max`,
/// in order, and a nacked delivery comes back through a batch too.
async fn core_batches_take_what_has_arrived_in_order() {
    let toml = format!("[clients.default]\n{}\n", Broker::Nats.client());
    let runtime = Runtime::new(Config::from_toml(&toml).unwrap()).unwrap();
    let backend = runtime.clients().get("default").await.unwrap();
    let subject = unique("batch");
    let pattern = Pattern::parse(&subject).unwrap();
    // Two subscriptions on the one connection: the server writes each
    // message to both before the next, and the client reads them in that
    // order, so once `witness` has the last message, `sub` holds all of
    // the ones before it.
    let mut sub = backend
        .subscribe(SubscriptionSpec::broadcast(pattern.clone()))
        .await
        .unwrap();
    let mut witness = backend
        .subscribe(SubscriptionSpec::broadcast(pattern))
        .await
        .unwrap();
    let mut messages: Vec<Message> = (0..50)
        .map(|i| Message::new(subject.clone(), i.to_string()))
        .collect();
    messages.push(Message::new(subject.clone(), "last"));
    backend.publish(messages).await.unwrap();
    loop {
        let d = next_delivery(&mut witness).await;
        if &d.message.data[..] == b"last" {
            break;
        }
    }
    let data = |ds: &[courier_broker::Delivery]| -> Vec<String> {
        ds.iter()
            .map(|d| String::from_utf8_lossy(&d.message.data).into_owned())
            .collect()
    };
    let first = sub.next_batch(20).await.unwrap().unwrap();
    let expected: Vec<String> = (0..20).map(|i| i.to_string()).collect();
    assert_eq!(data(&first), expected, "the first 20, at once and in order");
    let rest = sub.next_batch(30).await.unwrap().unwrap();
    let expected: Vec<String> = (20..50).map(|i| i.to_string()).collect();
    assert_eq!(data(&rest), expected, "the next 30, at once and in order");
    // A nacked delivery is redelivered in process, at the next attempt.
    let nacked = first.into_iter().next().unwrap();
    nacked.acker.nack(Duration::ZERO).await.unwrap();
    let mut seen = Vec::new();
    while !seen.iter().any(|(data, _)| data == "0") {
        let batch = tokio::time::timeout(Duration::from_secs(10), sub.next_batch(10))
            .await
            .expect("a batch in time")
            .unwrap()
            .unwrap();
        assert!(batch.len() <= 10, "{} over the bound", batch.len());
        seen.extend(batch.iter().zip(data(&batch)).map(|(d, s)| (s, d.attempt)));
    }
    assert!(seen.contains(&("0".to_string(), 2)), "{seen:?}");
    sub.close().await.unwrap();
    witness.close().await.unwrap();
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
    trials.tokio(
        "core_batches_take_what_has_arrived_in_order",
        &[Need::Broker(Broker::Nats)],
        core_batches_take_what_has_arrived_in_order,
    );
    trials.tokio(
        "jetstream_does_not_redeliver_what_courier_holds",
        &[Need::Broker(Broker::Nats)],
        jetstream_does_not_redeliver_what_courier_holds,
    );
    trials.run()
}
