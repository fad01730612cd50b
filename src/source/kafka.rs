//! The Kafka source (SPEC §2.1, §8): at-least-once, concurrent, bounded.
//!
//! * **Offsets.** Auto-commit is off; we commit each partition's contiguous
//!   watermark ([`super::offsets::Watermarks`]) ourselves: every
//!   [`COMMIT_TICK`] when it moved, at once when half the uncommitted window
//!   is committable or the window is full, on revoke (the final watermark)
//!   and at shutdown. The window counts every message not yet confirmed
//!   committed *by the broker*, and fetching waits while it is full, so a
//!   crash redelivers at most `AGENT_MAX_IN_FLIGHT` messages. Every commit is
//!   synchronous (rust-rdkafka never delivers the result of an asynchronous
//!   one: it installs no `offset_commit_cb`), made off the async workers, and
//!   under the *commit gate*, which revocation holds too: a partition is never
//!   committed after it was revoked, and a late completion for it is dropped.
//!   The gate is not the tracker's lock, so completions never wait for a
//!   commit's round trip.
//! * **Concurrency** is [`super::dispatch`]'s: the in-flight bound is taken
//!   before asking for the next message, and librdkafka's prefetch queue is
//!   capped here, so memory stays bounded whatever the lag.
//! * **Blocked for long** (Port down and every slot holding a run whose
//!   report waits): after [`PAUSE_AFTER`] the assigned partitions are paused
//!   and the consumer is still polled, so the group never evicts us for
//!   exceeding `max.poll.interval.ms`; they resume with the next fetch.
//! * **Shutdown.** When fetching stops, commit what is done; after the drain,
//!   commit again and close (leaving the group).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use tracing::{debug, error, info, warn};

use super::offsets::{Ticket, Watermarks};
use super::{dispatch, Ack, DispatchOptions, Source};
use crate::invoke::Invoker;
use crate::pipeline::{Delivery, Outcome, Pipeline};
use crate::port::Reporter;
use crate::settings::Secret;
use crate::shutdown::Shutdown;
use crate::telemetry::metrics;
use crate::telemetry::server::Health;

/// How often a moved watermark is committed when nothing else triggers a
/// commit: a finished message is committed within about this long.
pub const COMMIT_TICK: Duration = Duration::from_millis(100);

/// Whether the committer is asked to commit at once instead of at its next
/// [`COMMIT_TICK`]: something is committable and either half the window is
/// committable or the uncommitted window is full.
pub(crate) fn commit_now(committable: usize, uncommitted: usize, window: usize) -> bool {
    committable > 0 && (committable * 2 >= window || uncommitted >= window)
}

/// Blocked (window full, no slot free) for this long: pause the partitions
/// and keep polling the consumer, so the group does not evict us.
pub const PAUSE_AFTER: Duration = Duration::from_secs(1);

/// The readiness reason until the group assigns partitions.
const WAITING_FOR_ASSIGNMENT: &str = "waiting for a partition assignment from the consumer group";

/// How to reach and consume the topics.
#[derive(Debug, Clone)]
pub struct KafkaOptions {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// `group.id`.
    pub group_id: String,
    /// Topics to subscribe to.
    pub topics: Vec<String>,
    /// `security.protocol`.
    pub security_protocol: String,
    /// `sasl.mechanism`.
    pub sasl_mechanism: Option<String>,
    /// `sasl.username`.
    pub username: Option<String>,
    /// `sasl.password`.
    pub password: Option<Secret>,
    /// `session.timeout.ms`.
    pub session_timeout_ms: u32,
    /// `max.poll.interval.ms`.
    pub max_poll_interval_ms: u32,
    /// `auto.offset.reset`.
    pub auto_offset_reset: String,
    /// Messages in flight at most.
    pub max_in_flight: usize,
    /// Drain time at shutdown.
    pub drain_timeout: Duration,
    /// How often a moved watermark is committed when nothing else
    /// triggers a commit.
    pub commit_interval: Duration,
    /// Dead-letter topic.
    pub dlq_topic: Option<String>,
    /// Extra librdkafka properties (tests, tuning).
    pub extra: Vec<(String, String)>,
}

