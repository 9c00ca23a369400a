//! The checker's side of a fault test: what came out of the guest, counted
//! by payload, against what was accepted.
//!
//! A [`Collector`] reads a subscription (the guest's output channel) in a
//! task of its own, acks every delivery and counts each payload; a
//! [`Tally`] compares the counts with the payloads expected: how many came
//! out, how many came out more than once (duplicates, allowed for
//! at-least-once delivery), and which never did (lost).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use courier_broker::Subscription;

use crate::wait::eventually_async;

/// Counts every payload a subscription delivers, until dropped.
pub struct Collector {
    seen: Arc<Mutex<HashMap<String, u32>>>,
    task: tokio::task::JoinHandle<()>,
}

/// Expected payloads against what came out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tally {
    /// Expected payloads that came out at least once.
    pub handled: usize,
    /// Extra copies of expected payloads that came out.
    pub duplicates: u32,
    /// Expected payloads that never came out.
    pub missing: Vec<String>,
}

impl Collector {
    /// Starts reading `subscription` in a task; must be called on a Tokio
    /// runtime. A delivery's ack may fail (the broker is down): that only
    /// means a duplicate later. Errors of the subscription (it reconnects)
    /// are waited out with a short pause.
    pub fn start(mut subscription: Box<dyn Subscription>) -> Self {
        let seen: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
        let task = {
            let seen = seen.clone();
            tokio::spawn(async move {
                while let Some(next) = subscription.next().await {
                    match next {
                        Ok(d) => {
                            let text = String::from_utf8_lossy(&d.message.data).into_owned();
                            *lock(&seen).entry(text).or_default() += 1;
                            let _ = d.acker.ack().await;
                        }
                        // The broker is down (part of the scenario): the
                        // subscription reconnects; pause between its errors.
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            })
        };
        Self { seen, task }
    }

    /// The payloads of `expected` that have not come out yet.
    pub fn missing(&self, expected: &BTreeSet<String>) -> Vec<String> {
        let seen = lock(&self.seen);
        expected
            .iter()
            .filter(|e| !seen.contains_key(*e))
            .cloned()
            .collect()
    }

    /// Whether every payload of `expected` came out within `timeout`.
    pub async fn wait_for(&self, expected: &BTreeSet<String>, timeout: Duration) -> bool {
        eventually_async(timeout, || self.missing(expected).is_empty()).await
    }

    /// What came out of `expected` so far.
    pub fn tally(&self, expected: &BTreeSet<String>) -> Tally {
        let seen = lock(&self.seen);
        let counts: Vec<u32> = expected
            .iter()
            .filter_map(|e| seen.get(e).copied())
            .collect();
        Tally {
            handled: counts.len(),
            duplicates: counts.iter().map(|n| n - 1).sum(),
            missing: expected
                .iter()
                .filter(|e| !seen.contains_key(*e))
                .cloned()
                .collect(),
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
