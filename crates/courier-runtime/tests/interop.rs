//! A guest between each broker's own tools: messages from `redis-cli`,
//! `mosquitto_pub`, a plain AMQP client and `kcat` reach the guest, and what
//! it sends is read back by `redis-cli`, `mosquitto_sub`, a plain AMQP client
//! and `kcat`.
//! A broker that is not listening, or a tool that is not installed, makes
//! the tests that need it ignored with the reason (failed when `CI=true`).

use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use courier_runtime::{Config, Runtime};
use courier_test_support::process::Lines;
use courier_test_support::{Broker, Need, Trials, unique, wait_until_async};

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

/// `redis-cli ARGS` against the shared Redis; its standard output.
#[cfg(feature = "redis")]
fn redis_cli(args: &[&str]) -> String {
    let port = Broker::Redis.port().to_string();
    run("redis-cli", &[&["-p", port.as_str()], args].concat())
}

#[cfg(feature = "redis")]
async fn redis_cli_streams_in_and_out() {
    let ns = unique("interop");
    let runtime = uppercase(
        &format!("{}\noptions = {{ streams = true }}", Broker::Redis.client()),
        &ns,
    )
    .await;
    let (input, output) = (format!("{ns}.in"), format!("{ns}.out"));
    redis_cli(&[
        "XADD",
        &input,
        "*",
        "data",
        "hello from redis-cli",
        "meta:trace",
        "7",
    ]);
    wait_until_async(WAIT, "the guest's output in the stream", || {
        let entries = redis_cli(&["XRANGE", &output, "-", "+"]);
        entries.contains("HELLO FROM REDIS-CLI") && entries.contains("meta:trace")
    })
    .await;
    runtime.stop().await;
    redis_cli(&["DEL", &input, &output]);
}

#[cfg(feature = "redis")]
async fn redis_cli_pubsub_in_and_out() {
    let ns = unique("interop");
    let runtime = uppercase(&Broker::Redis.client(), &ns).await;
    let output = format!("{ns}.out");
    let port = Broker::Redis.port().to_string();
    // `stdbuf` has redis-cli write each line at once into the pipe.
    let mut sub = Command::new("stdbuf")
        .args(["-oL", "redis-cli", "-p", &port, "SUBSCRIBE", &output])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = Lines::new(sub.stdout.take().unwrap());
    // Wait until the subscriber is there, then publish with redis-cli.
    wait_until_async(WAIT, "redis-cli subscribed", || {
        redis_cli(&["PUBSUB", "NUMSUB", &output]).lines().nth(1) == Some("1")
    })
    .await;
    redis_cli(&["PUBLISH", &format!("{ns}.in"), "hello"]);
    let got = tokio::task::block_in_place(|| lines.until(WAIT, |l| l == b"HELLO\n"));
    let _ = sub.kill();
    let _ = sub.wait();
    got.expect("the guest's output reaches redis-cli");
    runtime.stop().await;
}

/// A running `mosquitto_sub` for one message, subscribed.
#[cfg(feature = "mqtt")]
struct MosquittoSub {
    child: std::process::Child,
    /// Its standard output.
    lines: Lines,
}

#[cfg(feature = "mqtt")]
impl MosquittoSub {
    /// What it printed for its message (its own debug lines left out),
    /// once it has exited.
    fn output(mut self) -> Vec<u8> {
        let debug = |line: &[u8]| line.starts_with(b"Client ") || line.starts_with(b"Subscribed");
        let out = self
            .lines
            .rest()
            .into_iter()
            .filter(|l| !debug(l))
            .collect::<Vec<_>>()
            .concat();
        self.child.wait().expect("mosquitto_sub ends");
        out
    }
}

/// `mosquitto_sub` for one message on `topic`, printed with `format`;
/// returns once the broker has acknowledged its subscription (its debug
/// output, `-d`, shows the SUBACK; `stdbuf` has it write each line at once
/// into the pipe).
#[cfg(feature = "mqtt")]
fn mosquitto_sub(topic: &str, format: &str) -> MosquittoSub {
    let port = Broker::Mosquitto.port().to_string();
    let args = [
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-V",
        "mqttv5",
        "-C",
        "1",
        "-W",
        "10",
        "-d",
    ];
    let mut child = Command::new("stdbuf")
        .args(["-oL", "mosquitto_sub"])
        .args(args)
        .args(["-t", topic, "-F", format])
        .stdout(Stdio::piped())
        .spawn()
        .expect("mosquitto_sub is needed for this test");
    let lines = Lines::new(child.stdout.take().expect("stdout"));
    if let Err(e) = lines.until(WAIT, |l| l.windows(15).any(|w| w == b"received SUBACK")) {
        let _ = child.kill();
        let _ = child.wait();
        panic!("mosquitto_sub did not subscribe: {e}");
    }
    MosquittoSub { child, lines }
}

