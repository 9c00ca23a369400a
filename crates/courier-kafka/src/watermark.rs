//! Per-partition watermarks: which offset a consumer may commit.
//!
//! Guests settle messages in any order (batches run concurrently, a rejected
//! message waits for its redelivery), but Kafka keeps one committed offset
//! per partition: every record below it counts as done. So each partition
//! keeps the offsets handed out and not yet settled; the offset to commit is
//! the lowest of them, or one past the last handed out when none is pending.
//! A crash then never skips an unsettled record; records settled above the
//! watermark are delivered again (at least once).
//!
//! Each assignment of a partition is an epoch. When the partition is revoked
//! its state is dropped: settlements of records from that epoch no longer
//! move anything, since the partition's new owner starts again from the
//! committed offset and delivers those records itself.

use std::collections::{BTreeSet, HashMap};

/// A partition of a topic.
pub type Partition = (String, i32);

/// A record handed out, to be settled once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    /// The record's topic and partition.
    pub partition: Partition,
    /// The record's offset.
    pub offset: i64,
    /// The assignment the record was handed out in.
    epoch: u64,
}

#[derive(Debug)]
struct State {
    epoch: u64,
    /// Offsets handed out and not settled.
    pending: BTreeSet<i64>,
    /// One past the highest offset handed out.
    next: Option<i64>,
    /// The last offset returned to be committed (at first, the first
    /// offset handed out).
    committed: Option<i64>,
}

impl State {
    /// The offset every record below which is settled.
    fn position(&self) -> Option<i64> {
        self.pending.first().copied().or(self.next)
    }
}

/// The watermarks of one consumer's assigned partitions.
#[derive(Debug, Default)]
pub struct Watermarks {
    partitions: HashMap<Partition, State>,
    epochs: u64,
}

impl Watermarks {
    /// A partition was assigned: a new epoch, nothing pending.
    pub fn assign(&mut self, partition: Partition) {
        self.epochs += 1;
        self.partitions.insert(
            partition,
            State {
                epoch: self.epochs,
                pending: BTreeSet::new(),
                next: None,
                committed: None,
            },
        );
    }

    /// A partition was revoked: returns the offset to commit for it (if any
    /// record was handed out) and forgets it.
    pub fn revoke(&mut self, partition: &Partition) -> Option<i64> {
        self.partitions.remove(partition)?.position()
    }

    /// The offsets to commit for every assigned partition.
    pub fn positions(&self) -> Vec<(Partition, i64)> {
        self.partitions
            .iter()
            .filter_map(|(p, s)| Some((p.clone(), s.position()?)))
            .collect()
    }

    /// Whether records of the partition are handed out and not settled.
    pub fn has_pending(&self, partition: &Partition) -> bool {
        self.partitions
            .get(partition)
            .is_some_and(|s| !s.pending.is_empty())
    }

    /// Whether any record is handed out and not settled.
    pub fn any_pending(&self) -> bool {
        self.partitions.values().any(|s| !s.pending.is_empty())
    }

    /// Whether the partition is assigned.
    pub fn is_assigned(&self, partition: &Partition) -> bool {
        self.partitions.contains_key(partition)
    }

    /// A record was handed out. A record of a partition that is not
    /// assigned (a fetch that raced a revocation) starts an epoch of its own.
    pub fn delivered(&mut self, partition: Partition, offset: i64) -> Ticket {
        if !self.partitions.contains_key(&partition) {
            self.assign(partition.clone());
        }
        let state = self.partitions.get_mut(&partition).expect("assigned above");
        state.pending.insert(offset);
        // Where this epoch started: nothing below it needs committing.
        state.committed.get_or_insert(offset);
        state.next = Some(state.next.map_or(offset + 1, |n| n.max(offset + 1)));
        Ticket {
            partition,
            offset,
            epoch: state.epoch,
        }
    }