impl KafkaOptions {
    pub(crate) fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("client.id", "port-agent")
            .set("security.protocol", &self.security_protocol)
            .set_log_level(RDKafkaLogLevel::Warning);
        if let Some(m) = &self.sasl_mechanism {
            c.set("sasl.mechanism", m);
        }
        if let Some(u) = &self.username {
            c.set("sasl.username", u);
        }
        if let Some(p) = &self.password {
            c.set("sasl.password", p.expose());
        }
        c
    }

    fn consumer_config(&self) -> ClientConfig {
        let mut c = self.client_config();
        c.set("group.id", &self.group_id)
            .set("session.timeout.ms", self.session_timeout_ms.to_string())
            .set("max.poll.interval.ms", self.max_poll_interval_ms.to_string())
            .set("auto.offset.reset", &self.auto_offset_reset)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            // A broker that holds an empty fetch for the whole wait (tansu
            // does) would add up to this much latency to a quiet topic; 100
            // ms costs ten idle fetches a second.
            .set("fetch.wait.max.ms", "100")
            // Consumer lag and broker state for /metrics and /readyz.
            .set("statistics.interval.ms", "5000")
            // Bounded prefetch: memory must not grow with the lag.
            .set("queued.min.messages", "1000")
            .set("queued.max.messages.kbytes", "4096")
            .set("fetch.max.bytes", "4194304")
            .set("max.partition.fetch.bytes", "1048576");
        for (k, v) in &self.extra {
            c.set(k, v);
        }
        c
    }
}

/// What the engine knows about its place in the group (health, metrics).
#[derive(Debug, Default)]
pub struct Status {
    /// Partitions currently assigned.
    pub assigned: AtomicU64,
    /// At least one assignment happened (possibly empty: standby).
    pub joined: AtomicBool,
    /// The last assignment was empty.
    pub standby: AtomicBool,
    /// Messages received.
    pub received: AtomicU64,
    /// Messages done.
    pub done: AtomicU64,
    /// Commits that succeeded.
    pub commits_ok: AtomicU64,
    /// Commits that failed.
    pub commits_failed: AtomicU64,
    /// Messages written to the DLQ.
    pub dead_lettered: AtomicU64,
}

struct EngineContext {
    marks: Arc<Mutex<Watermarks>>,
    gate: Arc<Mutex<()>>,
    status: Arc<Status>,
    health: Arc<Health>,
    said_standby: AtomicBool,
    /// The source paused its assignment (shared with [`KafkaSource`]).
    paused: Arc<AtomicBool>,
}

