//! Delayed nacks belong to their subscription: closing it puts the waiting
//! messages back at once and leaves no task behind.
//!
//! Needs RabbitMQ on 127.0.0.1:5672 (guest/guest); without it the test is
//! skipped, or fails when `CI=true`. It reads the process-wide count of
//! delayed nacks, so it stays the only test of this binary.

use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use courier_amqp::AmqpBackend;
use courier_amqp::consume::delayed_nacks;
use courier_broker::{Backend, Delivery, Message, Pattern, Subscription, SubscriptionSpec};
use futures::FutureExt;
use lapin::options::QueueDeleteOptions;
use lapin::{Connection, ConnectionProperties};

const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Long enough to fail the test if the nack still waited it out.
const HOUR: Duration = Duration::from_secs(3600);

/// Bound on anything the broker must do "at once".
const PROMPT: Duration = Duration::from_secs(10);

/// Whether RabbitMQ listens; skips on a laptop, fails in CI.
fn rabbitmq() -> bool {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 5672));
    if std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("RabbitMQ is not running on {addr}, and CI needs it (run scripts/brokers.sh)");
    }
    eprintln!("skipping: RabbitMQ is not running on {addr}");
    false
}

async fn next(sub: &mut Box<dyn Subscription>) -> Delivery {
    tokio::time::timeout(PROMPT, sub.next())
        .await
        .expect("a delivery in time")
        .expect("the subscription is open")
        .expect("no broker error")
}

#[tokio::test]
async fn close_requeues_delayed_nacks_at_once_and_leaves_no_task() {
    if !rabbitmq() {
        return;
    }
    let unique = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let topic = format!("delayed-nack.t{unique}");
    let group = format!("delayed-nack-{unique}");
    let outcome = AssertUnwindSafe(scenario(&topic, &group))
        .catch_unwind()
        .await;
    // The group's durable queue is this test's own: removed even when the
    // test failed.
    let conn = Connection::connect(URL, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = conn.create_channel().await.unwrap();
    channel
        .queue_delete(
            format!("courier.{group}.{topic}").as_str().into(),
            QueueDeleteOptions::default(),
        )
        .await
        .unwrap();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Nacks a delivery with an hour's delay, closes the subscription, and
/// takes the message again from a new one.
async fn scenario(topic: &str, group: &str) {
    let spec = SubscriptionSpec::competing(Pattern::parse(topic).unwrap(), group);
    let backend = AmqpBackend::connect(URL, &courier_amqp::AmqpOptions::default())
        .await
        .unwrap();

    let mut sub = backend.subscribe(spec.clone()).await.unwrap();
    backend
        .publish(vec![Message::new(topic, "x")])
        .await
        .unwrap();
    let first = next(&mut sub).await;
    assert_eq!(first.attempt, 1);

    assert_eq!(delayed_nacks(), 0);
    first.acker.nack(HOUR).await.unwrap();
    assert_eq!(delayed_nacks(), 1, "the nack waits out its delay");
    tokio::time::timeout(PROMPT, sub.close())
        .await
        .expect("close does not wait out the delay")
        .unwrap();
    assert_eq!(delayed_nacks(), 0, "a delayed nack outlived close");
    drop(sub);

    // Requeued at close, with the attempt counted: a new member of the group
    // gets it now, not in an hour.
    let started = Instant::now();
    let mut again = backend.subscribe(spec).await.unwrap();
    let second = next(&mut again).await;
    assert!(started.elapsed() < PROMPT);
    assert_eq!(second.message.data, "x");
    assert_eq!(second.attempt, 2);
    second.acker.ack().await.unwrap();
    again.close().await.unwrap();
}