    /// A record was settled (completed or dead-lettered): the new offset to
    /// commit for its partition, when it moved. A ticket of an epoch that
    /// ended (the partition was revoked) moves nothing.
    pub fn settled(&mut self, ticket: &Ticket) -> Option<i64> {
        let state = self.partitions.get_mut(&ticket.partition)?;
        if state.epoch != ticket.epoch || !state.pending.remove(&ticket.offset) {
            return None;
        }
        let position = state.position()?;
        if state.committed.is_some_and(|c| c >= position) {
            return None;
        }
        state.committed = Some(position);
        Some(position)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(n: i32) -> Partition {
        ("t".to_string(), n)
    }

    #[test]
    fn out_of_order_settlement_commits_only_below_the_lowest_pending() {
        let mut w = Watermarks::default();
        w.assign(p(0));
        let t: Vec<Ticket> = (10..15).map(|o| w.delivered(p(0), o)).collect();
        // 12 and 11 settle first: 10 is still pending, nothing moves.
        assert_eq!(w.settled(&t[2]), None);
        assert_eq!(w.settled(&t[1]), None);
        assert_eq!(w.positions(), vec![(p(0), 10)]);
        // 10 settles: everything up to 13 (the lowest pending) is done.
        assert_eq!(w.settled(&t[0]), Some(13));
        assert_eq!(w.settled(&t[4]), None);
        // The last one: one past the highest handed out.
        assert_eq!(w.settled(&t[3]), Some(15));
        // Settling twice moves nothing.
        assert_eq!(w.settled(&t[3]), None);
    }

    #[test]
    fn a_record_waiting_for_redelivery_or_dead_letter_holds_the_watermark() {
        let mut w = Watermarks::default();
        w.assign(p(0));
        let rejected = w.delivered(p(0), 0);
        let done = w.delivered(p(0), 1);
        // The rejected record is redelivered in process: its ticket stays
        // pending while later records complete.
        assert_eq!(w.settled(&done), None);
        let later = w.delivered(p(0), 2);
        assert_eq!(w.settled(&later), None);
        assert_eq!(w.positions(), vec![(p(0), 0)]);
        // Dead-lettered at last (settled for good): the watermark passes it.
        assert_eq!(w.settled(&rejected), Some(3));
    }

    #[test]
    fn partitions_are_independent() {
        let mut w = Watermarks::default();
        w.assign(p(0));
        w.assign(p(1));
        let a = w.delivered(p(0), 5);
        let b = w.delivered(p(1), 7);
        assert_eq!(w.settled(&b), Some(8));
        let mut pos = w.positions();
        pos.sort();
        assert_eq!(pos, vec![(p(0), 5), (p(1), 8)]);
        assert_eq!(w.settled(&a), Some(6));
    }

    #[test]
    fn revocation_commits_the_watermark_and_ignores_late_settlements() {
        let mut w = Watermarks::default();
        w.assign(p(0));
        let a = w.delivered(p(0), 0);
        let b = w.delivered(p(0), 1);
        assert_eq!(w.settled(&b), None);
        // Revoked with 0 in flight: commit 0, so the new owner starts there.
        assert_eq!(w.revoke(&p(0)), Some(0));
        assert!(!w.is_assigned(&p(0)));
        // The guest settles 0 after the revocation: nothing to commit.
        assert_eq!(w.settled(&a), None);
        assert!(w.positions().is_empty());
        // Assigned again (a new epoch): the old ticket still moves nothing,
        // and the records delivered again count afresh.
        w.assign(p(0));
        assert_eq!(w.settled(&a), None);
        let again = w.delivered(p(0), 0);
        assert_eq!(w.settled(&again), Some(1));
    }

    #[test]
    fn revoking_a_partition_that_handed_out_nothing_commits_nothing() {
        let mut w = Watermarks::default();
        w.assign(p(3));
        assert_eq!(w.revoke(&p(3)), None);
        assert_eq!(w.revoke(&p(3)), None);
    }
}
