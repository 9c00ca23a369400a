//! Delivery tracking: the messages a guest holds, by host-issued delivery id.
//!
//! Each message handed to a guest gets an id, unique in the host, that goes to
//! the guest in its metadata (`courier-delivery-id`). `complete-message` and
//! `abandon-message` find the delivery by that id — or, when the guest hands
//! back a message without one, by an exact match among this guest's in-flight
//! messages. One tracker serves one guest, so a guest can never settle
//! another guest's deliveries: their ids are not in its tracker.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use courier_broker::message::DELIVERY_ID_KEY;
use courier_broker::{Acker, Backend, Message};
use tokio::time::Instant;

/// Where a delivery came from: needed to dead-letter it on the same broker.
pub struct Source {
    /// The subscription's broker connection.
    pub backend: Arc<dyn Backend>,
}

/// A message the guest holds, not yet settled.
pub struct InFlight {
    /// Settles it with the broker.
    pub acker: Box<dyn Acker>,
    /// The message as it arrived (without Courier's delivery keys).
    pub message: Message,
    /// Delivery attempt, from 1.
    pub attempt: u32,
    /// The subscription it came from.
    pub source: Arc<Source>,
    /// When it was handed to the guest.
    pub acquired: Instant,
}

/// One guest's in-flight deliveries.
///
/// A delivery id is `PREFIX-N`: a random prefix per tracker and a counter.
/// Inside, deliveries are kept by `N`; a batch is recorded and settled under
/// one lock.
pub struct Tracker {
    prefix: String,
    next: AtomicU64,
    inflight: Mutex<HashMap<u64, InFlight>>,
}

impl Default for Tracker {
    fn default() -> Self {
        Self::new()
    }
}

impl Tracker {
    /// An empty tracker with its own random id prefix.
    pub fn new() -> Self {
        Self {
            prefix: format!("{:016x}", rand::random::<u64>()),
            next: AtomicU64::new(1),
            inflight: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, InFlight>> {
        self.inflight.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reserves `n` consecutive delivery numbers and returns the first.
    pub fn reserve(&self, n: usize) -> u64 {
        self.next.fetch_add(n as u64, Ordering::Relaxed)
    }

    /// The delivery id the guest sees for number `n`.
    pub fn id(&self, n: u64) -> String {
        let mut id = String::with_capacity(self.prefix.len() + 21);
        id.push_str(&self.prefix);
        id.push('-');
        id.push_str(itoa(n, &mut [0; 20]));
        id
    }

    /// The number of a delivery id of this tracker.
    fn number(&self, id: &str) -> Option<u64> {
        id.strip_prefix(self.prefix.as_str())?
            .strip_prefix('-')?
            .parse()
            .ok()
    }

    /// Records deliveries by their reserved numbers.
    pub fn insert_all(&self, deliveries: impl IntoIterator<Item = (u64, InFlight)>) {
        self.lock().extend(deliveries);
    }

    /// Removes and returns the deliveries `ns` that are still held.
    pub fn take_all(&self, ns: impl IntoIterator<Item = u64>) -> Vec<InFlight> {
        let ns = ns.into_iter();
        let mut taken = Vec::with_capacity(ns.size_hint().0);
        let mut inflight = self.lock();
        taken.extend(ns.filter_map(|n| inflight.remove(&n)));
        taken
    }

    /// Removes and returns the delivery a guest's message refers to: by its
    /// delivery id, else by an exact match of topic, payload, content type
    /// and reply-to.
    pub fn take_for(&self, m: &Message) -> Option<InFlight> {
        let mut inflight = self.lock();
        if let Some(n) = m.meta(DELIVERY_ID_KEY).and_then(|id| self.number(id))
            && let Some(found) = inflight.remove(&n)
        {
            return Some(found);
        }
        let n = inflight
            .iter()
            .find(|(_, f)| {
                f.message.topic == m.topic
                    && f.message.data == m.data
                    && f.message.content_type == m.content_type
                    && f.message.reply_to == m.reply_to
            })
            .map(|(n, _)| *n)?;
        inflight.remove(&n)
    }

    /// How many deliveries are in flight.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets deliveries acquired before `before`: their ack deadline has
    /// passed and the broker redelivers them.
    pub fn expire(&self, before: Instant) -> usize {
        let mut inflight = self.lock();
        let n = inflight.len();
        inflight.retain(|_, f| f.acquired >= before);
        n - inflight.len()
    }
}

/// Formats `n` in decimal into `buf`, without allocating.
fn itoa(mut n: u64, buf: &mut [u8; 20]) -> &str {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[i..]).expect("ascii digits")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_foreign_ids_do_not_parse() {
        let t = Tracker::new();
        let first = t.reserve(3);
        assert_eq!(first, 1);
        for n in [0, 7, 10, u64::MAX] {
            assert_eq!(t.number(&t.id(n)), Some(n));
        }
        let other = Tracker::new();
        assert_eq!(t.number(&other.id(1)), None);
        assert_eq!(t.number("forged-123"), None);
        assert_eq!(t.number(&format!("{}-x", t.prefix)), None);
    }
}
