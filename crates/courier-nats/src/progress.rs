//! Keeping JetStream from redelivering what Courier still holds.
//!
//! The server redelivers a message when its ack deadline (`ack_wait`) passes
//! without a settlement. A message Courier has pulled may wait in the host
//! (behind a slow batch, a timed-out handler, a new instance) longer than
//! that; redelivered then, it would reach a guest a second time — after
//! the first copy was accepted, or while it is being handled. So every
//! delivery handed out and not yet settled is registered here, and a ticker
//! tells the server each is still in progress (`+WPI`) three times per
//! deadline. The server's deadline thus runs only while no Courier holds
//! the message (it crashed or lost its connection); Courier's own
//! `ack-wait-ms` and handler deadline decide redelivery while it runs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_nats::Subject;

type Held = Mutex<HashMap<u64, Subject>>;

/// The deliveries of one subscription that are handed out and unsettled.
#[derive(Clone, Default)]
pub(crate) struct InProgress {
    held: Arc<Held>,
    next: Arc<AtomicU64>,
}

impl InProgress {
    /// Starts the ticker of this set: it tells the server every `ack_wait /
    /// 3` that each held delivery is in progress, and ends once the set and
    /// every [`Registration`] of it are gone.
    pub(crate) fn start(client: async_nats::Client, ack_wait: Duration) -> Self {
        let progress = Self::default();
        let held = Arc::downgrade(&progress.held);
        let every = (ack_wait / 3).max(Duration::from_millis(50));
        tokio::spawn(tick(client, held, every));
        progress
    }

    /// Holds the delivery whose ack subject is `reply` until the returned
    /// registration is dropped (when the delivery is settled or given up).
    pub(crate) fn hold(&self, reply: Option<Subject>) -> Registration {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        if let Some(reply) = reply {
            lock(&self.held).insert(id, reply);
        }
        Registration {
            held: self.held.clone(),
            id,
        }
    }
}

/// A delivery held in progress; dropping it lets the server's deadline run.
pub(crate) struct Registration {
    held: Arc<Held>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        lock(&self.held).remove(&self.id);
    }
}

fn lock(held: &Held) -> std::sync::MutexGuard<'_, HashMap<u64, Subject>> {
    held.lock().unwrap_or_else(|e| e.into_inner())
}

async fn tick(client: async_nats::Client, held: Weak<Held>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(held) = held.upgrade() else { return };
        let replies: Vec<Subject> = lock(&held).values().cloned().collect();
        drop(held);
        for reply in replies {
            // While disconnected this fails; the server's deadline runs, as
            // it must when no Courier can reach it.
            let _ = client.publish(reply, "+WPI".into()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_registration_holds_until_dropped() {
        let progress = InProgress::default();
        let a = progress.hold(Some(Subject::from("$JS.ACK.a")));
        let b = progress.hold(Some(Subject::from("$JS.ACK.b")));
        let none = progress.hold(None);
        assert_eq!(lock(&progress.held).len(), 2);
        drop(a);
        drop(none);
        let left: Vec<Subject> = lock(&progress.held).values().cloned().collect();
        assert_eq!(left, vec![Subject::from("$JS.ACK.b")]);
        drop(b);
        assert!(lock(&progress.held).is_empty());
    }
}
