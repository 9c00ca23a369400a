//! What the host measures beyond its counters: the metric names and their
//! descriptions, the histograms' buckets, and the `courier-sent-at` stamp
//! that end-to-end delivery latency is measured with.
//!
//! Delivery latency runs from acceptance — the host publishing a message
//! for the HTTP ingress, `--stdin`, a guest's `send` or a dead letter — to a
//! guest's `handler` call starting on it. While it is measured
//! ([`crate::Runtime::measure_delivery_latency`]), every publish through the
//! client pool stamps [`SENT_AT_KEY`] = the wall-clock time in unix
//! microseconds, and the dispatcher observes *now − stamp* for each first
//! delivery (attempt 1) of a stamped message just before the call. Guests
//! never see the stamp. Clocks of different machines differ: between hosts
//! the figure includes their clock offset (a negative age is not recorded).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use courier_broker::{Backend, BrokerError, Features, Message, Subscription, SubscriptionSpec};

/// The log filter `courier run` uses when `RUST_LOG` is not set: `info`,
/// with the compiler's and wasmtime's chatter at `warn`. The benchmarks log
/// with it too, so that their figures hold what logging costs a user.
pub const DEFAULT_LOG_FILTER: &str = "info,cranelift=warn,wasmtime=warn";

/// Metadata key with the unix time, in microseconds, at which a Courier host
/// published the message (only while it measures delivery latency).
pub const SENT_AT_KEY: &str = "courier-sent-at";

/// Handler call duration, per guest (a histogram).
pub const HANDLER_DURATION: &str = "courier_handler_duration_seconds";
/// Acceptance to the start of the handler call, per guest (a histogram).
pub const DELIVERY_LATENCY: &str = "courier_delivery_latency_seconds";

/// Buckets of [`HANDLER_DURATION`], in seconds: 100 µs to 60 s.
pub const HANDLER_DURATION_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];
/// Buckets of [`DELIVERY_LATENCY`], in seconds: 50 µs to 5 minutes
/// (redelivery backoff is not in it: only first deliveries count).
pub const DELIVERY_LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Every metric of the runtime with its help text, for `# HELP` lines:
/// (name, kind, help).
pub const METRICS: &[(&str, Kind, &str)] = &[
    (
        "courier_messages_delivered_total",
        Kind::Counter,
        "Messages handed to a guest's handler.",
    ),
    (
        "courier_messages_accepted_total",
        Kind::Counter,
        "Messages accepted (complete-message or auto-ack).",
    ),
    (
        "courier_messages_redelivered_total",
        Kind::Counter,
        "Messages rejected and redelivered later.",
    ),
    (
        "courier_messages_dead_lettered_total",
        Kind::Counter,
        "Messages published to the dead-letter channel, or dropped without one.",
    ),
    (
        "courier_handler_traps_total",
        Kind::Counter,
        "Handler calls that trapped or ran past their deadline.",
    ),
    (
        "courier_handler_errors_total",
        Kind::Counter,
        "Handler calls that returned err.",
    ),
    (
        HANDLER_DURATION,
        Kind::Histogram,
        "Duration of handler calls, in seconds.",
    ),
    (
        DELIVERY_LATENCY,
        Kind::Histogram,
        "Seconds from a Courier host publishing a message to a handler call starting on its \
         first delivery.",
    ),
    (
        "courier_broker_disconnects_total",
        Kind::Counter,
        "Broker connections lost, by backend.",
    ),
    (
        "courier_broker_reconnects_total",
        Kind::Counter,
        "Broker connections regained, by backend.",
    ),
    (
        "courier_broker_up",
        Kind::Gauge,
        "1 when no connection of the backend is down, 0 while one is.",
    ),
];

/// The kind of a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// A distribution, in buckets.
    Histogram,
}

/// Describes every metric of [`METRICS`] to the installed recorder, so that
/// the Prometheus output has `# HELP` and `# TYPE` lines.
pub fn describe() {
    for (name, kind, help) in METRICS {
        match kind {
            Kind::Counter => metrics::describe_counter!(*name, *help),
            Kind::Gauge => metrics::describe_gauge!(*name, *help),
            Kind::Histogram => {
                metrics::describe_histogram!(*name, metrics::Unit::Seconds, *help)
            }
        }
    }
}

/// Microseconds since the unix epoch, now.
fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Stamps `message` with the time of publishing ([`SENT_AT_KEY`]),
/// replacing an older stamp.
pub fn stamp(message: &mut Message) {
    message.set_meta(SENT_AT_KEY, now_micros().to_string());
}

/// How long ago `message` was stamped, if it was, with a stamp that is a
/// number and not in the future.
pub fn age(message: &Message) -> Option<Duration> {
    let sent: u64 = message.meta(SENT_AT_KEY)?.parse().ok()?;
    now_micros().checked_sub(sent).map(Duration::from_micros)
}

/// A backend whose publishes are stamped with [`SENT_AT_KEY`].
pub(crate) struct Stamping(pub(crate) Arc<dyn Backend>);

#[async_trait]
impl Backend for Stamping {
    fn kind(&self) -> &'static str {
        self.0.kind()
    }

    fn features(&self) -> Features {
        self.0.features()
    }

    async fn publish(&self, mut messages: Vec<Message>) -> Result<(), BrokerError> {
        messages.iter_mut().for_each(stamp);
        self.0.publish(messages).await
    }

    async fn subscribe(
        &self,
        spec: SubscriptionSpec,
    ) -> Result<Box<dyn Subscription>, BrokerError> {
        self.0.subscribe(spec).await
    }

    fn unsettled(&self) -> Option<u64> {
        self.0.unsettled()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_ages_and_a_bad_one_is_ignored() {
        let mut m = Message::new("t", "x");
        assert_eq!(age(&m), None);
        stamp(&mut m);
        stamp(&mut m);
        assert_eq!(m.metadata.len(), 1, "a new stamp replaces the old one");
        assert!(age(&m).is_some_and(|d| d < Duration::from_secs(60)));
        m.set_meta(SENT_AT_KEY, "yesterday");
        assert_eq!(age(&m), None);
        m.set_meta(SENT_AT_KEY, (now_micros() + 60_000_000).to_string());
        assert_eq!(age(&m), None, "a stamp in the future is not an age");
    }
}
