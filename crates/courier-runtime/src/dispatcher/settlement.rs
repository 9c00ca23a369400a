//! Settlement: what becomes of a delivery after a `handler` call — accepted,
//! redelivered with backoff, or dead-lettered after `max-attempts` — and,
//! with manual acks, the loop that charges deliveries left unsettled past
//! `ack-wait-ms`. Deliveries too large or with their attempts spent are
//! refused here on arrival, before any call.

use std::sync::Arc;
use std::time::Duration;

use courier_broker::message::{ATTEMPTS_KEY, LAST_ERROR_KEY, ORIGINAL_TOPIC_KEY};
use courier_broker::{BrokerError, ErrorKind, ack_all};
use futures::future::join_all;
use tokio::time::Instant;

use super::GuestRuntime;
use crate::deliveries::InFlight;
use crate::instance::HandlerFailure;
use crate::stats::Stat;
use crate::telemetry::SENT_AT_KEY;

/// The longest Courier waits for a broker to take one settlement (an ack, a
/// nack, a hand-back). Each backend bounds its own waits by its client's
/// timeout; this bound is the host's own, so that no broker client, however
/// it fails, can hold a worker (and with it the guest, and shutdown)
/// forever. A settlement that runs out is treated like one the broker
/// refused: the message is not settled, and the broker delivers it again.
pub(super) const SETTLE_DEADLINE: Duration = Duration::from_secs(30);

/// `settle`, or a timeout error once [`SETTLE_DEADLINE`] passed.
pub(super) async fn bounded(
    what: &'static str,
    settle: impl Future<Output = Result<(), BrokerError>>,
) -> Result<(), BrokerError> {
    tokio::time::timeout(SETTLE_DEADLINE, settle)
        .await
        .unwrap_or_else(|_| Err(BrokerError::timeout(what, SETTLE_DEADLINE)))
}

impl GuestRuntime {
    /// Takes a delivery in ([`InFlight::arrived`] stripped Courier's
    /// delivery keys from it): refused (dead-lettered) when it is too large
    /// or already had its attempts.
    pub(super) async fn admit(&self, held: InFlight) -> Option<InFlight> {
        let attempt = held.attempt;
        let max = self.config.max_attempts;
        if held.message.data.len() > self.config.max_message_bytes {
            let reason = format!(
                "message has {} bytes, more than max-message-bytes ({})",
                held.message.data.len(),
                self.config.max_message_bytes
            );
            self.dead_letter(held, reason, attempt).await;
            return None;
        }
        // The broker redelivered on its own (its ack deadline passed while
        // no Courier was there to count): max-attempts holds all the same.
        if attempt > max {
            let reason =
                format!("delivered {attempt} times without being settled (max-attempts is {max})");
            self.dead_letter(held, reason, max).await;
            return None;
        }
        Some(held)
    }

    /// Accepts deliveries whose handler returned `ok`, in one step where
    /// the broker allows it ([`ack_all`]), counting those the broker took.
    pub(super) async fn accept_all(&self, held: Vec<InFlight>) {
        let (ackers, messages): (Vec<_>, Vec<_>) =
            held.into_iter().map(|f| (f.acker, f.message)).unzip();
        let Ok(results) = tokio::time::timeout(SETTLE_DEADLINE, ack_all(ackers)).await else {
            tracing::warn!(guest = %self.name, "acks took longer than {SETTLE_DEADLINE:?}: the broker redelivers what it did not take after its ack deadline");
            return;
        };
        let mut n = 0;
        for (result, message) in results.into_iter().zip(&messages) {
            match result {
                Ok(()) => n += 1,
                // The broker's own words say what becomes of it.
                Err(e) if e.kind() == ErrorKind::Settled => {
                    tracing::warn!(guest = %self.name, topic = %message.topic, "not acknowledged: {e}");
                }
                Err(e) => {
                    tracing::warn!(guest = %self.name, topic = %message.topic, "ack failed, the broker will redeliver after its ack deadline: {e}");
                }
            }
        }
        self.stats.add(Stat::Accepted, n);
    }

    /// Charges each of `held` with `failure` (see [`GuestRuntime::reject`]).
    pub(super) async fn reject_all(&self, held: Vec<InFlight>, failure: &HandlerFailure) {
        let reason = failure.to_string();
        join_all(held.into_iter().map(|f| self.reject(f, reason.clone()))).await;
    }

