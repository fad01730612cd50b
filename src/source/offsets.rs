//! Per-partition offset watermarks (SPEC §8).
//!
//! Messages of a partition start in offset order and may finish in any order.
//! The offset that may be committed is the lowest offset still in flight, or
//! one past the highest offset seen when nothing is in flight: everything
//! below it is done. A message that finishes early waits for the ones before
//! it (vector's acknowledgement hole is exactly what this avoids).
//!
//! The tracker also knows what the broker has *confirmed*: a finished
//! message counts as uncommitted until a commit at or above its offset
//! succeeded, so [`Watermarks::uncommitted`] is exactly what a crash now
//! would deliver again, and the source bounds it.
//!
//! Each assignment of a partition has a generation. A completion carries the
//! generation it started in, so a late completion for a partition that was
//! revoked (and maybe reassigned since) is dropped instead of moving the new
//! assignment's watermark.
//!
//! Each partition also has a [`Mode`]: how its messages may be taken (the
//! crash-loop guard of the Kafka source, `kafka/guard.rs`, sets it). The
//! periodic commits ([`Watermarks::take_committable`]) leave partitions in
//! [`Mode::Suspect`] and [`Mode::Probe`] alone: the source commits those
//! itself, with the metadata that says which message is running alone.

use std::collections::{BTreeMap, HashMap};

/// A topic and partition.
pub type TopicPartition = (String, i32);

/// Proof that a message started; hand it back with [`Watermarks::done`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Ticket {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    generation: u64,
}

/// How the messages of a partition may be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Just assigned: its committed offset and metadata are not read yet.
    #[default]
    Unchecked,
    /// Concurrently, as usual.
    Normal,
    /// Its previous owner died: the next `remaining` messages are suspects,
    /// each processed alone. `pending`: the offset at the committed position
    /// and how many deaths it was already found in flight at.
    Suspect {
        /// Suspects left.
        remaining: u32,
        /// The message at the committed offset, with its deaths.
        pending: Option<(i64, u32)>,
    },
    /// The suspect at `offset` runs alone; `remaining` counts it.
    Probe {
        /// Its offset.
        offset: i64,
        /// Suspects left, this one included.
        remaining: u32,
    },
}

#[derive(Debug, Default)]
struct Partition {
    generation: u64,
    mode: Mode,
    /// Offsets in flight, with how many deliveries of each are running
    /// (a broker may hand the same offset out twice).
    in_flight: BTreeMap<i64, u32>,
    /// Offsets done but not yet confirmed committed by the broker (a crash
    /// would bring them back).
    finished: std::collections::BTreeSet<i64>,
    /// One past the highest offset started.
    next: Option<i64>,
    /// Last watermark handed out for committing.
    committed: Option<i64>,
}

impl Partition {
    fn watermark(&self) -> Option<i64> {
        match self.in_flight.first_key_value() {
            Some((lowest, _)) => Some(*lowest),
            None => self.next,
        }
    }
}

/// Watermarks of every assigned partition.
#[derive(Debug, Default)]
pub struct Watermarks {
    parts: HashMap<TopicPartition, Partition>,
    next_generation: u64,
}

impl Watermarks {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    /// A partition was assigned (a new generation starts).
    pub fn assign(&mut self, topic: &str, partition: i32) {
        self.next_generation += 1;
        let p = Partition {
            generation: self.next_generation,
            ..Partition::default()
        };
        self.parts.insert((topic.to_string(), partition), p);
    }

    /// A partition was revoked: returns its final watermark (to commit
    /// synchronously, whatever earlier commits did) and forgets it.
    /// Completions of its messages are dropped from now on.
    pub fn revoke(&mut self, topic: &str, partition: i32) -> Option<i64> {
        self.revoke_with_mode(topic, partition).map(|(w, _)| w)
    }

    /// [`Self::revoke`], with the partition's mode.
    pub fn revoke_with_mode(&mut self, topic: &str, partition: i32) -> Option<(i64, Mode)> {
        let p = self.parts.remove(&(topic.to_string(), partition))?;
        p.watermark().map(|w| (w, p.mode))
    }

    /// The partition's mode; `None` when it is not assigned.
    pub fn mode(&self, topic: &str, partition: i32) -> Option<Mode> {
        self.parts.get(&(topic.to_string(), partition)).map(|p| p.mode)
    }

