//! The librdkafka callbacks of the Kafka consumer: its log lines and
//! errors, statistics (consumer lag, broker state for `/readyz`), and the
//! rebalance handling that keeps the offset tracker in step with the
//! assignment (a revoked partition's final watermark is committed under
//! the commit gate before it goes).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};
use tracing::{debug, error, info, warn};

use crate::source::offsets::Watermarks;
use crate::telemetry::metrics;
use crate::telemetry::server::Health;

/// The readiness reason until the group assigns partitions.
pub(super) const WAITING_FOR_ASSIGNMENT: &str = "waiting for a partition assignment from the consumer group";

/// What the source knows about its place in the group that the metrics do
/// not say: whether it joined (for `/readyz`), and the per-source counts the
/// tests read (the metrics are process-wide).
#[derive(Debug, Default)]
pub struct Status {
    /// Partitions currently assigned.
    pub assigned: AtomicU64,
    /// At least one assignment happened (possibly empty: standby).
    pub joined: AtomicBool,
    /// Messages received.
    pub received: AtomicU64,
    /// Messages written to the DLQ.
    pub dead_lettered: AtomicU64,
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
            let mut finals = TopicPartitionList::new();
            {
                let mut marks = lock(&self.marks);
                for e in tpl.elements() {
                    if let Some(off) = marks.revoke(e.topic(), e.partition()) {
                        let _ = finals.add_partition_offset(e.topic(), e.partition(), Offset::Offset(off));
                    }
                }
            }
            info!(partitions = tpl.count(), "partitions revoked");
            if finals.count() > 0 {
                match consumer.commit(&finals, CommitMode::Sync) {
                    Ok(()) => metrics::commit(true),
                    Err(e) => {
                        metrics::commit(false);
                        warn!(error = %e, "commit on revoke failed; those messages will be redelivered");
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

pub(super) type Consumer_ = StreamConsumer<EngineContext>;
