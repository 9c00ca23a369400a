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
pub struct Tracker {
    prefix: String,
    next: AtomicU64,
    inflight: Mutex<HashMap<String, InFlight>>,
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

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, InFlight>> {
        self.inflight.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a delivery and returns its id.
    pub fn insert(&self, delivery: InFlight) -> String {
        let id = format!(
            "{}-{}",
            self.prefix,
            self.next.fetch_add(1, Ordering::Relaxed)
        );
        self.lock().insert(id.clone(), delivery);
        id
    }

    /// Removes and returns the delivery `id`.
    pub fn take(&self, id: &str) -> Option<InFlight> {
        self.lock().remove(id)
    }

    /// Removes and returns the delivery a guest's message refers to: by its
    /// delivery id, else by an exact match of topic, payload, content type
    /// and reply-to.
    pub fn take_for(&self, m: &Message) -> Option<InFlight> {
        let mut inflight = self.lock();
        if let Some(id) = m.meta(DELIVERY_ID_KEY)
            && let Some(found) = inflight.remove(id)
        {
            return Some(found);
        }
        let id = inflight
            .iter()
            .find(|(_, f)| {
                f.message.topic == m.topic
                    && f.message.data == m.data
                    && f.message.content_type == m.content_type
                    && f.message.reply_to == m.reply_to
            })
            .map(|(id, _)| id.clone())?;
        inflight.remove(&id)
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
