//! Delivery tracking: the messages a guest holds, by host-issued delivery id.
//!
//! Each message handed to a guest gets an id, unique in the host, that goes to
//! the guest in its metadata (`courier-delivery-id`). `complete-message` and
//! `abandon-message` find the delivery by that id alone — or, only when the
//! guest hands back a message with no id at all, by an exact match among the
//! deliveries of the handler call it is in. One tracker serves one guest, so
//! a guest can never settle another guest's deliveries: their ids are not in
//! its tracker.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use courier_broker::message::{ATTEMPT_KEY, DELIVERY_ID_KEY};
use courier_broker::{Acker, Backend, Delivery, Message};
use rustc_hash::FxHashMap;
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
    /// The message as it arrived (without Courier's delivery keys); shared,
    /// so that a `handler` call can lower it into the guest from here while
    /// the tracker holds it.
    pub message: Arc<Message>,
    /// Delivery attempt, from 1.
    pub attempt: u32,
    /// The subscription it came from.
    pub source: Arc<Source>,
    /// Since when the guest holds it outside a handler call (manual acks):
    /// its ack deadline counts from then. `None` while a call has it.
    pub waiting_since: Option<Instant>,
}

impl InFlight {
    /// A delivery as it arrives from `source`, as the guest will hold it:
    /// its message shared, and Courier's delivery keys stripped from it
    /// (they are Courier's own: never trusted from the wire).
    pub fn arrived(delivery: Delivery, source: Arc<Source>) -> Self {
        let Delivery {
            mut message,
            attempt,
            acker,
        } = delivery;
        message.remove_meta(DELIVERY_ID_KEY);
        message.remove_meta(ATTEMPT_KEY);
        Self {
            acker,
            message: Arc::new(message),
            attempt,
            source,
            waiting_since: None,
        }
    }
}

/// One guest's in-flight deliveries.
///
/// A delivery id is `PREFIX-N`: a random prefix per tracker and a counter.
/// Inside, deliveries are kept by `N`; a batch is recorded and settled under
/// one lock.
pub struct Tracker {
    prefix: String,
    next: AtomicU64,
    inflight: Mutex<FxHashMap<u64, InFlight>>,
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
            inflight: Mutex::new(FxHashMap::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FxHashMap<u64, InFlight>> {
        self.inflight.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reserves `n` consecutive delivery numbers and returns the first.
    pub fn reserve(&self, n: usize) -> u64 {
        self.next.fetch_add(n as u64, Ordering::Relaxed)
    }

    /// The delivery id the guest sees for number `n`.
    pub fn id(&self, n: u64) -> String {
        self.ids(&[n]).text
    }

    /// The delivery ids of `ns`, written one after another into one buffer.
    pub fn ids(&self, ns: &[u64]) -> Ids {
        let mut text = String::with_capacity(ns.len() * (self.prefix.len() + 8));
        let mut ends = Vec::with_capacity(ns.len());
        let mut digits = itoa::Buffer::new();
        for &n in ns {
            text.push_str(&self.prefix);
            text.push('-');
            text.push_str(digits.format(n));
            ends.push(text.len());
        }
        Ids { text, ends }
    }

    /// The ids of `n` consecutive deliveries from `first`, as a log field:
    /// the one id, or the first and the last. Cheap to format, where a
    /// batch's every id would be written into the `handler` span of every
    /// batch.
    pub fn id_range(&self, first: u64, n: usize) -> IdRange<'_> {
        IdRange {
            prefix: &self.prefix,
            first,
            last: first + (n.max(1) as u64 - 1),
        }
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

    /// Removes and returns the delivery a guest's message refers to.
    ///
    /// A message that carries a delivery id is found by that id alone: an id
    /// that is not in flight (settled already, expired, another guest's,
    /// forged) finds nothing, so a second `complete-message` can never
    /// settle a batch-mate that looks the same. Only a message with no
    /// delivery id at all is matched by content (topic, payload, content
    /// type, reply-to), and only among `scope`: the deliveries of the call
    /// the guest is in, never one still to be handled by another call.
    pub fn take_for(&self, m: &Message, scope: &[u64]) -> Option<InFlight> {
        let mut inflight = self.lock();
        if let Some(id) = m.meta(DELIVERY_ID_KEY) {
            return inflight.remove(&self.number(id)?);
        }
        let n = scope.iter().copied().find(|n| {
            inflight.get(n).is_some_and(|f| {
                f.message.topic == m.topic
                    && f.message.data == m.data
                    && f.message.content_type == m.content_type
                    && f.message.reply_to == m.reply_to
            })
        })?;
        inflight.remove(&n)
    }

    /// Removes and returns every delivery in flight.
    pub fn drain(&self) -> Vec<InFlight> {
        self.lock().drain().map(|(_, f)| f).collect()
    }

    /// How many deliveries are in flight.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Starts the ack deadline of those of `ns` still held: their handler
    /// call returned without settling them.
    pub fn start_waiting(&self, ns: &[u64], now: Instant) {
        let mut inflight = self.lock();
        for n in ns {
            if let Some(f) = inflight.get_mut(n) {
                f.waiting_since = Some(now);
            }
        }
    }

    /// Removes and returns the deliveries that have waited since before
    /// `before`: their ack deadline has passed, and the caller rejects them.
    /// Deliveries in a running handler call never expire.
    pub fn expire(&self, before: Instant) -> Vec<InFlight> {
        let mut inflight = self.lock();
        let due: Vec<u64> = inflight
            .iter()
            .filter(|(_, f)| f.waiting_since.is_some_and(|t| t < before))
            .map(|(n, _)| *n)
            .collect();
        due.into_iter()
            .filter_map(|n| inflight.remove(&n))
            .collect()
    }
}

/// Delivery ids of a batch, in one buffer (see [`Tracker::ids`]).
pub struct Ids {
    text: String,
    ends: Vec<usize>,
}

impl Ids {
    /// The ids, in order.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(&self.ends)
            .map(|(start, &end)| &self.text[start..end])
    }
}

/// Consecutive delivery ids as a log field (see [`Tracker::id_range`]).
pub struct IdRange<'a> {
    prefix: &'a str,
    first: u64,
    last: u64,
}

