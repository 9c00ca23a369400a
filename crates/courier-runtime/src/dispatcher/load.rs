//! A guest's load: deliveries waiting in its queue, workers busy with a
//! batch, and a signal ([`Activity`]) that fires whenever the guest may have
//! become idle, so that a host can wait for a drained run instead of
//! polling.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::watch;

/// A signal shared by the guests of a runtime (and whatever else settles
/// messages in the process, like the CLI's `--print`): a counter bumped
/// each time some guest may have become idle or a message was settled
/// outside a guest. Cloning it gives another handle to the same signal.
#[derive(Clone, Debug)]
pub struct Activity(Arc<watch::Sender<u64>>);

impl Default for Activity {
    fn default() -> Self {
        Self::new()
    }
}

impl Activity {
    /// A new signal, never bumped.
    pub fn new() -> Self {
        Self(Arc::new(watch::channel(0).0))
    }

    /// Tells every waiter to look again.
    pub fn notify(&self) {
        self.0.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that sees every bump made after it was marked seen.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.0.subscribe()
    }
}

/// The counters `GuestRuntime::idle` reads.
///
/// A delivery is queued from the moment a pump puts it in the guest's
/// queue until a worker takes it into a batch; a worker counts itself busy
/// before it takes a delivery off the queue, so that a delivery is always
/// seen one way or the other.
#[derive(Debug)]
pub(crate) struct Load {
    queued: AtomicUsize,
    busy: AtomicUsize,
    activity: Activity,
}

impl Load {
    pub(crate) fn new(activity: Activity) -> Self {
        Self {
            queued: AtomicUsize::new(0),
            busy: AtomicUsize::new(0),
            activity,
        }
    }

    /// A pump put `n` deliveries in the queue.
    pub(crate) fn queue(&self, n: usize) {
        self.queued.fetch_add(n, Ordering::SeqCst);
    }

    /// `n` deliveries left the queue for a batch (the worker is busy
    /// already).
    pub(crate) fn take(&self, n: usize) {
        self.queued.fetch_sub(n, Ordering::SeqCst);
    }

    /// `n` deliveries left the queue without a worker: handed back at
    /// shutdown. The guest may be idle now.
    pub(crate) fn hand_back(&self, n: usize) {
        self.queued.fetch_sub(n, Ordering::SeqCst);
        self.activity.notify();
    }

    /// A worker (or the ack-deadline loop) starts on something.
    pub(crate) fn begin(&self) {
        self.busy.fetch_add(1, Ordering::SeqCst);
    }

    /// A worker (or the ack-deadline loop) is done with it: the guest may
    /// be idle now.
    pub(crate) fn end(&self) {
        self.busy.fetch_sub(1, Ordering::SeqCst);
        self.activity.notify();
    }

    /// Deliveries in the queue, not in a batch yet.
    pub(crate) fn queued(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }

    /// Workers busy.
    pub(crate) fn busy(&self) -> usize {
        self.busy.load(Ordering::SeqCst)
    }
}
