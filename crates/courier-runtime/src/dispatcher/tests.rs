//! A running guest's status as readiness reports it, and what a guest is
//! handed of a stamped message; and what the dispatcher's unit tests share.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use courier_broker::{Message, Pattern};
use courier_test_support::wait_until_async;

use courier_broker::{Acker, BrokerError};

use super::worker::guest_metadata;
use crate::deliveries::Source;
use crate::readiness::GuestStatus;
use crate::telemetry::{self, SENT_AT_KEY};
use crate::{Config, GuestConfig, Runtime};

/// An acker that settles nothing, for deliveries whose settlement a test
/// does not look at.
pub(super) struct NoAck;

#[async_trait::async_trait]
impl Acker for NoAck {
    async fn ack(self: Box<Self>) -> Result<(), BrokerError> {
        Ok(())
    }
    async fn nack(self: Box<Self>, _: Duration) -> Result<(), BrokerError> {
        Ok(())
    }
}

/// A delivery source on an embedded broker of its own.
pub(super) fn source() -> Arc<Source> {
    Arc::new(Source {
        backend: Arc::new(courier_embedded::EmbeddedBroker::new()),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_worker_makes_the_guest_not_ready_and_not_alive() {
    let mut config = Config::default();
    config.host.compile_cache = false;
    config.guests.insert(
        "uppercase".into(),
        GuestConfig {
            component: Some(test_programs::UPPERCASE.into()),
            subscribe: vec![Pattern::parse("in").unwrap()],
            allow_publish: vec![Pattern::parse("out").unwrap()],
            ..GuestConfig::default()
        },
    );
    let runtime = Runtime::new(config).unwrap();
    let before = runtime.readiness(Duration::from_secs(1)).await;
    assert_eq!(before.guests[0].status, GuestStatus::Starting);
    runtime.start().await.unwrap();
    let ready = runtime.readiness(Duration::from_secs(1)).await;
    assert!(ready.is_ready(), "{:?}", ready.not_ready());

    // A worker task that ends while the guest runs (as a panic would end it).
    let guest = runtime.guest("uppercase").unwrap().clone();
    guest.workers.lock().unwrap()[0].abort();
    wait_until_async(Duration::from_secs(10), "the worker ended", || {
        guest.status() != GuestStatus::Running
    })
    .await;
    let r = runtime.readiness(Duration::from_secs(1)).await;
    assert_eq!(
        r.guests[0].status,
        GuestStatus::WorkersDied { dead: 1, of: 1 }
    );
    assert!(!r.is_ready());
    assert!(!r.any_guest_alive(), "its only guest cannot run");
    assert_eq!(
        r.not_ready(),
        ["guest uppercase: 1 of its 1 worker tasks died"]
    );

    runtime.stop().await;
    assert_eq!(guest.status(), GuestStatus::Stopped);
}

#[test]
fn the_guest_never_sees_the_sent_at_stamp() {
    let mut m = Message::new("in", "x");
    m.set_meta("trace", "t-1");
    telemetry::stamp(&mut m);
    let messages = [Arc::new(m)];
    let (ids, attempts) = (["d-1"], [None]);
    let (metadata, ranges) = guest_metadata(&messages, &ids, &attempts);
    assert_eq!(ranges, vec![0..2]);
    let keys: Vec<&str> = metadata.iter().map(|(k, _)| *k).collect();
    assert_eq!(keys, ["trace", "courier-delivery-id"]);
    assert!(!keys.contains(&SENT_AT_KEY));
}

#[test]
fn only_a_redelivery_carries_its_attempt() {
    let messages = [
        Arc::new(Message::new("in", "x")),
        Arc::new(Message::new("in", "y")),
    ];
    let (ids, attempts) = (["d-1", "d-2"], [None, Some(Cow::Borrowed("2"))]);
    let (metadata, ranges) = guest_metadata(&messages, &ids, &attempts);
    assert_eq!(ranges, vec![0..1, 1..3]);
    assert_eq!(metadata[0], ("courier-delivery-id", "d-1"));
    assert_eq!(
        metadata[1..],
        [("courier-delivery-id", "d-2"), ("courier-attempt", "2")]
    );
}
