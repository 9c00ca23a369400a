//! The pump: moves deliveries from one broker subscription into the guest's
//! bounded queue, taking only what the queue has room for, and closes the
//! subscription when told to (at shutdown, once the workers have settled,
//! detaching it: a persistent membership stays for the next start).
//!
//! An unsubscribed pump says when its subscription has begun closing (see
//! [`Subscription::begin_close`]), before the network round trips of
//! closing it: a guest that subscribes again right after may then take over
//! what the old subscription holds at the broker.
//!
//! Every wait of a pump yields to its stop signal (`biased`, the stop
//! first): a pump blocked on a full queue, or waiting to retry its
//! subscription, never holds up an unsubscribe or a shutdown. A stopped
//! pump drops its sender of the guest's queue at once, which tells the
//! guest's shutdown that nothing more will be queued.

use std::sync::Arc;
use std::time::Duration;

use courier_broker::{Delivery, Subscription};
use tokio::sync::{mpsc, oneshot, watch};

use super::load::Load;
use crate::deliveries::Source;

/// A delivery on its way to a worker.
pub(crate) struct Inbound {
    pub(crate) delivery: Delivery,
    pub(crate) source: Arc<Source>,
}

/// The most deliveries a pump takes from its subscription at once.
const MAX_PUMP_BATCH: usize = 256;

/// How long a pump waits before it asks a failing subscription again.
const RETRY_AFTER: Duration = Duration::from_millis(500);

/// How a pump is stopped, and what it says while stopping.
pub(crate) struct Control {
    /// Stops the pump: `true` at shutdown (detach once the workers are
    /// done), `false` to unsubscribe.
    pub(crate) stop: oneshot::Receiver<bool>,
    /// Told once an unsubscribed subscription has begun closing.
    pub(crate) began_closing: oneshot::Sender<()>,
    /// Set once the guest's workers have settled their batches.
    pub(crate) workers_done: watch::Receiver<bool>,
}

/// Moves deliveries from a broker subscription to the guest's queue.
pub(crate) async fn pump(
    mut sub: Box<dyn Subscription>,
    source: Arc<Source>,
    tx: mpsc::Sender<Inbound>,
    load: Arc<Load>,
    control: Control,
    guest: Arc<str>,
) {
    let Control {
        mut stop,
        began_closing,
        mut workers_done,
    } = control;
    let shutdown = feed(sub.as_mut(), &source, tx, &load, &mut stop, &guest).await;
    let closed = if shutdown {
        let _ = workers_done.wait_for(|done| *done).await;
        sub.detach().await
    } else {
        sub.begin_close();
        let _ = began_closing.send(());
        sub.close().await
    };
    if let Err(e) = closed {
        tracing::warn!(guest = %guest, "closing subscription: {e}");
    }
}

/// Feeds the queue until stopped (`true` when stopped for a shutdown) or
/// until the subscription or the queue is closed (`false`). `tx` is
/// dropped on return.
async fn feed(
    sub: &mut dyn Subscription,
    source: &Arc<Source>,
    tx: mpsc::Sender<Inbound>,
    load: &Load,
    stop: &mut oneshot::Receiver<bool>,
    guest: &str,
) -> bool {
    loop {
        // Room in the guest's queue first, then a message: what the guest
        // cannot take yet stays available in the broker for other consumers.
        // Waiting must not block an unsubscribe: the guest may be
        // unsubscribing from inside the handler that would make the room.
        // `biased`: a stop sent before a message arrived is seen first, so
        // nothing published after an unsubscribe returned is taken.
        let permit = tokio::select! {
            biased;
            r = &mut *stop => return r.unwrap_or(false),
            permit = tx.reserve() => match permit {
                Ok(permit) => permit,
                Err(_) => return false,
            },
        };
        // Whatever else the queue has room for right now may come along
        // (without holding that room while waiting: other pumps share it).
        let room = tx.capacity().min(MAX_PUMP_BATCH);
        let deliveries = tokio::select! {
            biased;
            r = &mut *stop => return r.unwrap_or(false),
            next = sub.next_batch(1 + room) => match next {
                Some(Ok(deliveries)) => deliveries,
                Some(Err(e)) => {
                    drop(permit);
                    tracing::warn!(guest = %guest, "subscription error, retrying: {e}");
                    tokio::select! {
                        biased;
                        r = &mut *stop => return r.unwrap_or(false),
                        _ = tokio::time::sleep(RETRY_AFTER) => {}
                    }
                    continue;
                }
                None => return false,
            },
        };
        let mut deliveries = deliveries.into_iter().map(|delivery| Inbound {
            delivery,
            source: source.clone(),
        });
        if let Some(first) = deliveries.next() {
            load.queue();
            permit.send(first);
        }
        // Another pump may have taken the room meanwhile: wait for it, but
        // not past a stop, and hand back whatever could not be queued.
        let mut stopped = None;
        for inbound in deliveries.by_ref() {
            let permit = match tx.try_reserve() {
                Ok(permit) => Some(permit),
                Err(mpsc::error::TrySendError::Full(())) => tokio::select! {
                    biased;
                    r = &mut *stop => {
                        stopped = Some(r.unwrap_or(false));
                        None
                    }
                    permit = tx.reserve() => permit.ok(),
                },
                Err(mpsc::error::TrySendError::Closed(())) => None,
            };
            match permit {
                Some(permit) => {
                    load.queue();
                    permit.send(inbound);
                }
                None => {
                    release(guest, std::iter::once(inbound).chain(deliveries.by_ref())).await;
                    break;
                }
            }
        }
        if let Some(shutdown) = stopped {
            return shutdown;
        }
        if tx.is_closed() {
            return false;
        }
    }
}

/// Hands deliveries that never reached the guest back to the broker,
/// without counting an attempt where the broker allows it.
pub(super) async fn release(guest: &str, inbound: impl Iterator<Item = Inbound>) {
    for Inbound { delivery, .. } in inbound {
        if let Err(e) = super::settlement::bounded("release", delivery.acker.release()).await {
            tracing::debug!(guest = %guest, "handing back an unqueued delivery: {e}");
        }
    }
}
