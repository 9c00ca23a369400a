//! The guest's queue: deliveries between the pumps that fill it and the
//! workers that empty it, bounded to `batch-size × concurrency`.
//!
//! A pump puts what it took from its subscription in at once, and a worker
//! takes up to a batch at once, each under one short lock: no task holds the
//! queue while it waits, so a worker lingering to fill its batch never keeps
//! another worker from taking what is there.
//!
//! The queue ends once every [`Feeder`] is gone and it is empty: the guest
//! drops its own feeder at shutdown and each pump its one when it stops.

use std::collections::VecDeque;
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use super::load::Load;
use crate::deliveries::InFlight;

/// The queue, shared by the guest, its pumps and its workers.
pub(crate) struct GuestQueue {
    state: Mutex<State>,
    capacity: usize,
    /// Woken when deliveries arrive or the last feeder leaves.
    arrived: Notify,
    /// Woken when deliveries leave (room).
    left: Notify,
    load: Arc<Load>,
}

struct State {
    items: VecDeque<InFlight>,
    feeders: usize,
}

/// A handle that puts deliveries in the queue; the queue ends when the last
/// one is dropped.
pub(crate) struct Feeder(Arc<GuestQueue>);

impl GuestQueue {
    /// An empty queue of `capacity` deliveries, as its first feeder.
    pub(crate) fn with_feeder(capacity: usize, load: Arc<Load>) -> Feeder {
        Feeder(Arc::new(Self {
            state: Mutex::new(State {
                items: VecDeque::with_capacity(capacity),
                feeders: 1,
            }),
            capacity: capacity.max(1),
            arrived: Notify::new(),
            left: Notify::new(),
            load,
        }))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for deliveries and takes the first `max` of them: `None` once
    /// the queue has ended. Counts the caller busy before the deliveries
    /// leave the queue (see [`Load`]). A redelivered message (`isolated`)
    /// comes alone: it is taken only as the first of a batch, and ends it.
    pub(crate) async fn take(
        &self,
        max: usize,
        isolated: impl Fn(&InFlight) -> bool,
    ) -> Option<Vec<InFlight>> {
        self.when_filled(|state| {
            self.load.begin();
            self.pop(state, max.max(1), true, &isolated)
        })
        .await
    }

    /// Waits until the queue holds deliveries and runs `take` on it under
    /// the lock; `None` once the queue has ended (no feeder, nothing left).
    async fn when_filled<T>(&self, take: impl Fn(&mut State) -> T) -> Option<T> {
        loop {
            let mut arrived = pin!(self.arrived.notified());
            arrived.as_mut().enable();
            {
                let mut state = self.lock();
                if !state.items.is_empty() {
                    return Some(take(&mut state));
                }
                if state.feeders == 0 {
                    return None;
                }
            }
            arrived.await;
        }
    }

    /// Takes what is there, up to `max`, without waiting, for a batch that
    /// has begun (its worker is busy already): stops before a redelivered
    /// message. `Ok(n)` with the number taken, `Err(())` when the next one
    /// is redelivered or the queue has ended: the batch should go as it is.
    pub(crate) fn take_more(
        &self,
        batch: &mut Vec<InFlight>,
        max: usize,
        isolated: impl Fn(&InFlight) -> bool,
    ) -> Result<usize, ()> {
        let mut state = self.lock();
        let more = self.pop(&mut state, max, false, &isolated);
        let ended = state.feeders == 0 && state.items.is_empty();
        let blocked = state.items.front().is_some_and(&isolated);
        drop(state);
        let n = more.len();
        batch.extend(more);
        if blocked || ended { Err(()) } else { Ok(n) }
    }

    /// A future that is ready once deliveries may have arrived (or the
    /// queue ended) after this call.
    pub(crate) fn arrival(&self) -> impl Future<Output = ()> + '_ {
        let mut arrived = Box::pin(self.arrived.notified());
        arrived.as_mut().enable();
        arrived
    }

    /// Pops up to `max` from the front under the lock; the first one even if
    /// it is redelivered when `first`, no redelivered one otherwise, and
    /// nothing after a redelivered one.
    fn pop(
        &self,
        state: &mut State,
        max: usize,
        first: bool,
        isolated: &impl Fn(&InFlight) -> bool,
    ) -> Vec<InFlight> {
        let mut out = Vec::new();
        if first && state.items.front().is_some_and(isolated) {
            out.push(state.items.pop_front().expect("front exists"));
            self.taken(out.len());
            return out;
        }
        let n = state
            .items
            .iter()
            .take(max)
            .take_while(|d| !isolated(d))
            .count();
        out.extend(state.items.drain(..n));
        self.taken(out.len());
        out
    }

    /// `n` deliveries left the queue: room for the pumps.
    fn taken(&self, n: usize) {
        if n > 0 {
            self.load.take(n);
            self.left.notify_waiters();
        }
    }

    /// Takes everything left, as it arrives, until the queue ends: for the
    /// guest's shutdown, once its workers are gone.
    pub(crate) async fn drain(&self) -> Option<Vec<InFlight>> {
        self.when_filled(|state| state.items.drain(..).collect())
            .await
    }
}

impl Feeder {
    /// Waits until the queue has room, and returns how much (at the time):
    /// the room is not held, other feeders share it.
    pub(crate) async fn room(&self) -> usize {
        loop {
            let mut left = pin!(self.0.left.notified());
            left.as_mut().enable();
            let room = self.0.capacity.saturating_sub(self.0.lock().items.len());
            if room > 0 {
                return room;
            }
            left.await;
        }
    }