/// `mosquitto_pub` of `message` on `topic` at QoS 1, with extra arguments.
#[cfg(feature = "mqtt")]
fn mosquitto_pub(topic: &str, message: &str, extra: &[&str]) {
    let port = Broker::Mosquitto.port().to_string();
    let mut args = vec!["-h", "127.0.0.1", "-p", &port, "-V", "mqttv5", "-q", "1"];
    args.extend(["-t", topic, "-m", message]);
    args.extend(extra);
    run("mosquitto_pub", &args);
}

#[cfg(feature = "mqtt")]
async fn mosquitto_pub_in_and_mosquitto_sub_out() {
    let ns = unique("interop");
    let runtime = uppercase(&Broker::Mosquitto.client(), &ns).await;
    let topic = |ch: &str| format!("{ns}.{ch}").replace('.', "/");
    let sub = tokio::task::block_in_place(|| mosquitto_sub(&topic("out"), "%t|%C|%P|%p"));
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
    let out = tokio::task::spawn_blocking(move || sub.output())
        .await
        .unwrap();
    let line = String::from_utf8_lossy(&out).into_owned();
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

    let ns = unique("interop");
    let runtime = uppercase(&Broker::Mosquitto.client(), &ns).await;
    let topic = |ch: &str| format!("{ns}.{ch}").replace('.', "/");
    let replies = topic("replies");
    let sub = tokio::task::block_in_place(|| mosquitto_sub(&replies, "%t|%D|%P|%p"));
    let port = Broker::Mosquitto.port().to_string();
    let status = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port, "-V", "mqttv5", "-q", "1"])
        .args(["-t", &topic("in"), "-m", "hello"])
        .args(["-D", "publish", "response-topic", &replies])
        .args(["-D", "publish", "user-property", "trace", "7"])
        .args(["-D", "publish", "correlation-data"])
        .arg(std::ffi::OsStr::from_bytes(correlation))
        .status()
        .expect("mosquitto_pub is needed for this test");
    assert!(status.success(), "mosquitto_pub failed");
    let out = tokio::task::spawn_blocking(move || sub.output())
        .await
        .unwrap();
    runtime.stop().await;
    (replies, out)
}

/// The usual MQTT 5 request/response: the guest's reply on the response
/// topic carries the request's correlation data (and not as a user property).
#[cfg(feature = "mqtt")]
async fn mosquitto_rpc_reply_keeps_correlation_data() {
    let (replies, out) = mosquitto_request_and_reply(b"req-42").await;
    let line = String::from_utf8_lossy(&out).into_owned();
    assert_eq!(line.trim_end(), format!("{replies}|req-42|trace:7|HELLO"));
}

