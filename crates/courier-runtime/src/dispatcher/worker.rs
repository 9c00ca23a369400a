//! The workers: each takes batches from the guest's queue (up to
//! `batch-size`, waiting at most `batch-linger-ms` to fill one), calls
//! `handler` on an instance of its own, reused from batch to batch, and
//! hands what the call left unsettled to `settlement`.

use std::borrow::Cow;
use std::ops::Range;
use std::sync::Arc;

use courier_broker::Message;
use courier_broker::message::{ATTEMPT_KEY, DELIVERY_ID_KEY};
use courier_wasi_messaging::handler::MessageRef;
use tokio::time::Instant;
use tracing::Instrument;

use super::GuestRuntime;
use crate::config::AckMode;
use crate::deliveries::InFlight;
use crate::instance::{HandlerFailure, Instance};
use crate::stats::Stat;
use crate::telemetry::{self, SENT_AT_KEY};

impl GuestRuntime {
    /// One worker: batches until shutdown, each on the worker's instance.
    pub(super) async fn worker(self: Arc<Self>) {
        let mut instance: Option<Instance> = self.first_instance().take();
        while let Some(batch) = self.next_batch().await {
            self.handle(&mut instance, batch).await;
            self.load.end();
        }
    }

    /// Waits for a batch; `None` at shutdown. Counts the worker busy on
    /// return.
    ///
    /// At shutdown no new batch is started (what is queued is handed back
    /// by `stop`), and a batch being filled stops lingering and goes as it is.
    ///
    /// A redelivered message travels alone, so that one poison message cannot
    /// take the rest of its first batch down with it again: a batch ends
    /// before one, which starts the next batch.
    async fn next_batch(&self) -> Option<Vec<InFlight>> {
        let isolated = |d: &InFlight| d.attempt > 1;
        let max = self.config.batch_size;
        let mut shutdown = self.shutdown.subscribe();
        let mut batch = tokio::select! {
            biased;
            _ = shutdown.wait_for(|s| *s) => return None,
            batch = self.queue.take(max, isolated) => batch?,
        };
        if isolated(&batch[0]) {
            return Some(batch);
        }
        let linger = Instant::now() + self.config.batch_linger;
        while batch.len() < max {
            let arrival = self.queue.arrival();
            let room = max - batch.len();
            match self.queue.take_more(&mut batch, room, isolated) {
                Err(()) => break,
                Ok(n) if n > 0 => continue,
                Ok(_) if self.config.batch_linger.is_zero() => break,
                Ok(_) => {}
            }
            tokio::select! {
                biased;
                _ = shutdown.wait_for(|s| *s) => break,
                _ = arrival => {}
                _ = tokio::time::sleep_until(linger) => break,
            }
        }
        Some(batch)
    }

    /// Handles one batch: admits its deliveries, calls the guest, and
    /// settles what the guest left, retrying a failed call's messages alone.
    async fn handle(self: &Arc<Self>, instance: &mut Option<Instance>, batch: Vec<InFlight>) {
        let mut held = Vec::with_capacity(batch.len());
        for f in batch {
            if let Some(f) = self.admit(f).await {
                held.push(f);
            }
        }
        if held.len() <= 1 {
            if let Some((failure, unsettled)) = self.call(instance, held).await {
                self.reject_all(unsettled, &failure).await;
            }
            return;
        }
        // A failed call of several messages charges none of them: each one
        // it left unsettled is handed over again alone, at the same attempt,
        // and only a failure of its own counts.
        let Some((failure, unsettled)) = self.call(instance, held).await else {
            return;
        };
        tracing::debug!(guest = %self.name, messages = unsettled.len(), "{failure}; retrying each unsettled message alone");
        for f in unsettled {
            if let Some((failure, left)) = self.call(instance, vec![f]).await {
                self.reject_all(left, &failure).await;
            }
        }
    }