    /// Queues as many of `deliveries` as there is room for, in order, and
    /// leaves the rest in `deliveries` (another feeder took the room).
    pub(crate) fn put(&self, deliveries: &mut VecDeque<InFlight>) {
        let mut state = self.0.lock();
        let room = self.0.capacity.saturating_sub(state.items.len());
        let n = room.min(deliveries.len());
        if n == 0 {
            return;
        }
        // Counted queued before a worker can see them.
        self.0.load.queue(n);
        state.items.extend(deliveries.drain(..n));
        drop(state);
        self.0.arrived.notify_waiters();
    }

    /// The queue itself.
    pub(crate) fn queue(&self) -> &Arc<GuestQueue> {
        &self.0
    }
}

impl Clone for Feeder {
    fn clone(&self) -> Self {
        self.0.lock().feeders += 1;
        Self(self.0.clone())
    }
}

impl Drop for Feeder {
    fn drop(&mut self) {
        let last = {
            let mut state = self.0.lock();
            state.feeders -= 1;
            state.feeders == 0
        };
        if last {
            self.0.arrived.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use courier_broker::{Delivery, Message};

    use super::*;
    use crate::dispatcher::load::Activity;
    use crate::dispatcher::tests::{NoAck, source};

    fn inbound(topic: &str, attempt: u32) -> InFlight {
        let delivery = Delivery {
            message: Message::new(topic, "x"),
            attempt,
            acker: Box::new(NoAck),
        };
        InFlight::arrived(delivery, source())
    }

    fn topics(batch: &[InFlight]) -> Vec<&str> {
        batch.iter().map(|d| d.message.topic.as_str()).collect()
    }

    fn isolated(d: &InFlight) -> bool {
        d.attempt > 1
    }

    #[tokio::test]
    async fn holds_at_most_its_capacity_and_counts_the_load() {
        let load = Arc::new(Load::new(Activity::new()));
        let feeder = GuestQueue::with_feeder(3, load.clone());
        let queue = feeder.queue().clone();
        let mut pending: VecDeque<InFlight> = ["a", "b", "c", "d"].map(|t| inbound(t, 1)).into();
        assert_eq!(feeder.room().await, 3);
        feeder.put(&mut pending);
        assert_eq!(
            topics(pending.make_contiguous()),
            ["d"],
            "one more than the room"
        );
        assert_eq!(load.queued(), 3);
        let batch = queue.take(2, isolated).await.unwrap();
        assert_eq!(topics(&batch), ["a", "b"]);
        assert_eq!((load.queued(), load.busy()), (1, 1));
        assert_eq!(feeder.room().await, 2);
        feeder.put(&mut pending);
        assert!(pending.is_empty());
        let mut batch = batch;
        assert_eq!(queue.take_more(&mut batch, 5, isolated), Ok(2));
        assert_eq!(topics(&batch), ["a", "b", "c", "d"]);
        assert_eq!(load.queued(), 0);
    }

    #[tokio::test]
    async fn a_redelivery_travels_alone() {
        let load = Arc::new(Load::new(Activity::new()));
        let feeder = GuestQueue::with_feeder(10, load);
        let queue = feeder.queue().clone();
        let mut pending: VecDeque<InFlight> = [
            inbound("a", 1),
            inbound("b", 1),
            inbound("again", 2),
            inbound("c", 1),
        ]
        .into();
        feeder.put(&mut pending);
        let mut first = queue.take(10, isolated).await.unwrap();
        assert_eq!(
            topics(&first),
            ["a", "b"],
            "a batch ends before a redelivery"
        );
        assert_eq!(queue.take_more(&mut first, 10, isolated), Err(()));
        let alone = queue.take(10, isolated).await.unwrap();
        assert_eq!(topics(&alone), ["again"]);
        let rest = queue.take(10, isolated).await.unwrap();
        assert_eq!(topics(&rest), ["c"]);
    }

    #[tokio::test]
    async fn ends_when_the_last_feeder_is_gone_and_nothing_is_left() {
        let load = Arc::new(Load::new(Activity::new()));
        let feeder = GuestQueue::with_feeder(10, load);
        let queue = feeder.queue().clone();
        let second = feeder.clone();
        let mut pending: VecDeque<InFlight> = [inbound("a", 1)].into();
        second.put(&mut pending);
        drop(feeder);
        drop(second);
        assert_eq!(topics(&queue.drain().await.unwrap()), ["a"]);
        assert!(queue.drain().await.is_none());
        assert!(queue.take(10, isolated).await.is_none());
    }

    #[tokio::test]
    async fn a_waiting_worker_wakes_for_what_arrives() {
        let load = Arc::new(Load::new(Activity::new()));
        let feeder = GuestQueue::with_feeder(10, load);
        let queue = feeder.queue().clone();
        let worker = tokio::spawn(async move { queue.take(10, isolated).await.map(|b| b.len()) });
        tokio::task::yield_now().await;
        let mut pending: VecDeque<InFlight> = [inbound("a", 1), inbound("b", 1)].into();
        feeder.put(&mut pending);
        let taken = tokio::time::timeout(Duration::from_secs(5), worker)
            .await
            .expect("woken")
            .unwrap();
        assert_eq!(taken, Some(2));
    }
}