impl std::fmt::Display for IdRange<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self {
            prefix,
            first,
            last,
        } = self;
        if first == last {
            write!(f, "{prefix}-{first}")
        } else {
            write!(f, "{prefix}-{first} .. {prefix}-{last}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatcher::tests::{NoAck, source};

    #[test]
    fn ids_round_trip_and_foreign_ids_do_not_parse() {
        let t = Tracker::new();
        let first = t.reserve(3);
        assert_eq!(first, 1);
        for n in [0, 7, 10, u64::MAX] {
            assert_eq!(t.number(&t.id(n)), Some(n));
        }
        let ns = [3, 40, 500];
        let ids = t.ids(&ns);
        let ids: Vec<&str> = ids.iter().collect();
        let one_by_one: Vec<String> = ns.iter().map(|n| t.id(*n)).collect();
        assert_eq!(ids, one_by_one);
        let range = t.id_range(40, 3).to_string();
        assert_eq!(range, format!("{} .. {}", t.id(40), t.id(42)));
        assert_eq!(t.id_range(7, 1).to_string(), t.id(7));
        let other = Tracker::new();
        assert_eq!(t.number(&other.id(1)), None);
        assert_eq!(t.number("forged-123"), None);
        assert_eq!(t.number(&format!("{}-x", t.prefix)), None);
    }

    fn held(m: Message) -> InFlight {
        InFlight {
            acker: Box::new(NoAck),
            message: Arc::new(m),
            attempt: 1,
            source: source(),
            waiting_since: None,
        }
    }

    #[test]
    fn a_settled_id_never_falls_back_to_a_look_alike() {
        let t = Tracker::new();
        let first = t.reserve(2);
        let same = Message::new("t", "x");
        t.insert_all([(first, held(same.clone())), (first + 1, held(same.clone()))]);
        let mut by_id = same.clone();
        by_id.set_meta(DELIVERY_ID_KEY, t.id(first));
        let scope = [first, first + 1];
        assert!(t.take_for(&by_id, &scope).is_some());
        assert!(
            t.take_for(&by_id, &scope).is_none(),
            "a second settle by the same id must find nothing"
        );
        by_id.set_meta(DELIVERY_ID_KEY, "forged-1");
        assert!(t.take_for(&by_id, &scope).is_none());
        assert_eq!(t.len(), 1, "the look-alike batch-mate is still held");
        // Without an id: by content, and only within the call's scope.
        assert!(t.take_for(&same, &[]).is_none());
        assert!(t.take_for(&same, &scope).is_some());
        assert!(t.is_empty());
    }
}
