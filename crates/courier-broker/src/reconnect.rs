//! Losing and regaining a broker: capped exponential backoff, and the logs
//! and metrics every backend reports through when one of its connections
//! goes down or comes back.
//!
//! Each broker connection a backend keeps (a publishing connection, a
//! subscription's connection) owns a [`Link`]. The backend calls
//! [`Link::lost`] when the connection breaks, [`Link::retry_failed`] after
//! each reconnection attempt that did not work, and [`Link::restored`] when it
//! works again. That logs (`warn` on loss and failed attempts, `info` on
//! recovery) and feeds the metrics, named the same on every backend:
//!
//! - `courier_broker_disconnects_total{backend}`: connections lost;
//! - `courier_broker_reconnects_total{backend}`: connections regained;
//! - `courier_broker_up{backend}`: 1 when no connection of that backend kind
//!   is down, 0 while one is.
//!
//! The same counts are kept in process ([`stats`]), so tests can check them
//! without installing a metrics recorder.

use std::collections::HashMap;
use std::fmt::Display;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

/// First delay before reconnecting.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Largest delay between reconnection attempts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The delay before reconnection attempt `attempt` (1 for the first):
/// 100 ms, doubled on each attempt, capped at 5 s.
pub fn backoff(attempt: u32) -> Duration {
    let doublings = attempt.saturating_sub(1).min(16);
    BACKOFF_MIN
        .saturating_mul(1u32 << doublings)
        .min(BACKOFF_MAX)
}

/// Reconnection counts of one backend kind, since the process started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Connections lost.
    pub disconnects: u64,
    /// Connections regained.
    pub reconnects: u64,
    /// Connections down right now.
    pub down: u64,
}

static STATS: Mutex<Option<HashMap<&'static str, Stats>>> = Mutex::new(None);

fn update(backend: &'static str, f: impl FnOnce(&mut Stats)) {
    let mut all = STATS.lock().unwrap_or_else(|e| e.into_inner());
    let stats = all
        .get_or_insert_with(HashMap::new)
        .entry(backend)
        .or_default();
    f(stats);
    metrics::gauge!("courier_broker_up", "backend" => backend).set(if stats.down == 0 {
        1.0
    } else {
        0.0
    });
}

/// The reconnection counts of `backend` (`nats`, `redis`, `amqp`, `mqtt`).
pub fn stats(backend: &str) -> Stats {
    let all = STATS.lock().unwrap_or_else(|e| e.into_inner());
    all.as_ref()
        .and_then(|m| m.get(backend))
        .copied()
        .unwrap_or_default()
}

/// The health of one broker connection: down or up, and how many attempts
/// to reconnect it have failed.
#[derive(Debug)]
pub struct Link {
    backend: &'static str,
    what: String,
    down: AtomicBool,
    failures: AtomicU32,
}

impl Link {
    /// A connection of `backend`, described by `what` in logs (the broker
    /// address, and the publisher or the subscription's channel).
    pub fn new(backend: &'static str, what: impl Into<String>) -> Self {
        update(backend, |_| {});
        Self {
            backend,
            what: what.into(),
            down: AtomicBool::new(false),
            failures: AtomicU32::new(0),
        }
    }

    /// Whether the connection is known to be down.
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::SeqCst)
    }

    /// The connection broke: logs and counts it once per outage. Returns the
    /// delay to wait before the first reconnection attempt.
    pub fn lost(&self, error: &dyn Display) -> Duration {
        if !self.down.swap(true, Ordering::SeqCst) {
            self.failures.store(0, Ordering::SeqCst);
            tracing::warn!(
                broker = self.backend,
                connection = %self.what,
                error = %error,
                "broker connection lost; reconnecting"
            );
            metrics::counter!("courier_broker_disconnects_total", "backend" => self.backend)
                .increment(1);
            update(self.backend, |s| {
                s.disconnects += 1;
                s.down += 1;
            });
            backoff(1)
        } else {
            self.retry_failed(error)
        }
    }

    /// A reconnection attempt failed: logs it and returns the delay before
    /// the next one.
    pub fn retry_failed(&self, error: &dyn Display) -> Duration {
        let attempt = self.failures.fetch_add(1, Ordering::SeqCst) + 1;
        let delay = backoff(attempt + 1);
        tracing::warn!(
            broker = self.backend,
            connection = %self.what,
            attempt,
            error = %error,
            next_in_ms = delay.as_millis() as u64,
            "broker still unreachable"
        );
        delay
    }

    /// The connection works again: logs and counts the recovery, if it was down.
    pub fn restored(&self) {
        if self.down.swap(false, Ordering::SeqCst) {
            let attempts = self.failures.swap(0, Ordering::SeqCst) + 1;
            tracing::info!(
                broker = self.backend,
                connection = %self.what,
                attempts,
                "broker connection restored"
            );
            metrics::counter!("courier_broker_reconnects_total", "backend" => self.backend)
                .increment(1);
            update(self.backend, |s| {
                s.reconnects += 1;
                s.down = s.down.saturating_sub(1);
            });
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        if self.is_down() {
            update(self.backend, |s| s.down = s.down.saturating_sub(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(4), Duration::from_millis(800));
        assert_eq!(backoff(7), BACKOFF_MAX);
        assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
    }

    #[test]
    fn a_link_counts_one_outage_once() {
        let link = Link::new("test-link", "a");
        assert_eq!(link.lost(&"refused"), backoff(1));
        assert_eq!(link.lost(&"refused"), backoff(2));
        assert_eq!(link.retry_failed(&"refused"), backoff(3));
        assert_eq!(stats("test-link").down, 1);
        link.restored();
        link.restored();
        let s = stats("test-link");
        assert_eq!((s.disconnects, s.reconnects, s.down), (1, 1, 0));
        link.lost(&"again");
        drop(link);
        assert_eq!(stats("test-link").down, 0);
    }
}
