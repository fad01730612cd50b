//! The librdkafka callbacks of the Kafka consumer: its log lines and
//! errors, statistics (consumer lag, broker state for `/readyz`), and the
//! rebalance handling that keeps the offset tracker in step with the
//! assignment (a revoked partition's final watermark is committed under
//! the commit gate before it goes).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::KafkaError;
use tracing::{debug, error, info, warn};

use super::commit::offsets_list;
use super::guard::{Guard, Meta, Purpose};
use super::native::commit_within;
use crate::source::offsets::{TopicPartition, Watermarks};
use crate::telemetry::metrics;
use crate::telemetry::server::Health;

/// The readiness reason until the group assigns partitions.
pub(super) const WAITING_FOR_ASSIGNMENT: &str = "waiting for a partition assignment from the consumer group";

/// The source's place in its group, which the process-wide metrics do not
/// say per source: whether it joined (for `/readyz`) and how many
/// partitions it holds.
#[derive(Debug, Default)]
pub struct Status {
    /// Partitions currently assigned.
    pub assigned: AtomicU64,
    /// At least one assignment happened (possibly empty: standby).
    pub joined: AtomicBool,
}

/// The consumer's librdkafka context: what the callbacks share with the
/// source and the committer.
pub(super) struct EngineContext {
    pub(super) marks: Arc<Mutex<Watermarks>>,
    pub(super) gate: Arc<Mutex<()>>,
    pub(super) status: Arc<Status>,
    pub(super) health: Arc<Health>,
    pub(super) said_standby: AtomicBool,
    /// The source paused its assignment (shared with [`super::KafkaSource`]).
    pub(super) paused: Arc<AtomicBool>,
    /// The longest wait for the answer to the commit on revoke.
    pub(super) commit_timeout: std::time::Duration,
    pub(super) guard: Guard,
}

impl ClientContext for EngineContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                error!(facility = fac, "librdkafka: {message}")
            }
            RDKafkaLogLevel::Warning => warn!(facility = fac, "librdkafka: {message}"),
            _ => debug!(facility = fac, "librdkafka: {message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // librdkafka keeps reconnecting by itself; say so and carry on.
        warn!(error = %error, "Kafka client error (retrying): {reason}");
        if error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::AllBrokersDown) {
            self.health.set_not_ready("no Kafka broker is reachable");
        }
    }

    fn stats(&self, statistics: rdkafka::Statistics) {
        for (name, topic) in &statistics.topics {
            for (id, p) in &topic.partitions {
                // -1 is librdkafka's internal "unassigned" partition; a
                // negative lag means unknown (not assigned here).
                if *id >= 0 && p.consumer_lag >= 0 {
                    metrics::consumer_lag(name, *id, p.consumer_lag);
                }
            }
        }
        let connected = statistics
            .brokers
            .values()
            .any(|b| b.nodeid >= 0 && b.state == "UP");
        if !connected {
            self.health.set_not_ready("no Kafka broker is reachable");
        } else if self.status.joined.load(Ordering::Relaxed) {
            self.health.set_ready();
        } else {
            self.health.set_not_ready(WAITING_FOR_ASSIGNMENT);
        }
    }
}

pub(super) fn lock(marks: &Mutex<Watermarks>) -> std::sync::MutexGuard<'_, Watermarks> {
    // A poisoned lock only means another task panicked mid-update; the
    // tracker's state is still consistent enough to go on.
    marks.lock().unwrap_or_else(|e| e.into_inner())
}

