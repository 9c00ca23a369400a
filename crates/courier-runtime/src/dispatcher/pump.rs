//! The pump: moves deliveries from one broker subscription into the guest's
//! bounded queue, taking only what the queue has room for, each already made
//! into what the guest holds ([`InFlight::arrived`], off the worker's path,
//! which is the guest's bottleneck), and closes the
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
//! pump drops its feeder of the guest's queue at once, which tells the
//! guest's shutdown that nothing more will be queued.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use courier_broker::Subscription;
use tokio::sync::{oneshot, watch};

use super::queue::Feeder;
use crate::deliveries::{InFlight, Source};

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
    feeder: Feeder,
    control: Control,
    guest: Arc<str>,
) {
    let Control {
        mut stop,
        began_closing,
        mut workers_done,
    } = control;
    let shutdown = feed(sub.as_mut(), &source, feeder, &mut stop, &guest).await;
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
/// until the subscription is closed (`false`). `feeder` is dropped on
/// return.
async fn feed(
    sub: &mut dyn Subscription,
    source: &Arc<Source>,
    feeder: Feeder,
    stop: &mut oneshot::Receiver<bool>,
    guest: &str,
) -> bool {
    let mut pending = VecDeque::new();
    loop {
        // Room in the guest's queue first, then messages: what the guest
        // cannot take yet stays available in the broker for other consumers.
        // Waiting must not block an unsubscribe: the guest may be
        // unsubscribing from inside the handler that would make the room.
        // `biased`: a stop sent before a message arrived is seen first, so
        // nothing published after an unsubscribe returned is taken.
        let room = tokio::select! {
            biased;
            r = &mut *stop => return r.unwrap_or(false),
            room = feeder.room() => room,
        };
        let deliveries = tokio::select! {
            biased;
            r = &mut *stop => return r.unwrap_or(false),
            next = sub.next_batch(room.min(MAX_PUMP_BATCH)) => match next {
                Some(Ok(deliveries)) => deliveries,
                Some(Err(e)) => {
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
        // Made here as the guest will hold them, off the worker's path.
        pending.extend(
            deliveries
                .into_iter()
                .map(|delivery| InFlight::arrived(delivery, source.clone())),
        );
        // Another pump may have taken the room meanwhile: wait for it, but
        // not past a stop, and hand back whatever could not be queued.
        loop {
            feeder.put(&mut pending);
            if pending.is_empty() {
                break;
            }
            tokio::select! {
                biased;
                r = &mut *stop => {
                    release(guest, pending.drain(..)).await;
                    return r.unwrap_or(false);
                }
                _ = feeder.room() => {}
            }
        }
    }
}

/// Hands deliveries that never reached the guest back to the broker,
/// without counting an attempt where the broker allows it.
pub(super) async fn release(guest: &str, inbound: impl Iterator<Item = InFlight>) {
    for InFlight { acker, .. } in inbound {
        if let Err(e) = super::settlement::bounded("release", acker.release()).await {
            tracing::debug!(guest = %guest, "handing back an unqueued delivery: {e}");
        }
    }
}
