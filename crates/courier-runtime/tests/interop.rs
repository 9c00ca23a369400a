//! A guest between each broker's own tools: messages from `redis-cli`,
//! `mosquitto_pub` and a plain AMQP client reach the guest, and what it sends
//! is read back by `redis-cli`, `mosquitto_sub` and a plain AMQP client.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use courier_runtime::{Config, Runtime};

/// A unique channel prefix.
fn ns(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}.t{}x{nanos}", std::process::id())
}

/// Starts `uppercase` on `client`, subscribed to `{ns}.in`, writing to `{ns}.out`.
async fn uppercase(client: &str, ns: &str) -> Runtime {
    let toml = format!(
        r#"
        [clients.default]
        {client}
        [guests.up]
        component = "{}"
        subscribe = ["{ns}.in"]
        allow-publish = ["{ns}.>"]
        env = {{ OUT = "{ns}.out" }}
        "#,
        test_programs::UPPERCASE
    );
    let runtime = Runtime::new(Config::from_toml(&toml).unwrap()).unwrap();
    runtime.start().await.unwrap();
    runtime
}

/// Runs a command line tool and returns its standard output.
fn run(tool: &str, args: &[&str]) -> String {
    let out = Command::new(tool)
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("{tool} is needed for this test: {e}"));
    assert!(out.status.success(), "{tool} {args:?} failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..100 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} never happened");
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn redis_cli_streams_in_and_out() {
    if !common::broker("redis-server", 6379) {
        return;
    }
    let ns = ns("interop");
    let runtime = uppercase(
        "backend = \"redis\"\nurl = \"redis://127.0.0.1:6379\"\noptions = { streams = true }",
        &ns,
    )
    .await;
    let (input, output) = (format!("{ns}.in"), format!("{ns}.out"));
    run(
        "redis-cli",
        &[
            "XADD",
            &input,
            "*",
            "data",
            "hello from redis-cli",
            "meta:trace",
            "7",
        ],
    );
    eventually("the guest's output in the stream", || {
        let entries = run("redis-cli", &["XRANGE", &output, "-", "+"]);
        entries.contains("HELLO FROM REDIS-CLI") && entries.contains("meta:trace")
    })
    .await;
    runtime.stop().await;
    run("redis-cli", &["DEL", &input, &output]);
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn redis_cli_pubsub_in_and_out() {
    if !common::broker("redis-server", 6379) {
        return;
    }
    let ns = ns("interop");
    let runtime = uppercase("backend = \"redis\"\nurl = \"redis://127.0.0.1:6379\"", &ns).await;
    let output = format!("{ns}.out");
    let sub = Command::new("timeout")
        .args(["10", "redis-cli", "SUBSCRIBE", &output])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the subscriber is there, then publish with redis-cli.
    eventually("redis-cli subscribed", || {
        run("redis-cli", &["PUBSUB", "NUMSUB", &output])
            .lines()
            .nth(1)
            == Some("1")
    })
    .await;
    run("redis-cli", &["PUBLISH", &format!("{ns}.in"), "hello"]);
    let out = tokio::task::spawn_blocking(move || sub.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("HELLO"));
    runtime.stop().await;
}

/// `mosquitto_sub` for one message on `topic`, printed with `format`.
#[cfg(feature = "mqtt")]
fn mosquitto_sub(topic: &str, format: &str) -> std::process::Child {
    let args = ["-h", "127.0.0.1", "-V", "mqttv5", "-C", "1", "-W", "10"];
    Command::new("mosquitto_sub")
        .args(args)
        .args(["-t", topic, "-F", format])
        .stdout(Stdio::piped())
        .spawn()
        .expect("mosquitto_sub is needed for this test")
}

/// `mosquitto_pub` of `message` on `topic` at QoS 1, with extra arguments.
#[cfg(feature = "mqtt")]
fn mosquitto_pub(topic: &str, message: &str, extra: &[&str]) {
    let mut args = vec!["-h", "127.0.0.1", "-V", "mqttv5", "-q", "1"];
    args.extend(["-t", topic, "-m", message]);
    args.extend(extra);
    run("mosquitto_pub", &args);
}

#[cfg(feature = "mqtt")]
#[tokio::test]
async fn mosquitto_pub_in_and_mosquitto_sub_out() {
    if !common::broker("mosquitto", 1883) {
        return;
    }
    let ns = ns("interop");
    let runtime = uppercase("backend = \"mqtt\"\nurl = \"mqtt://127.0.0.1:1883\"", &ns).await;
    let topic = |ch: &str| format!("{ns}.{ch}").replace('.', "/");
    let sub = mosquitto_sub(&topic("out"), "%t|%C|%P|%p");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let properties = [
        "-D",
        "publish",
        "content-type",
        "text/plain",
        "-D",
        "publish",
        "user-property",
        "trace",
        "7",
    ];
    mosquitto_pub(&topic("in"), "hello", &properties);
    let out = tokio::task::spawn_blocking(move || sub.wait_with_output().unwrap())
        .await
        .unwrap();
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    // The topic, content type, user property and payload, through the guest.
    let expected = format!("{}|text/plain|trace:7|HELLO", topic("out"));
    assert_eq!(line.trim_end(), expected);
    runtime.stop().await;
}

/// A request to `uppercase` on MQTT with a response topic and `correlation`
/// as its correlation data (`mosquitto_pub`), and what `mosquitto_sub` reads
/// on the response topic: `topic|correlation data|user properties|payload`.
#[cfg(feature = "mqtt")]
async fn mosquitto_request_and_reply(correlation: &[u8]) -> (String, Vec<u8>) {
    use std::os::unix::ffi::OsStrExt;

    let ns = ns("interop");
    let runtime = uppercase("backend = \"mqtt\"\nurl = \"mqtt://127.0.0.1:1883\"", &ns).await;
    let topic = |ch: &str| format!("{ns}.{ch}").replace('.', "/");
    let replies = topic("replies");
    let sub = mosquitto_sub(&replies, "%t|%D|%P|%p");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-V", "mqttv5", "-q", "1"])
        .args(["-t", &topic("in"), "-m", "hello"])
        .args(["-D", "publish", "response-topic", &replies])
        .args(["-D", "publish", "user-property", "trace", "7"])
        .args(["-D", "publish", "correlation-data"])
        .arg(std::ffi::OsStr::from_bytes(correlation))
        .status()
        .expect("mosquitto_pub is needed for this test");
    assert!(status.success(), "mosquitto_pub failed");
    let out = tokio::task::spawn_blocking(move || sub.wait_with_output().unwrap())
        .await
        .unwrap();
    runtime.stop().await;
    (replies, out.stdout)
}

/// The usual MQTT 5 request/response: the guest's reply on the response
/// topic carries the request's correlation data (and not as a user property).
#[cfg(feature = "mqtt")]
#[tokio::test]
async fn mosquitto_rpc_reply_keeps_correlation_data() {
    if !common::broker("mosquitto", 1883) {
        return;
    }
    let (replies, out) = mosquitto_request_and_reply(b"req-42").await;
    let line = String::from_utf8_lossy(&out).into_owned();
    assert_eq!(line.trim_end(), format!("{replies}|req-42|trace:7|HELLO"));
}

/// Correlation data that is not UTF-8 reaches the guest hex-encoded and comes
/// back as the same bytes.
#[cfg(feature = "mqtt")]
#[tokio::test]
async fn mosquitto_rpc_reply_keeps_binary_correlation_data() {
    if !common::broker("mosquitto", 1883) {
        return;
    }
    let correlation = b"\xff\xfe-7";
    let (replies, out) = mosquitto_request_and_reply(correlation).await;
    let expected = [
        format!("{replies}|").as_bytes(),
        correlation,
        b"|trace:7|HELLO\n",
    ]
    .concat();
    assert_eq!(out, expected);
}

/// A plain AMQP client: a connection, a channel, and a consumer of an
/// exclusive queue bound to `routing_key` on Courier's exchange.
#[cfg(feature = "amqp")]
async fn amqp_listener(
    url: &str,
    routing_key: &str,
) -> (lapin::Connection, lapin::Channel, lapin::Consumer) {
    use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
    use lapin::types::FieldTable;
    use lapin::{Connection, ConnectionProperties};

    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = conn.create_channel().await.unwrap();
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .queue_bind(
            queue.name().clone(),
            "courier".into(),
            routing_key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let consumer = channel
        .basic_consume(
            queue.name().clone(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    (conn, channel, consumer)
}

#[cfg(feature = "amqp")]
#[tokio::test]
async fn plain_amqp_client_in_and_out() {
    use futures::StreamExt;
    use lapin::BasicProperties;
    use lapin::options::{BasicAckOptions, BasicPublishOptions};
    use lapin::types::{AMQPValue, FieldTable};

    if !common::broker("rabbitmq", 5672) {
        return;
    }
    let url = "amqp://guest:guest@127.0.0.1:5672/%2f";
    let ns = ns("interop");
    let runtime = uppercase(&format!("backend = \"amqp\"\nurl = \"{url}\""), &ns).await;

    let (_conn, channel, mut consumer) = amqp_listener(url, &format!("{ns}.out")).await;
    let mut headers = FieldTable::default();
    headers.insert("trace".into(), AMQPValue::LongString("7".into()));
    channel
        .basic_publish(
            "courier".into(),
            format!("{ns}.in").into(),
            BasicPublishOptions::default(),
            b"hello amqp",
            BasicProperties::default()
                .with_content_type("text/plain".into())
                .with_headers(headers),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let delivery = tokio::time::timeout(Duration::from_secs(10), consumer.next())
        .await
        .expect("the guest's output in time")
        .unwrap()
        .unwrap();
    assert_eq!(delivery.data, b"HELLO AMQP");
    assert_eq!(
        delivery
            .properties
            .content_type()
            .as_ref()
            .map(|s| s.as_str()),
        Some("text/plain")
    );
    let trace = delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("trace").cloned());
    assert!(matches!(trace, Some(AMQPValue::LongString(s)) if s.as_bytes() == b"7"));
    delivery
        .acker
        .ack(BasicAckOptions::default())
        .await
        .unwrap();
    runtime.stop().await;
}

/// The usual AMQP RPC: a plain client sends a request with `reply_to` and
/// `correlation_id`, and the guest's reply, sent to `reply_to` with the
/// request's metadata, carries the same `correlation_id` property.
#[cfg(feature = "amqp")]
#[tokio::test]
async fn amqp_rpc_reply_keeps_correlation_id() {
    use futures::StreamExt;
    use lapin::BasicProperties;
    use lapin::options::{BasicAckOptions, BasicPublishOptions};
    use lapin::types::{AMQPValue, FieldTable};

    if !common::broker("rabbitmq", 5672) {
        return;
    }
    let url = "amqp://guest:guest@127.0.0.1:5672/%2f";
    let ns = ns("interop");
    let runtime = uppercase(&format!("backend = \"amqp\"\nurl = \"{url}\""), &ns).await;

    let replies = format!("{ns}.replies");
    let (_conn, channel, mut consumer) = amqp_listener(url, &replies).await;
    let mut headers = FieldTable::default();
    headers.insert("trace".into(), AMQPValue::LongString("7".into()));
    channel
        .basic_publish(
            "courier".into(),
            format!("{ns}.in").into(),
            BasicPublishOptions::default(),
            b"request",
            BasicProperties::default()
                .with_reply_to(replies.as_str().into())
                .with_correlation_id("req-42".into())
                .with_headers(headers),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let delivery = tokio::time::timeout(Duration::from_secs(10), consumer.next())
        .await
        .expect("the guest's reply in time")
        .unwrap()
        .unwrap();
    assert_eq!(delivery.data, b"REQUEST");
    assert_eq!(
        delivery
            .properties
            .correlation_id()
            .as_ref()
            .map(|s| s.as_str()),
        Some("req-42")
    );
    // The correlation is the property only, the other metadata headers.
    let headers = delivery.properties.headers().clone().unwrap_or_default();
    assert!(!headers.inner().contains_key("correlation-id"));
    let trace = headers.inner().get("trace").cloned();
    assert!(matches!(trace, Some(AMQPValue::LongString(s)) if s.as_bytes() == b"7"));
    delivery
        .acker
        .ack(BasicAckOptions::default())
        .await
        .unwrap();
    runtime.stop().await;
}
