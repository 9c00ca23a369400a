//! Courier's settlement held against a reference model ([`reference`]), by
//! property-based testing: in full on the embedded broker, in a shorter
//! form on each remote broker that redelivers.
//!
//! Each case starts a host with two `scripted` guests (`a` and `b`, point to
//! point) under random `batch-size`, `concurrency`, `max-attempts` and `ack`
//! mode, then runs random steps: a step publishes a few messages to one
//! guest, each with a random script of guest actions per attempt (complete,
//! complete twice, abandon, complete a forged or the other guest's delivery
//! id, complete without an id, re-subscribe mid-call, return `err`, trap, run
//! past the deadline, or nothing). Every handler call the guests report is
//! checked against the model as it comes — the messages it holds, their
//! attempts, what each settle call returned — and after each step, once the
//! host is quiet: every message accepted or dead-lettered exactly as the
//! model says, each dead letter after exactly `max-attempts` failures of its
//! own, and the guests' counters equal to the model's.
//!
//! `COURIER_MODEL_CASES` sets the case budget of every backend (default 24
//! on the embedded broker, 4 on each remote one) and `COURIER_MODEL_SEED`
//! the seed; a failure prints the seed to rerun it. A remote broker that is
//! not listening makes its test ignored with the reason (and fails it when
//! `CI=true`; see `courier_test_support::trials`).

mod checker;
mod driver;
mod reference;

use std::process::ExitCode;

use courier_test_support::{Broker, Need, Trials};
use driver::{Target, run};

/// The backends take turns: the model's deadlines are short, and two cases
/// at once on two cores would measure the machine, not the host.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn on(target: Target, cases: u32) {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    run(&target, cases);
}

/// Cases per remote backend unless `COURIER_MODEL_CASES` says otherwise.
const REMOTE_CASES: u32 = 4;

fn embedded() {
    on(
        Target {
            name: "the embedded broker",
            client: "backend = \"embedded\"".into(),
            prefix: "model",
            embedded: true,
        },
        24,
    );
}

#[cfg(feature = "nats")]
fn jetstream() {
    on(
        Target {
            name: "NATS JetStream",
            client: format!(
                "{}\noptions = {{ jetstream = true, stream = \"COURIER_MODEL\", \
                 subjects = \"jsmodel.>\", storage = \"memory\" }}",
                Broker::Nats.client()
            ),
            prefix: "jsmodel",
            embedded: false,
        },
        REMOTE_CASES,
    );
}

#[cfg(feature = "redis")]
fn redis_streams() {
    on(
        Target {
            name: "Redis Streams",
            client: format!(
                "{}\noptions = {{ streams = true, maxlen = 100000 }}",
                Broker::Redis.client()
            ),
            prefix: "rstmodel",
            embedded: false,
        },
        REMOTE_CASES,
    );
}

#[cfg(feature = "amqp")]
fn amqp() {
    on(
        Target {
            name: "RabbitMQ (AMQP 0-9-1)",
            client: format!(
                "{}\noptions = {{ exchange = \"courier.model\" }}",
                Broker::RabbitMq.client()
            ),
            prefix: "amqpmodel",
            embedded: false,
        },
        REMOTE_CASES,
    );
}

/// MQTT with its default point-to-point sessions. A guest that
/// re-subscribes mid-call takes its old subscription's session over, and
/// with it what the broker had sent that one (resent copies are handed out
/// at the attempt the guest had reached, or acknowledged if it had settled
/// them).
#[cfg(feature = "mqtt")]
fn mqtt() {
    on(
        Target {
            name: "Mosquitto (MQTT 5)",
            client: Broker::Mosquitto.client(),
            prefix: "mqttmodel",
            embedded: false,
        },
        REMOTE_CASES,
    );
}

fn main() -> ExitCode {
    let mut trials = Trials::new();
    trials.test(
        "reference::tests::batch_mates_of_a_failure_are_not_charged",
        &[],
        reference::tests::batch_mates_of_a_failure_are_not_charged,
    );
    trials.test(
        "reference::tests::a_second_complete_fails_and_manual_acks_count_attempts",
        &[],
        reference::tests::a_second_complete_fails_and_manual_acks_count_attempts,
    );
    trials.test("embedded", &[], embedded);
    #[cfg(feature = "nats")]
    trials.test("jetstream", &[Need::Broker(Broker::Nats)], jetstream);
    #[cfg(feature = "redis")]
    trials.test(
        "redis_streams",
        &[Need::Broker(Broker::Redis)],
        redis_streams,
    );
    #[cfg(feature = "amqp")]
    trials.test("amqp", &[Need::Broker(Broker::RabbitMq)], amqp);
    #[cfg(feature = "mqtt")]
    trials.test("mqtt", &[Need::Broker(Broker::Mosquitto)], mqtt);
    trials.run()
}