    /// Set the partition's mode (nothing when it is not assigned).
    pub fn set_mode(&mut self, topic: &str, partition: i32, mode: Mode) {
        if let Some(p) = self.parts.get_mut(&(topic.to_string(), partition)) {
            p.mode = mode;
        }
    }

    /// Partitions whose suspect runs alone: `(partition, its offset,
    /// suspects left, the partition's watermark)`.
    pub fn probes(&self) -> Vec<(TopicPartition, i64, u32, Option<i64>)> {
        let mut out: Vec<_> = self
            .parts
            .iter()
            .filter_map(|(tp, p)| match p.mode {
                Mode::Probe { offset, remaining } => Some((tp.clone(), offset, remaining, p.watermark())),
                _ => None,
            })
            .collect();
        out.sort();
        out
    }

    /// The broker confirmed a commit the source made itself (a suspect's):
    /// as [`Self::commit_succeeded`], and the periodic commit need not
    /// hand the same watermark out again.
    pub fn committed_by_source(&mut self, topic: &str, partition: i32, offset: i64) {
        self.commit_succeeded(topic, partition, offset);
        if let Some(p) = self.parts.get_mut(&(topic.to_string(), partition)) {
            p.committed = Some(offset);
        }
    }

    /// A commit of `offset` failed: hand the partition's watermark out again
    /// on the next [`Self::take_committable`].
    pub fn commit_failed(&mut self, topic: &str, partition: i32, offset: i64) {
        if let Some(p) = self.parts.get_mut(&(topic.to_string(), partition)) {
            if p.committed == Some(offset) {
                p.committed = None;
            }
        }
    }

    /// The broker confirmed a commit of `offset`: everything below it is
    /// safe from redelivery.
    pub fn commit_succeeded(&mut self, topic: &str, partition: i32, offset: i64) {
        if let Some(p) = self.parts.get_mut(&(topic.to_string(), partition)) {
            p.finished = p.finished.split_off(&offset);
        }
    }

    /// Is the partition assigned?
    pub fn is_assigned(&self, topic: &str, partition: i32) -> bool {
        self.parts.contains_key(&(topic.to_string(), partition))
    }

    /// A message starts; `None` when the partition is not assigned. Offsets
    /// normally arrive in increasing order, but one that goes backwards (a
    /// broker re-sending a batch) is processed too and holds the watermark
    /// like any other: refusing it would let the watermark pass a message
    /// that was never delivered.
    pub fn start(&mut self, topic: &str, partition: i32, offset: i64) -> Option<Ticket> {
        let key = (topic.to_string(), partition);
        let p = self.parts.get_mut(&key)?;
        *p.in_flight.entry(offset).or_insert(0) += 1;
        p.next = Some(p.next.map_or(offset + 1, |next| next.max(offset + 1)));
        if p.committed.is_some_and(|c| offset < c) {
            // Handed out for committing already: hand the lower mark out again.
            p.committed = None;
        }
        Some(Ticket {
            topic: key.0,
            partition,
            offset,
            generation: p.generation,
        })
    }

    /// A message is done. Returns false when the completion was dropped
    /// (partition revoked or reassigned since it started).
    pub fn done(&mut self, ticket: &Ticket) -> bool {
        match self.parts.get_mut(&(ticket.topic.clone(), ticket.partition)) {
            Some(p) if p.generation == ticket.generation => {
                let removed = match p.in_flight.get_mut(&ticket.offset) {
                    Some(n) if *n > 1 => {
                        *n -= 1;
                        true
                    }
                    Some(_) => p.in_flight.remove(&ticket.offset).is_some(),
                    None => false,
                };
                if removed {
                    p.finished.insert(ticket.offset);
                }
                removed
            }
            _ => false,
        }
    }

    /// Offsets to commit now: each assigned partition whose watermark moved
    /// since the last call. The watermark is the next offset to consume.
    pub fn take_committable(&mut self) -> Vec<(TopicPartition, i64)> {
        let mut out = Vec::new();
        for (tp, p) in self.parts.iter_mut() {
            if matches!(p.mode, Mode::Suspect { .. } | Mode::Probe { .. }) {
                continue;
            }
            if let Some(w) = p.watermark() {
                if p.committed != Some(w) {
                    p.committed = Some(w);
                    out.push((tp.clone(), w));
                }
            }
        }
        out.sort();
        out
    }

