//! A guest's counters: what the progress line, `/metrics` and the tests
//! read; and its histograms (handler duration, delivery latency), for
//! `/metrics` only.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::telemetry::{DELIVERY_LATENCY, HANDLER_DURATION};

/// Counters of one guest, for the progress line, tests and `/metrics`.
#[derive(Debug)]
pub struct Stats {
    /// Messages handed to `handler`.
    pub delivered: AtomicU64,
    /// Messages accepted (complete-message or auto-ack).
    pub accepted: AtomicU64,
    /// Messages rejected and redelivered later.
    pub redelivered: AtomicU64,
    /// Messages published to the dead-letter channel, or dropped without one.
    pub dead_lettered: AtomicU64,
    /// Handler calls that trapped or ran past their deadline.
    pub traps: AtomicU64,
    /// Handler calls that returned `err`.
    pub errors: AtomicU64,
    /// The same counters in the metrics registry, labelled with the guest.
    metrics: [metrics::Counter; 6],
    /// Handler call durations.
    handler_duration: metrics::Histogram,
    /// From a host's publish to the handler call, for first deliveries.
    delivery_latency: metrics::Histogram,
}

/// One of the counters of [`Stats`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum Stat {
    Delivered,
    Accepted,
    Redelivered,
    DeadLettered,
    Traps,
    Errors,
}

/// A snapshot of [`Stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatsSnapshot {
    /// See [`Stats::delivered`].
    pub delivered: u64,
    /// See [`Stats::accepted`].
    pub accepted: u64,
    /// See [`Stats::redelivered`].
    pub redelivered: u64,
    /// See [`Stats::dead_lettered`].
    pub dead_lettered: u64,
    /// See [`Stats::traps`].
    pub traps: u64,
    /// See [`Stats::errors`].
    pub errors: u64,
}

impl Stats {
    /// Zeroed counters, registered with the metrics recorder as the guest's.
    pub(crate) fn new(guest: &str) -> Self {
        let counter = |name: &'static str| metrics::counter!(name, "guest" => guest.to_string());
        Self {
            delivered: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            redelivered: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            traps: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            metrics: [
                counter("courier_messages_delivered_total"),
                counter("courier_messages_accepted_total"),
                counter("courier_messages_redelivered_total"),
                counter("courier_messages_dead_lettered_total"),
                counter("courier_handler_traps_total"),
                counter("courier_handler_errors_total"),
            ],
            handler_duration: metrics::histogram!(HANDLER_DURATION, "guest" => guest.to_string()),
            delivery_latency: metrics::histogram!(DELIVERY_LATENCY, "guest" => guest.to_string()),
        }
    }

    /// Records the duration of one handler call.
    pub(crate) fn handler_took(&self, d: Duration) {
        self.handler_duration.record(d.as_secs_f64());
    }

    /// Records the delivery latency of one message.
    pub(crate) fn delivered_after(&self, d: Duration) {
        self.delivery_latency.record(d.as_secs_f64());
    }

    pub(crate) fn add(&self, stat: Stat, n: u64) {
        let counter = match stat {
            Stat::Delivered => &self.delivered,
            Stat::Accepted => &self.accepted,
            Stat::Redelivered => &self.redelivered,
            Stat::DeadLettered => &self.dead_lettered,
            Stat::Traps => &self.traps,
            Stat::Errors => &self.errors,
        };
        counter.fetch_add(n, Ordering::Relaxed);
        self.metrics[stat as usize].increment(n);
    }

    /// Reads all counters.
    pub fn snapshot(&self) -> StatsSnapshot {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            delivered: r(&self.delivered),
            accepted: r(&self.accepted),
            redelivered: r(&self.redelivered),
            dead_lettered: r(&self.dead_lettered),
            traps: r(&self.traps),
            errors: r(&self.errors),
        }
    }
}