    /// One `handler` call over `held`. On `ok` the unsettled deliveries are
    /// accepted (auto-ack) or stay held (manual); on a failure they are
    /// returned, with the failure, for the caller to settle.
    async fn call(
        self: &Arc<Self>,
        slot: &mut Option<Instance>,
        held: Vec<InFlight>,
    ) -> Option<(HandlerFailure, Vec<InFlight>)> {
        if held.is_empty() {
            return None;
        }
        // Delivery latency: first deliveries of stamped messages only (a
        // redelivery's age holds its backoff, not the path to the guest).
        for f in held.iter().filter(|f| f.attempt == 1) {
            if let Some(age) = telemetry::age(&f.message) {
                self.stats.delivered_after(age);
            }
        }
        let first = self.tracker.reserve(held.len());
        let numbers: Vec<u64> = (first..).take(held.len()).collect();
        let ids_text = self.tracker.ids(&numbers);
        let ids: Vec<&str> = ids_text.iter().collect();
        // The messages stay shared with the tracker during the call (the
        // guest may settle them meanwhile): they are lowered from there.
        let messages: Vec<Arc<Message>> = held.iter().map(|f| f.message.clone()).collect();
        let attempts: Vec<Option<Cow<'static, str>>> =
            held.iter().map(|f| attempt_text(f.attempt)).collect();
        self.tracker
            .insert_all(numbers.iter().copied().zip(held).map(|(n, mut f)| {
                f.waiting_since = None;
                (n, f)
            }));
        self.stats.add(Stat::Delivered, messages.len() as u64);
        let deliveries = self.tracker.id_range(first, messages.len());
        let span =
            tracing::info_span!("handler", guest = %self.name, batch = messages.len(), %deliveries);
        let outcome = async {
            match self.instance(slot).await {
                Ok(instance) => {
                    let (metadata, ranges) = guest_metadata(&messages, &ids, &attempts);
                    let batch = guest_messages(&messages, &metadata, &ranges);
                    let started = Instant::now();
                    let outcome = instance
                        .call(&batch, &numbers, self.config.handler_timeout())
                        .await;
                    self.stats.handler_took(started.elapsed());
                    outcome
                }
                Err(failure) => Err(failure),
            }
        }
        .instrument(span)
        .await;
        drop(messages);
        let failure = match outcome {
            Ok(()) if self.config.ack == AckMode::Manual => {
                self.tracker.start_waiting(&numbers, Instant::now());
                return None;
            }
            Ok(()) => {
                self.accept_all(self.tracker.take_all(numbers)).await;
                return None;
            }
            Err(failure) => failure,
        };
        match &failure {
            HandlerFailure::Returned(e) => {
                self.stats.add(Stat::Errors, 1);
                tracing::warn!(guest = %self.name, "handler returned error: {e}");
            }
            HandlerFailure::Instantiation(e) => {
                tracing::error!(guest = %self.name, "cannot instantiate: {e}");
                *self.instantiation_error() = Some(e.clone());
            }
            HandlerFailure::Trap(_) | HandlerFailure::Deadline { .. } => {
                self.stats.add(Stat::Traps, 1);
                tracing::warn!(guest = %self.name, "{failure}; the instance is replaced");
            }
        }
        if failure.discards_instance() {
            *slot = None;
        }
        Some((failure, self.tracker.take_all(numbers)))
    }

    /// The worker's instance, made now if it has none.
    async fn instance<'a>(
        self: &Arc<Self>,
        slot: &'a mut Option<Instance>,
    ) -> Result<&'a mut Instance, HandlerFailure> {
        if slot.is_none() {
            let instance = self
                .instantiate()
                .await
                .map_err(|e| HandlerFailure::Instantiation(format!("{e:#}")))?;
            self.instantiation_error().take();
            *slot = Some(instance);
        }
        Ok(slot.as_mut().expect("filled above"))
    }
}

/// The metadata the guest sees with each message of a batch, borrowed from
/// the held messages: their own metadata without the `courier-sent-at` stamp
/// (a guest sees the same message whether latency is measured or not), then
/// Courier's delivery id and, on a redelivery, its attempt (no attempt key
/// means the first: two strings fewer to copy into the guest for nearly
/// every message). One list for the batch, and each message's range in it.
pub(super) fn guest_metadata<'a>(
    messages: &'a [Arc<Message>],
    ids: &[&'a str],
    attempts: &'a [Option<Cow<'static, str>>],
) -> (Vec<(&'a str, &'a str)>, Vec<Range<usize>>) {
    let pairs = messages.iter().map(|m| m.metadata.len() + 2).sum();
    let mut metadata = Vec::with_capacity(pairs);
    let mut ranges = Vec::with_capacity(messages.len());
    for ((m, id), attempt) in messages.iter().zip(ids).zip(attempts) {
        let start = metadata.len();
        metadata.extend(
            m.metadata
                .iter()
                .filter(|(k, _)| k != SENT_AT_KEY)
                .map(|(k, v)| (k.as_str(), v.as_str())),
        );
        metadata.push((DELIVERY_ID_KEY, *id));
        if let Some(attempt) = attempt {
            metadata.push((ATTEMPT_KEY, attempt.as_ref()));
        }
        ranges.push(start..metadata.len());
    }
    (metadata, ranges)
}

/// The batch as the guest gets it: each message lowered from where it is
/// held, with its metadata from [`guest_metadata`].
fn guest_messages<'a>(
    messages: &'a [Arc<Message>],
    metadata: &'a [(&'a str, &'a str)],
    ranges: &[Range<usize>],
) -> Vec<MessageRef<'a>> {
    messages
        .iter()
        .zip(ranges)
        .map(|(m, range)| MessageRef {
            topic: &m.topic,
            content_type: m.content_type.as_deref(),
            reply_to: m.reply_to.as_deref(),
            data: &m.data,
            metadata: Some(&metadata[range.clone()]),
        })
        .collect()
}

/// An attempt number as the guest reads it, for a redelivery: the first
/// attempt has none, and the next ones are static strings.
fn attempt_text(attempt: u32) -> Option<Cow<'static, str>> {
    const SMALL: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
    if attempt == 1 {
        return None;
    }
    Some(
        match usize::try_from(attempt).ok().and_then(|a| SMALL.get(a)) {
            Some(text) => Cow::Borrowed(text),
            None => Cow::Owned(attempt.to_string()),
        },
    )
}
