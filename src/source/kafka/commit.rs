//! The committer of the Kafka source: each partition's contiguous
//! watermark is committed off the async workers, under the commit gate,
//! waiting at most a deadline for the broker, on a tick when it moved or
//! at once when the source asks.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaResult;
use rdkafka::{Offset, TopicPartitionList};
use tracing::{debug, info, warn};

use super::context::{lock, Consumer_};
use super::guard::{Guard, Meta, Purpose};
use super::native::{self, commit_within, CommitError};
use crate::shutdown::Shutdown;
use crate::source::offsets::{TopicPartition, Watermarks};
use crate::telemetry::metrics;

/// How often a moved watermark is committed when nothing else triggers a
/// commit: a finished message is committed within about this long.
pub const COMMIT_TICK: Duration = Duration::from_millis(100);

/// Whether the committer is asked to commit at once instead of at its next
/// [`COMMIT_TICK`]: something is committable and either half the window is
/// committable or the uncommitted window is full.
pub(super) fn commit_now(committable: usize, uncommitted: usize, window: usize) -> bool {
    committable > 0 && (committable * 2 >= window || uncommitted >= window)
}

/// Which watermarks to commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Which {
    /// Those that moved since the last commit (periodic).
    Moved,
    /// Every assigned partition's, the owner alive (before the drain).
    All,
    /// Every assigned partition's, leaving cleanly (after the drain).
    Final,
}

/// Makes the commits (revocation's final commit aside): each waits at most
/// `timeout` for the broker, under the commit gate, results counted in the
/// metrics, with the crash-loop guard's metadata.
pub(super) struct Committer {
    pub(super) consumer: Arc<Consumer_>,
    pub(super) marks: Arc<Mutex<Watermarks>>,
    pub(super) gate: Arc<Mutex<()>>,
    /// Woken after a successful commit (the window may have room again).
    pub(super) progress: Arc<tokio::sync::Notify>,
    /// The longest wait for a commit's answer.
    pub(super) timeout: Duration,
    pub(super) guard: Guard,
}