    /// A failure of the message's own: redelivered with backoff, or
    /// dead-lettered once it has failed `max-attempts` times.
    pub(super) async fn reject(&self, held: InFlight, reason: String) {
        if held.attempt >= self.config.max_attempts {
            let attempts = held.attempt;
            return self.dead_letter(held, reason, attempts).await;
        }
        let delay = self.config.backoff(held.attempt);
        tracing::debug!(guest = %self.name, topic = %held.message.topic, attempt = held.attempt, ?delay, "redelivering: {reason}");
        match bounded("nack", held.acker.nack(delay)).await {
            Ok(()) => self.stats.add(Stat::Redelivered, 1),
            Err(e) if e.kind() == ErrorKind::Settled => {
                tracing::warn!(guest = %self.name, "not redelivered by Courier: {e}")
            }
            Err(e) => {
                tracing::warn!(guest = %self.name, "nack failed, the broker will redeliver after its ack deadline: {e}")
            }
        }
    }

    /// Publishes the message to the dead-letter channel with `attempts`
    /// and `reason` (or drops it, logged, without one), then settles it.
    async fn dead_letter(&self, held: InFlight, reason: String, attempts: u32) {
        let InFlight {
            acker,
            message,
            source,
            ..
        } = held;
        let Some(channel) = &self.config.dead_letter else {
            tracing::warn!(guest = %self.name, topic = %message.topic, attempts, "dropping message (no dead-letter channel): {reason}");
            self.stats.add(Stat::DeadLettered, 1);
            if let Err(e) = bounded("settling a dropped message", acker.term()).await {
                tracing::warn!(guest = %self.name, "settling the dropped message failed: {e}");
            }
            return;
        };
        let mut letter = Arc::unwrap_or_clone(message);
        // A dead letter is a new publish: its latency counts from now.
        letter.remove_meta(SENT_AT_KEY);
        letter.set_meta(ORIGINAL_TOPIC_KEY, letter.topic.clone());
        letter.set_meta(ATTEMPTS_KEY, attempts.to_string());
        letter.set_meta(LAST_ERROR_KEY, one_line(&reason));
        letter.topic = channel.as_str().to_string();
        match source.backend.publish(vec![letter]).await {
            Ok(()) => {
                tracing::warn!(guest = %self.name, dead_letter = %channel, attempts, "dead-lettered: {reason}");
                self.stats.add(Stat::DeadLettered, 1);
                if let Err(e) = bounded("settling a dead letter", acker.term()).await {
                    tracing::warn!(guest = %self.name, "settling the dead-lettered message failed: {e}");
                }
            }
            Err(e) => {
                tracing::error!(guest = %self.name, dead_letter = %channel, "cannot publish dead letter, keeping the message: {e}");
                let delay = self.config.backoff(attempts);
                if let Err(e) = bounded("nack", acker.nack(delay)).await {
                    tracing::warn!(guest = %self.name, "nack failed, the broker will redeliver after its ack deadline: {e}");
                }
            }
        }
    }

    /// At shutdown, with manual acks: the deliveries the guest still holds
    /// get no call to settle them any more, so they go back to the broker
    /// now, their attempt counted as the broker's ack deadline would,
    /// rather than when that deadline passes.
    pub(super) async fn give_back_held(&self) {
        let held = self.tracker.drain();
        if held.is_empty() {
            return;
        }
        tracing::info!(guest = %self.name, "handing {} unsettled deliveries back to the broker", held.len());
        for f in held {
            if let Err(e) = bounded("handing back", f.acker.nack(Duration::ZERO)).await {
                tracing::warn!(guest = %self.name, "handing back an unsettled delivery: {e}");
            }
        }
    }

    /// With manual acks: a delivery still unsettled `ack-wait-ms` after its
    /// handler call returned has failed, and is charged like any failure.
    pub(super) async fn expire_loop(self: Arc<Self>) {
        let mut shutdown = self.shutdown.subscribe();
        let wait = self.config.ack_wait();
        let every = (wait / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
            let Some(before) = Instant::now().checked_sub(wait) else {
                continue;
            };
            // Busy while rejecting: the deliveries are out of the tracker but
            // not settled yet.
            self.load.begin();
            let expired = self.tracker.expire(before);
            if !expired.is_empty() {
                tracing::debug!(guest = %self.name, "{} unsettled deliveries passed their ack deadline", expired.len());
                let reason = format!("not settled within ack-wait-ms ({} ms)", wait.as_millis());
                join_all(expired.into_iter().map(|f| self.reject(f, reason.clone()))).await;
            }
            self.load.end();
        }
    }
}

/// `reason` on one line: a header value cannot hold a line break on every
/// broker (NATS refuses it), and a guest's error text may have some.
fn one_line(reason: &str) -> String {
    reason.replace(['\r', '\n'], " ")
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn last_error_is_one_line() {
        assert_eq!(
            one_line("bad input\r\nat line 2\n"),
            "bad input  at line 2 "
        );
        assert_eq!(
            one_line("guest trapped: unreachable"),
            "guest trapped: unreachable"
        );
    }
}
