//! The committer of the Kafka source: each partition's contiguous
//! watermark is committed synchronously, off the async workers and under
//! the commit gate, on a tick when it moved or at once when the source asks.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use tracing::{debug, info, warn};

use super::context::{lock, Consumer_};
use crate::shutdown::Shutdown;
use crate::source::offsets::Watermarks;
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
    /// Every assigned partition's (before the drain, and the final one).
    All,
}

/// Makes the commits (revocation's final commit aside): synchronous, under
/// the commit gate, results counted in the metrics.
pub(super) struct Committer {
    pub(super) consumer: Arc<Consumer_>,
    pub(super) marks: Arc<Mutex<Watermarks>>,
    pub(super) gate: Arc<Mutex<()>>,
    /// Woken after a successful commit (the window may have room again).
    pub(super) progress: Arc<tokio::sync::Notify>,
}

impl Committer {
    /// Commit `which` watermarks; blocks for the broker's answer.
    pub(super) fn commit(&self, which: Which, when: &str) {
        let _gate = self.gate.lock().unwrap_or_else(|e| e.into_inner());
        let offsets = {
            let mut marks = lock(&self.marks);
            match which {
                Which::Moved => marks.take_committable(),
                Which::All => marks.current(),
            }
        };
        if offsets.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), off) in &offsets {
            let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(*off));
        }
        let result = self.consumer.commit(&tpl, CommitMode::Sync);
        metrics::commit(result.is_ok());
        if result.is_ok() {
            let mut marks = lock(&self.marks);
            for ((topic, partition), off) in &offsets {
                marks.commit_succeeded(topic, *partition, *off);
            }
            metrics::uncommitted(marks.uncommitted());
            drop(marks);
            self.progress.notify_one();
        }
        match (result, which) {
            (Ok(()), Which::Moved) => debug!(partitions = tpl.count(), "offsets committed"),
            (Ok(()), Which::All) => info!(partitions = tpl.count(), "offsets committed ({when})"),
            (Err(e), Which::Moved) => {
                // Hand the offsets out again: the next tick retries them.
                let mut marks = lock(&self.marks);
                for ((topic, partition), off) in &offsets {
                    marks.commit_failed(topic, *partition, *off);
                }
                debug!(error = %e, "offset commit failed; it is retried on the next tick");
            }
            (Err(e), Which::All) => {
                warn!(error = %e, "commit ({when}) failed; uncommitted messages will be redelivered")
            }
        }
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