impl Status {
    /// Count a commit's result (here and in the metrics).
    fn committed(&self, ok: bool) {
        let counter = if ok {
            &self.commits_ok
        } else {
            &self.commits_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
        metrics::commit(ok);
    }
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

fn lock(marks: &Mutex<Watermarks>) -> std::sync::MutexGuard<'_, Watermarks> {
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
                    Ok(()) => self.status.committed(true),
                    Err(e) => {
                        self.status.committed(false);
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
                self.status.standby.store(n == 0, Ordering::Relaxed);
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

type Consumer_ = StreamConsumer<EngineContext>;

/// The engine: a [`KafkaSource`] run through the pipeline by
/// [`super::dispatch`].
pub struct KafkaEngine<I, R> {
    opts: KafkaOptions,
    pipeline: Arc<Pipeline<I, R>>,
    /// Shared status (tests and tools read it).
    pub status: Arc<Status>,
    /// What the probes answer.
    pub health: Arc<Health>,
}

impl<I, R> KafkaEngine<I, R>
where
    I: Invoker + 'static,
    R: Reporter + 'static,
{
    /// A new engine.
    pub fn new(opts: KafkaOptions, pipeline: Arc<Pipeline<I, R>>) -> Self {
        KafkaEngine {
            opts,
            pipeline,
            status: Arc::default(),
            health: Health::new(WAITING_FOR_ASSIGNMENT),
        }
    }

    /// Report readiness through `health` (shared with the HTTP server).
    pub fn with_health(mut self, health: Arc<Health>) -> Self {
        health.set_not_ready(WAITING_FOR_ASSIGNMENT);
        self.health = health;
        self
    }

    /// Consume until `shutdown` fires, then drain and commit.
    pub async fn run(&self, shutdown: Shutdown) -> KafkaResult<()> {
        let source = KafkaSource::connect(
            &self.opts,
            self.status.clone(),
            self.health.clone(),
            shutdown.clone(),
        )?;
        let limits = DispatchOptions {
            max_in_flight: self.opts.max_in_flight,
            drain_timeout: self.opts.drain_timeout,
        };
        dispatch(source, self.pipeline.clone(), limits, shutdown).await;
        Ok(())
    }
}

/// Kafka as a [`Source`]: one consumer on both topics, the offset tracker,
/// the periodic committer, and the optional DLQ producer.
pub struct KafkaSource {
    consumer: Arc<Consumer_>,
    commits: Arc<Committer>,
    marks: Arc<Mutex<Watermarks>>,
    status: Arc<Status>,
    dlq: Option<(String, Arc<FutureProducer>)>,
    committer: tokio::task::JoinHandle<()>,
    consecutive_errors: u32,
    /// At most this many messages started and not yet confirmed committed
    /// by the broker, so a crash redelivers no more than the in-flight bound.
    window: usize,
    progress: Arc<tokio::sync::Notify>,
    /// Ask the committer to commit now (half the window is committable).
    urgent: Arc<tokio::sync::Notify>,
    /// The assigned partitions are paused (blocked for long).
    paused: Arc<AtomicBool>,
    /// Messages received while paused (a fetch that raced the pause).
    stash: std::collections::VecDeque<rdkafka::message::OwnedMessage>,
}

/// What a Kafka delivery needs back: its ticket, and what the DLQ needs.
pub struct KafkaAck {
    ticket: Ticket,
    headers: Vec<(String, Vec<u8>)>,
    marks: Arc<Mutex<Watermarks>>,
    status: Arc<Status>,
    dlq: Option<(String, Arc<FutureProducer>)>,
    progress: Arc<tokio::sync::Notify>,
}

impl KafkaSource {
    /// Create the consumer, subscribe, start the committer.
    pub fn connect(
        opts: &KafkaOptions,
        status: Arc<Status>,
        health: Arc<Health>,
        shutdown: Shutdown,
    ) -> KafkaResult<KafkaSource> {
        let marks = Arc::new(Mutex::new(Watermarks::new()));
        let gate = Arc::new(Mutex::new(()));
        let paused: Arc<AtomicBool> = Arc::default();
        let context = EngineContext {
            marks: marks.clone(),
            gate: gate.clone(),
            status: status.clone(),
            health: health.clone(),
            said_standby: AtomicBool::new(false),
            paused: paused.clone(),
        };
        let consumer: Arc<Consumer_> = Arc::new(opts.consumer_config().create_with_context(context)?);
        metrics::partitions_assigned(0);
        let topics: Vec<&str> = opts.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        info!(topics = %opts.topics.join(","), group = %opts.group_id, "subscribed");
        let dlq = match &opts.dlq_topic {
            Some(topic) => {
                let mut c = opts.client_config();
                c.set("message.timeout.ms", "30000");
                Some((topic.clone(), Arc::new(c.create::<FutureProducer>()?)))
            }
            None => None,
        };
        let progress: Arc<tokio::sync::Notify> = Arc::default();
        let commits = Arc::new(Committer {
            consumer: consumer.clone(),
            marks: marks.clone(),
            gate,
            status: status.clone(),
            progress: progress.clone(),
        });
        let urgent: Arc<tokio::sync::Notify> = Arc::default();
        let loop_ = commit_loop(
            commits.clone(),
            opts.commit_interval,
            urgent.clone(),
            shutdown.clone(),
        );
        let committer = tokio::spawn(async move {
            loop_.await;
            // It returns only at shutdown; anything else is a dead loop that
            // would stop all commits.
            if !shutdown.is_fired() {
                health.loop_died("the offset commit loop stopped");
            }
        });
        Ok(KafkaSource {
            consumer,
            commits,
            marks,
            status,
            dlq,
            committer,
            consecutive_errors: 0,
            window: opts.max_in_flight,
            progress,
            urgent,
            paused,
            stash: Default::default(),
        })
    }
}

impl KafkaSource {
    /// Never returns: once blocked for [`PAUSE_AFTER`] since `since`, pause
    /// the assignment and keep polling the consumer (so that the group
    /// keeps us and rebalances are served), stashing whatever a fetch that
    /// raced the pause still brings.
    async fn serve_blocked(&mut self, since: tokio::time::Instant) {
        tokio::time::sleep_until(since + PAUSE_AFTER).await;
        if !self.paused.swap(true, Ordering::SeqCst) {
            self.pause_assignment();
            info!("no slot free for a while: partitions paused, the consumer is still polled");
        }
        loop {
            match self.consumer.recv().await {
                Ok(m) => {
                    let m = m.detach();
                    self.stash.push_back(m);
                    // A partition assigned since the pause is not paused.
                    self.pause_assignment();
                }
                Err(e) => {
                    debug!(error = %e, "Kafka consume error while paused");
                    tokio::time::sleep(COMMIT_TICK).await;
                }
            }
        }
    }

    fn pause_assignment(&self) {
        if let Ok(assigned) = self.consumer.assignment() {
            if let Err(e) = self.consumer.pause(&assigned) {
                warn!(error = %e, "could not pause the assigned partitions");
            }
        }
    }

    fn resume(&mut self) {
        self.paused.store(false, Ordering::SeqCst);
        if let Ok(assigned) = self.consumer.assignment() {
            match self.consumer.resume(&assigned) {
                Ok(()) => info!("partitions resumed"),
                Err(e) => warn!(error = %e, "could not resume the assigned partitions"),
            }
        }
    }
}

impl Source for KafkaSource {
    type Ack = KafkaAck;

    async fn next(&mut self, _room: usize) -> Option<(Delivery, KafkaAck)> {
        // Wait while the uncommitted window is full: a message counts until
        // the broker confirmed a commit past it.
        let blocked_since = tokio::time::Instant::now();
        loop {
            let (uncommitted, committable) = {
                let marks = lock(&self.marks);
                (marks.uncommitted(), marks.committable())
            };
            if commit_now(committable, uncommitted, self.window) {
                self.urgent.notify_one();
            }
            if uncommitted < self.window {
                break;
            }
            let progress = self.progress.clone();
            tokio::select! {
                _ = progress.notified() => {}
                _ = tokio::time::sleep(COMMIT_TICK) => {}
                _ = self.serve_blocked(blocked_since) => {}
            }
        }
        if self.paused.load(Ordering::SeqCst) {
            self.resume();
        }
        loop {
            let next = match self.stash.pop_front() {
                Some(m) => Ok(m),
                None => self.consumer.recv().await.map(|m| m.detach()),
            };
            let msg = match next {
                Ok(m) => {
                    self.consecutive_errors = 0;
                    m
                }
                Err(e) => {
                    self.consecutive_errors += 1;
                    if self.consecutive_errors == 1 || self.consecutive_errors % 20 == 0 {
                        warn!(error = %e, "Kafka consume error; retrying");
                    }
                    let pause = Duration::from_millis(100 * u64::from(self.consecutive_errors.min(50)));
                    tokio::time::sleep(pause).await;
                    continue;
                }
            };
            self.status.received.fetch_add(1, Ordering::Relaxed);
            let started = {
                let mut marks = lock(&self.marks);
                let ticket = marks.start(msg.topic(), msg.partition(), msg.offset());
                metrics::uncommitted(marks.uncommitted());
                ticket
            };
            let Some(ticket) = started else {
                debug!(
                    topic = msg.topic(),
                    partition = msg.partition(),
                    offset = msg.offset(),
                    "message of a partition no longer assigned; it will be redelivered"
                );
                continue;
            };
            let delivery = Delivery {
                topic: msg.topic().to_string(),
                partition: msg.partition(),
                offset: msg.offset(),
                key: msg.key().filter(|k| !k.is_empty()).map(<[u8]>::to_vec),
                payload: msg.payload().map(<[u8]>::to_vec).unwrap_or_default(),
            };
            let headers = msg
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|x| (x.key.to_string(), x.value.map(<[u8]>::to_vec).unwrap_or_default()))
                        .collect()
                })
                .unwrap_or_default();
            let ack = KafkaAck {
                ticket,
                headers,
                marks: self.marks.clone(),
                status: self.status.clone(),
                dlq: self.dlq.clone(),
                progress: self.progress.clone(),
            };
            return Some((delivery, ack));
        }
    }