/// Correlation data that is not UTF-8 reaches the guest hex-encoded and comes
/// back as the same bytes.
#[cfg(feature = "mqtt")]
async fn mosquitto_rpc_reply_keeps_binary_correlation_data() {
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
async fn plain_amqp_client_in_and_out() {
    use futures::StreamExt;
    use lapin::BasicProperties;
    use lapin::options::{BasicAckOptions, BasicPublishOptions};
    use lapin::types::{AMQPValue, FieldTable};

    let url = &Broker::RabbitMq.url();
    let ns = unique("interop");
    let runtime = uppercase(&Broker::RabbitMq.client(), &ns).await;

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
async fn amqp_rpc_reply_keeps_correlation_id() {
    use futures::StreamExt;
    use lapin::BasicProperties;
    use lapin::options::{BasicAckOptions, BasicPublishOptions};
    use lapin::types::{AMQPValue, FieldTable};

    let url = &Broker::RabbitMq.url();
    let ns = unique("interop");
    let runtime = uppercase(&Broker::RabbitMq.client(), &ns).await;

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

/// `kcat ARGS` against the shared Kafka broker, with `input` on its standard
/// input; its standard output, or `None` if it failed (a topic that does not
/// exist yet). It runs with the librdkafka of
/// [`kcat_library_path`](courier_test_support::brokers::kcat_library_path).
#[cfg(feature = "kafka")]
fn kcat(args: &[&str], input: &str) -> Option<String> {
    use std::io::Write;
    let library = courier_test_support::brokers::kcat_library_path();
    assert!(
        library.join("librdkafka.so.1").exists(),
        "kcat needs the librdkafka in {} (scripts/brokers.sh ensure puts it there)",
        library.display()
    );
    let broker = format!("127.0.0.1:{}", Broker::Kafka.port());
    let mut child = Command::new("kcat")
        .env("LD_LIBRARY_PATH", &library)
        .args(["-b", &broker, "-q"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kcat is needed for this test");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// kcat produces a keyed record with headers; the guest's output, read by
/// kcat, has them still: the key (the `kafka-key` metadata entry) and the
/// header the guest passed on.
#[cfg(feature = "kafka")]
async fn kcat_in_and_out() {
    let ns = unique("interop");
    let runtime = uppercase(&Broker::Kafka.client(), &ns).await;
    let (input, output) = (format!("{ns}.in"), format!("{ns}.out"));
    let produced = kcat(
        &["-P", "-t", &input, "-k", "order-1", "-H", "trace=7"],
        "hello from kcat",
    );
    assert!(produced.is_some(), "kcat could not produce to {input}");
    let mut seen = String::new();
    wait_until_async(WAIT, "the guest's output, read by kcat", || {
        seen = kcat(
            &[
                "-C",
                "-t",
                &output,
                "-o",
                "beginning",
                "-e",
                "-f",
                "%k|%h|%s\\n",
            ],
            "",
        )
        .unwrap_or_default();
        seen.contains("HELLO FROM KCAT")
    })
    .await;
    let line = seen
        .lines()
        .find(|l| l.contains("HELLO FROM KCAT"))
        .unwrap();
    let mut fields = line.split('|');
    assert_eq!(fields.next(), Some("order-1"), "the record key: {line}");
    let headers = fields.next().unwrap_or_default();
    assert!(
        headers.split(',').any(|h| h == "trace=7"),
        "the header `trace=7` is missing: {line}"
    );
    runtime.stop().await;
}

/// How long a step may take before the test fails.
const WAIT: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    let mut trials = Trials::new();
    #[cfg(feature = "redis")]
    {
        let needs = [
            Need::Broker(Broker::Redis),
            Need::Tool("redis-cli"),
            Need::Tool("stdbuf"),
        ];
        trials.tokio(
            "redis_cli_streams_in_and_out",
            &needs,
            redis_cli_streams_in_and_out,
        );
        trials.tokio(
            "redis_cli_pubsub_in_and_out",
            &needs,
            redis_cli_pubsub_in_and_out,
        );
    }
    #[cfg(feature = "mqtt")]
    {
        let needs = [
            Need::Broker(Broker::Mosquitto),
            Need::Tool("mosquitto_sub"),
            Need::Tool("mosquitto_pub"),
            Need::Tool("stdbuf"),
        ];
        trials.tokio(
            "mosquitto_pub_in_and_mosquitto_sub_out",
            &needs,
            mosquitto_pub_in_and_mosquitto_sub_out,
        );
        trials.tokio(
            "mosquitto_rpc_reply_keeps_correlation_data",
            &needs,
            mosquitto_rpc_reply_keeps_correlation_data,
        );
        trials.tokio(
            "mosquitto_rpc_reply_keeps_binary_correlation_data",
            &needs,
            mosquitto_rpc_reply_keeps_binary_correlation_data,
        );
    }
    #[cfg(feature = "amqp")]
    {
        let needs = [Need::Broker(Broker::RabbitMq)];
        trials.tokio(
            "plain_amqp_client_in_and_out",
            &needs,
            plain_amqp_client_in_and_out,
        );
        trials.tokio(
            "amqp_rpc_reply_keeps_correlation_id",
            &needs,
            amqp_rpc_reply_keeps_correlation_id,
        );
    }
    #[cfg(feature = "kafka")]
    trials.tokio(
        "kcat_in_and_out",
        &[Need::Broker(Broker::Kafka), Need::Tool("kcat")],
        kcat_in_and_out,
    );
    trials.run()
}