    /// Every assigned partition's watermark (final commit at shutdown).
    pub fn current(&self) -> Vec<(TopicPartition, i64)> {
        let mut out: Vec<_> = self
            .parts
            .iter()
            .filter_map(|(tp, p)| p.watermark().map(|w| (tp.clone(), w)))
            .collect();
        out.sort();
        out
    }

    /// [`Self::current`], with each partition's mode.
    pub fn current_with_modes(&self) -> Vec<(TopicPartition, i64, Mode)> {
        let mut out: Vec<_> = self
            .parts
            .iter()
            .filter_map(|(tp, p)| p.watermark().map(|w| (tp.clone(), w, p.mode)))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Messages done and below their partition's watermark, waiting for a
    /// commit: what committing now would protect.
    pub fn committable(&self) -> usize {
        self.parts
            .values()
            .map(|p| match p.watermark() {
                Some(w) => p.finished.range(..w).count(),
                None => 0,
            })
            .sum()
    }

    /// Messages started and not yet confirmed committed by the broker: the
    /// most a crash now would deliver again.
    pub fn uncommitted(&self) -> usize {
        self.parts
            .values()
            .map(|p| p.in_flight.values().map(|n| *n as usize).sum::<usize>() + p.finished.len())
            .sum()
    }

    /// Messages in flight over all partitions.
    pub fn in_flight(&self) -> usize {
        self.parts
            .values()
            .map(|p| p.in_flight.values().map(|n| *n as usize).sum::<usize>())
            .sum()
    }

    /// Assigned partitions.
    pub fn assigned(&self) -> Vec<TopicPartition> {
        let mut v: Vec<_> = self.parts.keys().cloned().collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn only_the_contiguous_prefix_is_committable() {
        let mut w = Watermarks::new();
        w.assign("t", 0);
        let t: Vec<_> = (10..15).map(|o| w.start("t", 0, o).unwrap()).collect();
        assert_eq!(w.take_committable(), vec![(("t".into(), 0), 10)]);
        assert!(w.done(&t[2]));
        assert!(w.done(&t[4]));
        assert_eq!(w.take_committable(), vec![], "10 is still in flight");
        assert!(w.done(&t[0]));
        assert_eq!(w.take_committable(), vec![(("t".into(), 0), 11)]);
        assert!(w.done(&t[1]));
        assert_eq!(w.take_committable(), vec![(("t".into(), 0), 13)]);
        assert!(w.done(&t[3]));
        assert_eq!(w.take_committable(), vec![(("t".into(), 0), 15)]);
        assert_eq!(w.in_flight(), 0);
    }

    #[test]
    fn gaps_in_offsets_are_fine() {
        // Compaction and transaction markers leave gaps.
        let mut w = Watermarks::new();
        w.assign("t", 1);
        let a = w.start("t", 1, 3).unwrap();
        let b = w.start("t", 1, 7).unwrap();
        w.done(&b);
        assert_eq!(w.take_committable(), vec![(("t".into(), 1), 3)]);
        w.done(&a);
        assert_eq!(w.take_committable(), vec![(("t".into(), 1), 8)]);
    }

    #[test]
    fn late_completions_after_revoke_are_dropped() {
        let mut w = Watermarks::new();
        w.assign("t", 0);
        let old = w.start("t", 0, 5).unwrap();
        let old2 = w.start("t", 0, 6).unwrap();
        w.done(&old2);
        assert_eq!(w.take_committable(), vec![(("t".into(), 0), 5)]);
        assert_eq!(
            w.revoke("t", 0),
            Some(5),
            "the final watermark, even if handed out before"
        );
        assert!(!w.done(&old), "revoked: dropped");
        assert!(w.take_committable().is_empty(), "nothing for a revoked partition");
        // Reassigned: the old generation's completion must not count.
        w.assign("t", 0);
        let new = w.start("t", 0, 5).unwrap();
        assert!(!w.done(&old));
        assert_eq!(w.take_committable(), vec![(("t".into(), 0), 5)]);
        assert!(w.done(&new));
        assert_eq!(w.take_committable(), vec![(("t".into(), 0), 6)]);
    }

    #[test]
    fn a_failed_commit_is_handed_out_again() {
        let mut w = Watermarks::new();
        w.assign("t", 0);
        let a = w.start("t", 0, 0).unwrap();
        w.done(&a);
        assert_eq!(w.take_committable(), vec![(("t".into(), 0), 1)]);
        assert!(w.take_committable().is_empty());
        w.commit_failed("t", 0, 1);
        assert_eq!(w.take_committable(), vec![(("t".into(), 0), 1)]);
        // A failure report for an older offset changes nothing.
        w.commit_failed("t", 0, 0);
        assert!(w.take_committable().is_empty());
    }

    #[test]
    fn finished_messages_count_as_uncommitted_until_the_broker_confirms() {
        let mut w = Watermarks::new();
        w.assign("t", 0);
        let t: Vec<_> = (0..4).map(|o| w.start("t", 0, o).unwrap()).collect();
        w.done(&t[1]);
        w.done(&t[2]);
        assert_eq!(
            (w.in_flight(), w.uncommitted(), w.committable()),
            (2, 4, 0),
            "1 and 2 would come back after a crash; nothing below the watermark"
        );
        w.done(&t[0]);
        assert_eq!(
            (w.in_flight(), w.uncommitted(), w.committable()),
            (1, 4, 3),
            "0..=2 are below the watermark but not committed yet"
        );
        assert_eq!(w.take_committable(), vec![(("t".into(), 0), 3)]);
        assert_eq!(w.uncommitted(), 4, "handed out is not confirmed");
        w.commit_succeeded("t", 0, 3);
        assert_eq!((w.uncommitted(), w.committable()), (1, 0));
        w.done(&t[3]);
        assert_eq!((w.uncommitted(), w.committable()), (1, 1));
        w.commit_succeeded("t", 0, 4);
        assert_eq!(w.uncommitted(), 0);
        // A confirmation for a partition no longer assigned changes nothing.
        w.commit_succeeded("t", 9, 100);
    }

    #[test]
    fn unassigned_partitions_are_refused() {
        let mut w = Watermarks::new();
        assert!(w.start("t", 0, 1).is_none());
    }

    #[test]
    fn an_offset_that_goes_backwards_is_processed_and_holds_the_watermark() {
        let mut w = Watermarks::new();
        w.assign("t", 0);
        let a = w.start("t", 0, 10).unwrap();
        w.done(&a);
        assert_eq!(w.take_committable(), vec![(("t".into(), 0), 11)]);
        // The broker hands out 8 again (and 10 twice): both must finish
        // before anything past 8 is committed again.
        let b = w.start("t", 0, 8).unwrap();
        let c1 = w.start("t", 0, 10).unwrap();
        let c2 = w.start("t", 0, 10).unwrap();
        assert_eq!(w.take_committable(), vec![(("t".into(), 0), 8)]);
        w.done(&b);
        w.done(&c1);
        assert_eq!(
            w.take_committable(),
            vec![(("t".into(), 0), 10)],
            "one delivery of 10 still runs"
        );
        w.done(&c2);
        assert_eq!(w.take_committable(), vec![(("t".into(), 0), 11)]);
        assert_eq!(w.in_flight(), 0);
    }

    proptest! {
        /// Whatever order messages finish in, the committed offset never
        /// passes a message that is not done, never goes backwards, and
        /// reaches the end when everything is done.
        #[test]
        fn watermark_never_passes_an_unfinished_message(
            offsets in prop::collection::btree_set(0i64..500, 1..60),
            order in prop::collection::vec(any::<prop::sample::Index>(), 1..60),
            commit_every in 1usize..5,
        ) {
            let mut w = Watermarks::new();
            w.assign("t", 0);
            let mut pending: Vec<Ticket> = offsets.iter().map(|o| w.start("t", 0, *o).unwrap()).collect();
            let mut done = std::collections::BTreeSet::new();
            let mut last = i64::MIN;
            let mut step = 0;
            let mut idx = order.into_iter().cycle();
            while !pending.is_empty() {
                let i = idx.next().unwrap().index(pending.len());
                let t = pending.swap_remove(i);
                prop_assert!(w.done(&t));
                done.insert(t.offset);
                step += 1;
                if step % commit_every == 0 {
                    for (_, c) in w.take_committable() {
                        prop_assert!(c >= last, "went backwards");
                        last = c;
                        // every started offset below the watermark is done
                        for o in offsets.range(..c) {
                            prop_assert!(done.contains(o), "committed {c} past unfinished {o}");
                        }
                    }
                }
            }
            let end = offsets.iter().max().unwrap() + 1;
            let finals = w.take_committable();
            let reached = finals.last().map(|(_, c)| *c).unwrap_or(last);
            prop_assert_eq!(reached, end);
        }
    }
}