    async fn idle(&mut self) {
        self.serve_blocked(tokio::time::Instant::now()).await
    }

    fn stopping(&mut self) {
        // Commit what is done right away: if the process dies during the
        // drain, only the in-flight messages come again.
        self.committer.abort();
        self.commits.commit(Which::All, "before draining");
    }

    async fn close(self) {
        let commits = self.commits.clone();
        let _ = tokio::task::spawn_blocking(move || commits.commit(Which::All, "final")).await;
        // Dropping the consumer closes it: librdkafka revokes, leaves the
        // group and waits for its threads. That blocks, so do it off the
        // async workers.
        let consumer = self.consumer;
        let _ = tokio::task::spawn_blocking(move || drop(consumer)).await;
        info!("left the consumer group");
    }
}

impl Ack for KafkaAck {
    async fn done(self, delivery: &Delivery, outcome: &Outcome) {
        if let (Some((topic, producer)), true) = (&self.dlq, outcome.needs_dead_letter()) {
            dead_letter(producer, topic, delivery, &self.headers, outcome, &self.status).await;
        }
        self.status.done.fetch_add(1, Ordering::Relaxed);
        let counted = {
            let mut marks = lock(&self.marks);
            let counted = marks.done(&self.ticket);
            metrics::uncommitted(marks.uncommitted());
            counted
        };
        self.progress.notify_one();
        if !counted {
            debug!(topic = %self.ticket.topic, partition = self.ticket.partition, offset = self.ticket.offset,
                   "completion for a revoked partition dropped");
        }
    }
}

