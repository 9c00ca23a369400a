//! Accepting a batch of deliveries in one step.
//!
//! A backend whose deliveries can be acknowledged together (the embedded
//! broker: one lock per queue instead of one per delivery) gives each
//! delivery's [`Acker`] a [`BatchTag`]: the [`AckBatch`] it belongs to and
//! its tag there. [`ack_all`] groups the deliveries of a batch by it and
//! acknowledges each group at once; deliveries without one are acknowledged
//! one by one, concurrently.

use std::sync::Arc;

use async_trait::async_trait;
use futures::future::join_all;

use crate::{Acker, BrokerError};

/// Deliveries that a broker accepts together: one queue's, one channel's.
#[async_trait]
pub trait AckBatch: Send + Sync {
    /// Accepts the deliveries with `tags` in one step: one result per tag,
    /// in the same order, as [`Acker::ack`] would give it.
    async fn ack_tags(&self, tags: &[u64]) -> Vec<Result<(), BrokerError>>;
}

/// Where a delivery can be accepted together with others.
pub struct BatchTag {
    /// The deliveries it can be accepted with.
    pub batch: Arc<dyn AckBatch>,
    /// The delivery's tag in `batch`.
    pub tag: u64,
}

/// A group of deliveries of one batch: the batch, their tags, and where
/// their results go.
type Group = (Arc<dyn AckBatch>, Vec<u64>, Vec<usize>);

/// Accepts every delivery of `ackers`, grouped by [`Acker::batch`] where the
/// backend allows it: one result per acker, in the same order.
pub async fn ack_all(ackers: Vec<Box<dyn Acker>>) -> Vec<Result<(), BrokerError>> {
    let mut results: Vec<Option<Result<(), BrokerError>>> = Vec::new();
    results.resize_with(ackers.len(), || None);
    let mut groups: Vec<Group> = Vec::new();
    let mut alone = Vec::new();
    for (i, acker) in ackers.into_iter().enumerate() {
        let Some(BatchTag { batch, tag }) = acker.batch() else {
            alone.push((i, acker));
            continue;
        };
        // The acker is dropped: the delivery is accepted through its batch.
        let same = |(b, _, _): &&mut Group| std::ptr::addr_eq(Arc::as_ptr(b), Arc::as_ptr(&batch));
        match groups.iter_mut().find(same) {
            Some((_, tags, at)) => {
                tags.push(tag);
                at.push(i);
            }
            None => groups.push((batch, vec![tag], vec![i])),
        }
    }
    for (batch, tags, at) in groups {
        for (i, r) in at.into_iter().zip(batch.ack_tags(&tags).await) {
            results[i] = Some(r);
        }
    }
    let acked = join_all(
        alone
            .into_iter()
            .map(|(i, acker)| async move { (i, acker.ack().await) }),
    )
    .await;
    for (i, r) in acked {
        results[i] = Some(r);
    }
    results
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                Err(BrokerError::other(
                    "a batch acknowledged fewer deliveries than it was given",
                ))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;
    use crate::ErrorKind;

    /// A batch that holds tags 1..=3 and records each call.
    struct Held {
        tags: Mutex<Vec<u64>>,
        calls: Mutex<Vec<Vec<u64>>>,
    }

    #[async_trait]
    impl AckBatch for Held {
        async fn ack_tags(&self, tags: &[u64]) -> Vec<Result<(), BrokerError>> {
            self.calls.lock().unwrap().push(tags.to_vec());
            let mut held = self.tags.lock().unwrap();
            tags.iter()
                .map(|t| match held.iter().position(|h| h == t) {
                    Some(p) => {
                        held.remove(p);
                        Ok(())
                    }
                    None => Err(BrokerError::settled(format!("{t} is not in flight"))),
                })
                .collect()
        }
    }

    struct InBatch(Arc<Held>, u64);

    #[async_trait]
    impl Acker for InBatch {
        async fn ack(self: Box<Self>) -> Result<(), BrokerError> {
            panic!("accepted alone although it has a batch")
        }
        async fn nack(self: Box<Self>, _: Duration) -> Result<(), BrokerError> {
            unreachable!()
        }
        fn batch(&self) -> Option<BatchTag> {
            Some(BatchTag {
                batch: self.0.clone(),
                tag: self.1,
            })
        }
    }

    struct Alone(bool);

    #[async_trait]
    impl Acker for Alone {
        async fn ack(self: Box<Self>) -> Result<(), BrokerError> {
            if self.0 {
                Ok(())
            } else {
                Err(BrokerError::other("refused"))
            }
        }
        async fn nack(self: Box<Self>, _: Duration) -> Result<(), BrokerError> {
            unreachable!()
        }
    }

    #[tokio::test]
    async fn groups_by_batch_and_keeps_the_order_of_results() {
        let held = || {
            Arc::new(Held {
                tags: Mutex::new(vec![1, 2, 3]),
                calls: Mutex::new(Vec::new()),
            })
        };
        let (a, b) = (held(), held());
        let ackers: Vec<Box<dyn Acker>> = vec![
            Box::new(InBatch(a.clone(), 1)),
            Box::new(Alone(true)),
            Box::new(InBatch(b.clone(), 3)),
            Box::new(InBatch(a.clone(), 9)),
            Box::new(Alone(false)),
            Box::new(InBatch(a.clone(), 2)),
        ];
        let results = ack_all(ackers).await;
        let kinds: Vec<Option<ErrorKind>> = results
            .iter()
            .map(|r| r.as_ref().err().map(|e| e.kind()))
            .collect();
        assert_eq!(
            kinds,
            [
                None,
                None,
                None,
                Some(ErrorKind::Settled),
                Some(ErrorKind::Other),
                None
            ]
        );
        assert_eq!(
            *a.calls.lock().unwrap(),
            [vec![1, 9, 2]],
            "one call per batch"
        );
        assert_eq!(*b.calls.lock().unwrap(), [vec![3]]);
        assert_eq!(*a.tags.lock().unwrap(), [3]);
    }
}