/// `topic[partition]@offset, …` (what a log line says was not committed).
fn list(offsets: &[(TopicPartition, i64, Meta)]) -> String {
    offsets
        .iter()
        .map(|((t, p), o, _)| format!("{t}[{p}]@{o}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A list of offsets with their metadata.
pub(super) fn offsets_list(offsets: &[(TopicPartition, i64, Meta)]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), off, meta) in offsets {
        let mut e = tpl.add_partition(topic, *partition);
        let _ = e.set_offset(Offset::Offset(*off));
        e.set_metadata(meta.text());
    }
    tpl
}

impl Committer {
    /// Commit `which` watermarks; blocks for the broker's answer, at most
    /// [`Committer::timeout`] (plus the wait for the gate, which every
    /// holder gives up within the same bound).
    pub(super) fn commit(&self, which: Which, when: &str) {
        let _gate = self.gate.lock().unwrap_or_else(|e| e.into_inner());
        let purpose = match which {
            Which::Final => Purpose::Leaving,
            _ => Purpose::Alive,
        };
        let offsets: Vec<(TopicPartition, i64, Meta)> = {
            let mut marks = lock(&self.marks);
            let all = match which {
                Which::Moved => {
                    let moved = marks.take_committable();
                    moved
                        .into_iter()
                        .map(|(tp, w)| {
                            let mode = marks.mode(&tp.0, tp.1).unwrap_or_default();
                            (tp, w, mode)
                        })
                        .collect()
                }
                Which::All | Which::Final => marks.current_with_modes(),
            };
            all.into_iter()
                .filter_map(|(tp, w, mode)| self.guard.metadata(mode, w, purpose).map(|m| (tp, w, m)))
                .collect()
        };
        if offsets.is_empty() {
            return;
        }
        let tpl = offsets_list(&offsets);
        let result = commit_within(self.consumer.client(), &tpl, self.timeout);
        metrics::commit(result.is_ok());
        if result.is_ok() {
            let mut marks = lock(&self.marks);
            for ((topic, partition), off, _) in &offsets {
                marks.commit_succeeded(topic, *partition, *off);
            }
            metrics::uncommitted(marks.uncommitted());
            drop(marks);
            self.progress.notify_one();
        }
        match (result, which) {
            (Ok(()), Which::Moved) => debug!(partitions = tpl.count(), "offsets committed"),
            (Ok(()), _) => info!(partitions = tpl.count(), "offsets committed ({when})"),
            (Err(e), Which::Moved) => {
                // Hand the offsets out again: the next tick retries them.
                let mut marks = lock(&self.marks);
                for ((topic, partition), off, _) in &offsets {
                    marks.commit_failed(topic, *partition, *off);
                }
                debug!(error = %e, "offset commit failed; it is retried on the next tick");
            }
            (Err(e), _) => warn!(
                error = %e,
                not_committed = %list(&offsets),
                "commit ({when}) failed: these offsets were not committed, and the messages from them on will be delivered again"
            ),
        }
    }

    /// Commit one partition's `offset` with `meta` (the crash-loop guard's
    /// own commits), unless the partition is no longer assigned here.
    pub(super) fn commit_one(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        meta: Meta,
    ) -> Result<(), CommitError> {
        let _gate = self.gate.lock().unwrap_or_else(|e| e.into_inner());
        if !lock(&self.marks).is_assigned(topic, partition) {
            return Err(CommitError::Refused(rdkafka::error::KafkaError::ConsumerCommit(
                rdkafka::types::RDKafkaErrorCode::UnknownPartition,
            )));
        }
        let tpl = offsets_list(&[((topic.to_string(), partition), offset, meta)]);
        let result = commit_within(self.consumer.client(), &tpl, self.timeout);
        metrics::commit(result.is_ok());
        if result.is_ok() {
            let mut marks = lock(&self.marks);
            marks.committed_by_source(topic, partition, offset);
            metrics::uncommitted(marks.uncommitted());
            drop(marks);
            self.progress.notify_one();
        }
        result
    }

    /// The committed offset of one partition and its metadata (`None`: no
    /// committed offset).
    pub(super) fn committed(&self, topic: &str, partition: i32) -> KafkaResult<Option<(i64, String)>> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(topic, partition);
        let answer = self.consumer.committed_offsets(tpl, self.timeout)?;
        let offset = answer.find_partition(topic, partition).map(|e| e.offset());
        Ok(match offset {
            Some(Offset::Offset(o)) => Some((o, native::metadata(&answer, topic, partition))),
            _ => None,
        })
    }
}

/// The one committer: at most one commit in flight; a commit on the tick
/// (when a watermark moved) or at once when the source asks for one.
pub(super) async fn commit_loop(
    commits: Arc<Committer>,
    every: Duration,
    urgent: Arc<tokio::sync::Notify>,
    shutdown: Shutdown,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tick.tick() => {}
            _ = urgent.notified() => {}
        }
        let commits = commits.clone();
        let _ = tokio::task::spawn_blocking(move || commits.commit(Which::Moved, "periodic")).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_at_once_at_half_the_window_or_when_it_is_full_else_on_the_tick() {
        // (committable, uncommitted, window, at once?)
        let cases = [
            (0, 0, 32, false),
            (0, 32, 32, false), // full, but nothing committable: nothing to commit
            (1, 1, 32, false),
            (15, 20, 32, false),
            (15, 31, 32, false),
            (16, 16, 32, true), // half the window committable
            (16, 31, 32, true),
            (32, 32, 32, true),
            (1, 32, 32, true), // the window is full
            (1, 40, 32, true),
            (1, 1, 1, true),
            (1, 1, 2, true),
            (0, 1, 1, false),
        ];
        for (committable, uncommitted, window, expected) in cases {
            assert_eq!(
                commit_now(committable, uncommitted, window),
                expected,
                "committable {committable}, uncommitted {uncommitted}, window {window}"
            );
        }
        assert_eq!(COMMIT_TICK, Duration::from_millis(100));
    }
}