impl ConsumerContext for EngineContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let _gate = self.gate.lock().unwrap_or_else(|e| e.into_inner());
            let mut finals: Vec<(TopicPartition, i64, Meta)> = Vec::new();
            {
                let mut marks = lock(&self.marks);
                for e in tpl.elements() {
                    if let Some((off, mode)) = marks.revoke_with_mode(e.topic(), e.partition()) {
                        if let Some(meta) = self.guard.metadata(mode, off, Purpose::Leaving) {
                            finals.push(((e.topic().to_string(), e.partition()), off, meta));
                        }
                    }
                }
            }
            info!(partitions = tpl.count(), "partitions revoked");
            if !finals.is_empty() {
                // Waits at most the commit timeout: this runs on the thread
                // that polls the consumer, which is the closing thread at
                // shutdown (a broker that is gone must not hold it).
                match commit_within(consumer.client(), &offsets_list(&finals), self.commit_timeout) {
                    Ok(()) => metrics::commit(true),
                    Err(e) => {
                        metrics::commit(false);
                        let not_committed: Vec<String> = finals
                            .iter()
                            .map(|((t, p), o, _)| format!("{t}[{p}]@{o}"))
                            .collect();
                        warn!(error = %e, not_committed = %not_committed.join(","),
                              "commit on revoke failed: these offsets were not committed, and the messages from them on will be delivered again");
                    }
                }
            }
            self.status.assigned.store(0, Ordering::Relaxed);
            metrics::partitions_assigned(0);
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                // librdkafka keeps a partition's pause across a revoke and a
                // new assignment: set it to what the source is in now.
                let paused = self.paused.load(Ordering::SeqCst);
                let set = if paused {
                    consumer.pause(tpl)
                } else {
                    consumer.resume(tpl)
                };
                if let Err(e) = set {
                    warn!(error = %e, paused, "could not set the pause state of the assigned partitions");
                }
                let mut marks = lock(&self.marks);
                for e in tpl.elements() {
                    marks.assign(e.topic(), e.partition());
                }
                let n = marks.assigned().len() as u64;
                drop(marks);
                self.status.assigned.store(n, Ordering::Relaxed);
                metrics::partitions_assigned(n as usize);
                self.status.joined.store(true, Ordering::Relaxed);
                // Assigned, or a declared warm standby: either way ready.
                self.health.set_ready();
                if n == 0 {
                    if !self.said_standby.swap(true, Ordering::Relaxed) {
                        info!("no partitions assigned: staying up as a warm standby (more replicas than partitions)");
                    }
                } else {
                    self.said_standby.store(false, Ordering::Relaxed);
                    let list: Vec<String> = tpl
                        .elements()
                        .iter()
                        .map(|e| format!("{}[{}]", e.topic(), e.partition()))
                        .collect();
                    info!(partitions = %list.join(","), "partitions assigned");
                }
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => warn!(error = %e, "rebalance error"),
        }
    }
}

/// The agent's consumer. Dropping the last handle closes it (librdkafka
/// revokes, the revoke commit runs, the group is left, its threads are
/// joined), which blocks: so the close always runs on a thread of its own,
/// `kafka-close`, whichever thread drops the last handle (a tokio worker,
/// or the thread dropping the runtime), and exactly once. Whoever must know
/// that the close is over waits for the signal given when it is, with a
/// deadline ([`super::KafkaSource`]'s close does).
pub(super) struct Consumer_ {
    inner: Option<StreamConsumer<EngineContext>>,
    closed: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Consumer_ {
    /// Own `consumer`; `closed` is told when its close is over.
    pub(super) fn new(
        consumer: StreamConsumer<EngineContext>,
        closed: tokio::sync::oneshot::Sender<()>,
    ) -> Self {
        Consumer_ {
            inner: Some(consumer),
            closed: Some(closed),
        }
    }
}

impl std::ops::Deref for Consumer_ {
    type Target = StreamConsumer<EngineContext>;

    #[allow(clippy::expect_used)] // `inner` is taken only by `drop`
    fn deref(&self) -> &Self::Target {
        self.inner.as_ref().expect("the consumer is there until dropped")
    }
}

impl Drop for Consumer_ {
    fn drop(&mut self) {
        let Some(consumer) = self.inner.take() else {
            return;
        };
        let closed = self.closed.take();
        let close = move || {
            drop(consumer);
            if let Some(closed) = closed {
                let _ = closed.send(());
            }
        };
        // If no thread can be started, the closure (and the consumer) is
        // dropped here instead: closed on this thread rather than never.
        if let Err(e) = std::thread::Builder::new()
            .name("kafka-close".into())
            .spawn(close)
        {
            warn!(error = %e, "could not start the thread that closes the Kafka consumer");
        }
    }
}
