//! The crash-loop guard's steps that talk to the broker: the first
//! message of a new partition reads how its last owner left it
//! ([`KafkaSource::check_partition`]), a suspect message runs alone with
//! its death recorded first ([`KafkaSource::start_suspect`]), and probes
//! end with the partition back to normal ([`KafkaSource::finish_probes`]).
//! The rules themselves are pure, in [`super::guard`].

use tracing::{debug, error, info, warn};

use rdkafka::Message;

use super::commit::{Committer, COMMIT_TICK};
use super::context::lock;
use super::guard::{given_up_summary, Meta, Verdict};
use super::{KafkaAck, KafkaSource, PAUSE_AFTER};
use crate::delivery::Delivery;
use crate::source::offsets::Mode;
use crate::telemetry::metrics;

impl KafkaSource {
    /// Run `f` (a blocking call to the broker, bounded by the commit
    /// timeout) off the async workers; `None` if it could not run.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Committer) -> T + Send + 'static,
    ) -> Option<T> {
        let commits = self.commits.clone();
        tokio::task::spawn_blocking(move || f(&commits)).await.ok()
    }

    /// Wait a moment, or until progress is made; from [`PAUSE_AFTER`]
    /// after `since` on, the consumer is served meanwhile (rebalances, the
    /// poll interval).
    async fn pause_a_moment(&mut self, since: tokio::time::Instant) {
        let progress = self.progress.clone();
        tokio::select! {
            _ = progress.notified() => {}
            _ = tokio::time::sleep(COMMIT_TICK) => {}
            _ = self.serve_blocked(since) => {}
        }
    }

    /// After a failed guard commit or read: wait a second, serving the
    /// consumer meanwhile (a rebalance that makes the commits fail must be
    /// able to finish).
    async fn back_off(&mut self) {
        let now = tokio::time::Instant::now();
        let since = now.checked_sub(PAUSE_AFTER).unwrap_or(now);
        tokio::select! {
            _ = tokio::time::sleep(PAUSE_AFTER) => {}
            _ = self.serve_blocked(since) => {}
        }
    }

    /// Wait until no message is in flight (a suspect runs alone).
    async fn wait_until_idle(&mut self) {
        let since = tokio::time::Instant::now();
        while lock(&self.marks).in_flight() > 0 {
            self.pause_a_moment(since).await;
        }
    }

    /// The first message of a newly assigned partition arrived: read how
    /// its last owner left it (committed offset and metadata) and set its
    /// mode. A partition that starts normally is first committed at
    /// `first` with "live" metadata, so that a death before any other
    /// commit is noticed too.
    pub(super) async fn check_partition(&mut self, topic: &str, partition: i32, first: i64) {
        let (t, guard) = (topic.to_string(), self.guard);
        let read = self.blocking(move |c| c.committed(&t, partition)).await;
        let committed = match read {
            Some(Ok(c)) => c,
            other => {
                let error = match other {
                    Some(Err(e)) => e.to_string(),
                    _ => "the read did not finish".to_string(),
                };
                warn!(topic, partition, error = %error, "could not read the committed offset of a new partition; retrying");
                self.back_off().await;
                return;
            }
        };
        let (committed_at, meta) = match &committed {
            Some((o, m)) => (*o, Meta::parse(m)),
            None => (first, Meta::Unknown),
        };
        let mode = guard.mode_after(meta, committed_at);
        if let Mode::Suspect { remaining, pending } = mode {
            warn!(topic, partition, offset = committed_at, suspects = remaining,
                  deaths_of_the_first = pending.map(|(_, d)| d),
                  "the previous owner of this partition stopped without leaving (a crash, kill or OOM kill?): its next messages are processed one at a time, each alone");
            lock(&self.marks).set_mode(topic, partition, mode);
            return;
        }
        let live = Meta::Live(guard.window);
        let t = topic.to_string();
        let done = self
            .blocking(move |c| c.commit_one(&t, partition, first, live))
            .await;
        match done {
            Some(Ok(())) => {
                lock(&self.marks).set_mode(topic, partition, Mode::Normal);
                if !self.metadata_checked {
                    self.metadata_checked = true;
                    self.check_metadata_kept(topic, partition, live).await;
                }
            }
            other => {
                let error = match other {
                    Some(Err(e)) => e.to_string(),
                    _ => "the commit did not finish".to_string(),
                };
                warn!(topic, partition, error = %error, "could not mark a new partition as owned; retrying");
                self.back_off().await;
            }
        }
    }

    /// Read back the metadata just committed: a broker that drops it
    /// (tansu 0.6) turns the crash-loop guard off, which the log says.
    async fn check_metadata_kept(&mut self, topic: &str, partition: i32, wrote: Meta) {
        let t = topic.to_string();
        if let Some(Ok(Some((_, read)))) = self.blocking(move |c| c.committed(&t, partition)).await {
            if Meta::parse(&read) != wrote {
                warn!(topic, partition, "the broker does not keep the metadata of committed offsets: the crash-loop guard is off (a message that crashes the agent will crash it again after every restart)");
            }
        }
    }

    /// The message at the front of the stash belongs to a partition with
    /// suspects left: once nothing else is in flight, hand it out alone
    /// (after a commit that names it), or give it up.
    pub(super) async fn start_suspect(
        &mut self,
        remaining: u32,
        pending: Option<(i64, u32)>,
    ) -> Option<(Delivery, KafkaAck)> {
        self.wait_until_idle().await;
        let (topic, partition, offset) = {
            let msg = self.stash.front()?;
            (msg.topic().to_string(), msg.partition(), msg.offset())
        };
        // A rebalance while waiting may have changed the partition's mode.
        let mode = lock(&self.marks).mode(&topic, partition);
        if mode != Some(Mode::Suspect { remaining, pending }) {
            return None;
        }
        let probe = Mode::Probe { offset, remaining };
        match self.guard.verdict(offset, remaining, pending) {
            Verdict::GiveUp(deaths) => {
                let msg = self.stash.pop_front()?;
                error!(topic = %topic, partition, offset, deaths,
                       "the agent stopped {deaths} times while this message was in flight: it is not processed again (failed, and dead-lettered when a DLQ is set)");
                metrics::poison();
                lock(&self.marks).set_mode(&topic, partition, probe);
                self.deliver(&msg, Some(given_up_summary(deaths)))
            }
            Verdict::Probe(meta) => {
                let t = topic.clone();
                let done = self
                    .blocking(move |c| c.commit_one(&t, partition, offset, meta))
                    .await;
                match done {
                    Some(Ok(())) => {
                        let msg = self.stash.pop_front()?;
                        info!(topic = %topic, partition, offset, suspects_left = remaining, "processing a suspect message alone");
                        lock(&self.marks).set_mode(&topic, partition, probe);
                        self.deliver(&msg, None)
                    }
                    other => {
                        let error = match other {
                            Some(Err(e)) => e.to_string(),
                            _ => "the commit did not finish".to_string(),
                        };
                        warn!(topic = %topic, partition, offset, error = %error, "could not commit before a suspect message; retrying");
                        self.back_off().await;
                        None
                    }
                }
            }
        }
    }

    /// Once a suspect is done (nothing in flight), commit past it: the
    /// next suspect, or normal operation, follows.
    pub(super) async fn finish_probes(&mut self) {
        let since = tokio::time::Instant::now();
        loop {
            let probes = lock(&self.marks).probes();
            if probes.is_empty() {
                return;
            }
            if lock(&self.marks).in_flight() > 0 {
                self.pause_a_moment(since).await;
                continue;
            }
            for ((topic, partition), offset, remaining, watermark) in probes {
                let (mode, meta) = match watermark {
                    Some(w) if w > offset => self.guard.after_probe(remaining),
                    // Not done (stopped): still a suspect, not blamed.
                    _ => (
                        Mode::Suspect {
                            remaining,
                            pending: None,
                        },
                        Meta::Suspect(remaining),
                    ),
                };
                let at = watermark.unwrap_or(offset);
                let t = topic.clone();
                let done = self
                    .blocking(move |c| c.commit_one(&t, partition, at, meta))
                    .await;
                match done {
                    Some(Ok(())) => lock(&self.marks).set_mode(&topic, partition, mode),
                    Some(Err(e)) if !lock(&self.marks).is_assigned(&topic, partition) => {
                        debug!(error = %e, "partition revoked after its suspect")
                    }
                    other => {
                        let error = match other {
                            Some(Err(e)) => e.to_string(),
                            _ => "the commit did not finish".to_string(),
                        };
                        warn!(topic = %topic, partition, offset = at, error = %error, "could not commit past a suspect message; retrying");
                        self.back_off().await;
                    }
                }
            }
        }
    }
}
