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
//! not running skips its test (and fails it when `CI=true`).

mod checker;
mod driver;
mod reference;

#[path = "../common/mod.rs"]
mod common;

use driver::{Target, run};
#[allow(unused_imports)]
use reference::Action;

/// The backends take turns: the model's deadlines are short, and two cases
/// at once on two cores would measure the machine, not the host.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn on(target: Target, cases: u32) {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    run(&target, cases);
}

/// Cases per remote backend unless `COURIER_MODEL_CASES` says otherwise.
#[allow(dead_code)]
const REMOTE_CASES: u32 = 4;

#[test]
fn embedded() {
    on(
        Target {
            name: "the embedded broker",
            client: "backend = \"embedded\"".into(),
            prefix: "model",
            embedded: true,
            without: &[],
        },
        24,
    );
}

#[cfg(feature = "nats")]
#[test]
fn jetstream() {
    if !common::broker("nats-server", 4222) {
        return;
    }
    on(
        Target {
            name: "NATS JetStream",
            client: "backend = \"nats\"\nurl = \"nats://127.0.0.1:4222\"\n\
                     options = { jetstream = true, stream = \"COURIER_MODEL\", \
                     subjects = \"jsmodel.>\", storage = \"memory\" }"
                .into(),
            prefix: "jsmodel",
            embedded: false,
            without: &[],
        },
        REMOTE_CASES,
    );
}

#[cfg(feature = "redis")]
#[test]
fn redis_streams() {
    if !common::broker("redis-server", 6379) {
        return;
    }
    on(
        Target {
            name: "Redis Streams",
            client: "backend = \"redis\"\nurl = \"redis://127.0.0.1:6379\"\n\
                     options = { streams = true, maxlen = 100000 }"
                .into(),
            prefix: "rstmodel",
            embedded: false,
            without: &[],
        },
        REMOTE_CASES,
    );
}

#[cfg(feature = "amqp")]
#[test]
fn amqp() {
    if !common::broker("rabbitmq", 5672) {
        return;
    }
    on(
        Target {
            name: "RabbitMQ (AMQP 0-9-1)",
            client: "backend = \"amqp\"\nurl = \"amqp://guest:guest@127.0.0.1:5672/%2f\"\n\
                     options = { exchange = \"courier.model\" }"
                .into(),
            prefix: "amqpmodel",
            embedded: false,
            without: &[],
        },
        REMOTE_CASES,
    );
}

#[cfg(feature = "mqtt")]
fn mqtt_target(without: &'static [Action]) -> Target {
    Target {
        name: "Mosquitto (MQTT 5)",
        client: "backend = \"mqtt\"\nurl = \"mqtt://127.0.0.1:1883\"".into(),
        prefix: "mqttmodel",
        embedded: false,
        without,
    }
}

#[cfg(feature = "mqtt")]
#[test]
fn mqtt() {
    if !common::broker("mosquitto", 1883) {
        return;
    }
    // A clean-session subscription that is closed loses what the broker had
    // sent it and nobody took yet: re-subscribing mid-call loses messages
    // (issue 13; `mqtt_resubscribing` shows it).
    on(mqtt_target(&[Action::Resubscribe]), REMOTE_CASES);
}

/// The MQTT run with re-subscribing mid-call: it loses messages today,
/// since a closed clean-session subscription drops what the broker had sent
/// it (MQTT point-to-point keeps nothing across a close; issue 13).
#[cfg(feature = "mqtt")]
#[test]
#[ignore = "known loss: a closed clean-session MQTT subscription drops what it had received (issue 13)"]
fn mqtt_resubscribing() {
    if !common::broker("mosquitto", 1883) {
        return;
    }
    on(mqtt_target(&[]), REMOTE_CASES);
}