/// Which watermarks to commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    /// Those that moved since the last commit (periodic).
    Moved,
    /// Every assigned partition's (before the drain, and the final one).
    All,
}

/// Makes the commits (revocation's final commit aside): synchronous, under
/// the commit gate, results counted.
struct Committer {
    consumer: Arc<Consumer_>,
    marks: Arc<Mutex<Watermarks>>,
    gate: Arc<Mutex<()>>,
    status: Arc<Status>,
    /// Woken after a successful commit (the window may have room again).
    progress: Arc<tokio::sync::Notify>,
}

impl Committer {
    /// Commit `which` watermarks; blocks for the broker's answer.
    fn commit(&self, which: Which, when: &str) {
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
        self.status.committed(result.is_ok());
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
async fn commit_loop(
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

async fn dead_letter(
    producer: &FutureProducer,
    topic: &str,
    d: &Delivery,
    headers: &[(String, Vec<u8>)],
    outcome: &Outcome,
    status: &Status,
) {
    let reason = match &outcome.result {
        crate::pipeline::Disposition::Skipped(s) => s.to_string(),
        crate::pipeline::Disposition::InternalError(p) => format!("internal error: {p}"),
        _ => outcome.port_errors.join("; "),
    };
    let partition = d.partition.to_string();
    let offset = d.offset.to_string();
    let mut h = OwnedHeaders::new();
    for (k, v) in headers {
        h = h.insert(Header {
            key: k,
            value: Some(v.as_slice()),
        });
    }
    for (k, v) in [
        ("x-port-agent-error", reason.as_str()),
        ("x-port-agent-outcome", outcome.name()),
        ("x-port-agent-topic", d.topic.as_str()),
        ("x-port-agent-partition", partition.as_str()),
        ("x-port-agent-offset", offset.as_str()),
    ] {
        h = h.insert(Header {
            key: k,
            value: Some(v.as_bytes()),
        });
    }
    let mut record = FutureRecord::to(topic).payload(&d.payload).headers(h);
    if let Some(k) = &d.key {
        record = record.key(k);
    }
    match producer.send(record, Duration::from_secs(30)).await {
        Ok(_) => {
            status.dead_lettered.fetch_add(1, Ordering::Relaxed);
            metrics::dead_lettered();
            info!(dlq = topic, "message written to the dead-letter topic");
        }
        Err((e, _)) => {
            error!(dlq = topic, error = %e, "could not write to the dead-letter topic; the message is dropped after logging")
        }
    }
}

/// With a CA bundle (`SSL_CERT_FILE` / `REQUESTS_CA_BUNDLE`), librdkafka
/// gets the system's roots *plus* the bundle as `ssl.ca.location`: OpenSSL
/// alone would read `SSL_CERT_FILE` as its only roots file.
fn ca_location(settings: &crate::settings::Settings) -> Result<Vec<(String, String)>, String> {
    let Some(bundle) = &settings.ca_bundle else {
        return Ok(Vec::new());
    };
    let merged = crate::tls::merged_ca_file(bundle).map_err(|e| format!("SSL_CERT_FILE: {e}"))?;
    Ok(vec![(
        "ssl.ca.location".to_string(),
        merged.display().to_string(),
    )])
}

/// Where the brokers and credentials come from (SPEC §2.1).
pub async fn resolve_options(
    settings: &crate::settings::Settings,
    port: &crate::port::PortClient,
) -> Result<KafkaOptions, String> {
    let (brokers, username, password) = if settings.using_local_port_instance {
        if settings.kafka_bootstrap_servers.is_empty() {
            return Err(
                "KAFKA_CONSUMER_BOOTSTRAP_SERVERS: required when USING_LOCAL_PORT_INSTANCE is true"
                    .to_string(),
            );
        }
        (settings.kafka_bootstrap_servers.clone(), None, None)
    } else if let Some(brokers) = &settings.kafka_brokers {
        (
            brokers.clone(),
            settings.kafka_username.clone(),
            settings.kafka_password.clone(),
        )
    } else {
        let answer = port
            .request("GET", "/v1/kafka-credentials", None)
            .await
            .map_err(|e| format!("cannot fetch Kafka credentials from Port: {e}"))?;
        let creds = &answer["credentials"];
        let brokers: Vec<&str> = creds["brokers"]
            .as_array()
            .map(|b| b.iter().filter_map(serde_json::Value::as_str).collect())
            .unwrap_or_default();
        if brokers.is_empty() {
            return Err("Port's /v1/kafka-credentials answer has no brokers".to_string());
        }
        (
            brokers.join(","),
            creds["username"].as_str().map(str::to_string),
            creds["password"].as_str().map(Secret::new),
        )
    };
    Ok(KafkaOptions {
        brokers,
        group_id: settings.kafka_group_id.clone(),
        topics: vec![settings.runs_topic.clone(), settings.change_log_topic.clone()],
        security_protocol: settings.kafka_security_protocol.clone(),
        sasl_mechanism: settings.kafka_sasl_mechanism.clone(),
        username,
        password,
        session_timeout_ms: settings.kafka_session_timeout_ms,
        max_poll_interval_ms: settings.kafka_max_poll_interval_ms,
        auto_offset_reset: settings.kafka_auto_offset_reset.clone(),
        max_in_flight: settings.max_in_flight,
        drain_timeout: settings.drain_timeout,
        commit_interval: COMMIT_TICK,
        dlq_topic: settings.dlq_topic.clone(),
        extra: ca_location(settings)?,
    })
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

    fn options() -> KafkaOptions {
        KafkaOptions {
            brokers: "localhost:9092".to_string(),
            group_id: "g".to_string(),
            topics: vec!["t".to_string()],
            security_protocol: "plaintext".to_string(),
            sasl_mechanism: None,
            username: None,
            password: None,
            session_timeout_ms: 45_000,
            max_poll_interval_ms: 300_000,
            auto_offset_reset: "earliest".to_string(),
            max_in_flight: 32,
            drain_timeout: Duration::from_secs(30),
            commit_interval: COMMIT_TICK,
            dlq_topic: None,
            extra: Vec::new(),
        }
    }

    #[test]
    fn the_consumer_is_configured_with_a_bounded_prefetch_short_fetch_wait_and_no_auto_commit() {
        let c = options().consumer_config();
        for (key, value) in [
            ("queued.max.messages.kbytes", "4096"),
            ("queued.min.messages", "1000"),
            ("fetch.wait.max.ms", "100"),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("client.id", "port-agent"),
            ("group.id", "g"),
            ("fetch.max.bytes", "4194304"),
            ("max.partition.fetch.bytes", "1048576"),
        ] {
            assert_eq!(c.get(key), Some(value), "{key}");
        }
    }
}
