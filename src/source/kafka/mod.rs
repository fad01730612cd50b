//! The Kafka source (SPEC §2.1, §8): at-least-once, concurrent, bounded.
//!
//! * **Offsets.** Auto-commit is off; we commit each partition's contiguous
//!   watermark ([`super::offsets::Watermarks`]) ourselves: every
//!   [`COMMIT_TICK`] when it moved, at once when half the uncommitted window
//!   is committable or the window is full, on revoke (the final watermark)
//!   and at shutdown. The window counts every message not yet confirmed
//!   committed *by the broker*, and fetching waits while it is full, so a
//!   crash redelivers at most `AGENT_MAX_IN_FLIGHT` messages. Every commit
//!   waits for the broker's answer (with a deadline, [`native`]), made off
//!   the async workers, and under the *commit gate*, which revocation holds too: a partition is never
//!   committed after it was revoked, and a late completion for it is dropped.
//!   The gate is not the tracker's lock, so completions never wait for a
//!   commit's round trip.
//! * **Concurrency** is the runner's ([`super::run`]): the in-flight bound is taken
//!   before asking for the next message, and librdkafka's prefetch queue is
//!   capped here, so memory stays bounded whatever the lag.
//! * **Blocked for long** (Port down and every slot holding a run whose
//!   report waits): after [`PAUSE_AFTER`] the assigned partitions are paused
//!   and the consumer is still polled, so the group never evicts us for
//!   exceeding `max.poll.interval.ms`; they resume with the next fetch.
//! * **Crash loops.** A message that keeps killing the process is found
//!   and given up after `AGENT_CRASH_LOOP_LIMIT` deaths ([`guard`]).
//! * **Shutdown.** When fetching stops, commit what is done; after the drain,
//!   commit again and close (leaving the group). Every commit waits at most
//!   [`KafkaOptions::commit_timeout`] for the broker, and the close runs on
//!   a thread of its own, waited for with the same bound: brokers that are
//!   unreachable at shutdown cannot hold the process.

mod commit;
mod config;
mod context;
mod dlq;
mod guard;
mod native;
mod suspects;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaResult;
use rdkafka::message::{Headers, OwnedMessage};
use rdkafka::Message;
use tracing::{debug, info, warn};

pub use commit::COMMIT_TICK;
use commit::{commit_loop, commit_now, Committer, Which};
pub use config::{resolve_options, Connection, KafkaOptions, ResolveError};
pub use context::Status;
use context::{lock, Consumer_, EngineContext, WAITING_FOR_ASSIGNMENT};
use dlq::Dlq;

use guard::Guard;

use super::offsets::{Mode, Ticket, Watermarks};
use crate::retry::Pauses;

/// The pauses after consume errors in a row: 100 ms doubling to 5 s, ± 20 %.
const CONSUME_ERROR_PAUSES: Pauses = Pauses {
    initial: Duration::from_millis(100),
    factor: 2.0,
    max: Duration::from_secs(5),
    jitter: (0.8, 1.2),
};
use super::{Ack, Source};
use crate::delivery::Delivery;
use crate::delivery::Trust;
use crate::outcome::Outcome;
use crate::shutdown::Shutdown;
use crate::telemetry::metrics;
use crate::telemetry::server::Health;

/// Blocked (window full, no slot free) for this long: pause the partitions
/// and keep polling the consumer, so the group does not evict us.
pub const PAUSE_AFTER: Duration = Duration::from_secs(1);

/// Kafka as a [`Source`]: one consumer on both topics, the offset tracker,
/// the periodic committer, and the optional DLQ producer.
pub struct KafkaSource {
    consumer: Arc<Consumer_>,
    commits: Arc<Committer>,
    marks: Arc<Mutex<Watermarks>>,
    dlq: Option<Arc<Dlq>>,
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
    /// Messages received but not handed out yet: a fetch that raced the
    /// pause, or one waiting for its partition's crash-loop check or for
    /// its turn to run alone.
    stash: std::collections::VecDeque<OwnedMessage>,
    guard: Guard,
    /// Told when the consumer's close is over (see [`Consumer_`]).
    closed: tokio::sync::oneshot::Receiver<()>,
    /// Whether the broker keeps commit metadata was checked (once).
    metadata_checked: bool,
}

/// What a Kafka delivery needs back: its ticket, and what the DLQ needs.
pub struct KafkaAck {
    ticket: Ticket,
    headers: Vec<(String, Vec<u8>)>,
    marks: Arc<Mutex<Watermarks>>,
    dlq: Option<Arc<Dlq>>,
    progress: Arc<tokio::sync::Notify>,
    /// Not to be processed: the summary its run is failed with (a message
    /// found in flight at too many deaths).
    given_up: Option<String>,
}

/// Run `f` on a thread of its own (never waited for by the runtime's
/// shutdown); its result when it is done.
fn on_thread<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> tokio::sync::oneshot::Receiver<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let run = move || {
        let _ = tx.send(f());
    };
    if let Err(e) = std::thread::Builder::new().name(name.to_string()).spawn(run) {
        warn!(error = %e, thread = name, "could not start a thread");
    }
    rx
}

impl KafkaSource {
    /// Create the consumer, subscribe, start the committer. Readiness is
    /// reported through `health` (not ready until the group assigns
    /// partitions); `status` is the source's place in the group (how many
    /// partitions it holds, whether it joined), shared with its callbacks.
    pub fn connect(
        opts: &KafkaOptions,
        status: Arc<Status>,
        health: Arc<Health>,
        shutdown: Shutdown,
    ) -> KafkaResult<KafkaSource> {
        health.set_not_ready(WAITING_FOR_ASSIGNMENT);
        let marks = Arc::new(Mutex::new(Watermarks::new()));
        let gate = Arc::new(Mutex::new(()));
        let paused: Arc<AtomicBool> = Arc::default();
        let guard = Guard {
            limit: opts.settings.crash_loop_limit,
            window: u32::try_from(opts.limits.max_in_flight).unwrap_or(u32::MAX),
        };
        let context = EngineContext {
            marks: marks.clone(),
            gate: gate.clone(),
            status: status.clone(),
            health: health.clone(),
            said_standby: AtomicBool::new(false),
            paused: paused.clone(),
            commit_timeout: opts.commit_timeout(),
            guard,
        };
        let (told_closed, closed) = tokio::sync::oneshot::channel();
        let consumer: Arc<Consumer_> = Arc::new(Consumer_::new(
            opts.consumer_config().create_with_context(context)?,
            told_closed,
        ));
        metrics::partitions_assigned(0);
        let topics = opts.topics();
        consumer.subscribe(&topics)?;
        info!(topics = %topics.join(","), group = %opts.settings.group_id, "subscribed");
        let dlq = Dlq::connect(opts)?.map(Arc::new);
        let progress: Arc<tokio::sync::Notify> = Arc::default();
        let commits = Arc::new(Committer {
            consumer: consumer.clone(),
            marks: marks.clone(),
            gate,
            progress: progress.clone(),
            timeout: opts.commit_timeout(),
            guard,
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
            dlq,
            committer,
            consecutive_errors: 0,
            window: opts.limits.max_in_flight,
            progress,
            urgent,
            paused,
            stash: Default::default(),
            guard,
            closed,
            metadata_checked: false,
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

    /// Wait while the uncommitted window is full: a message counts until
    /// the broker confirmed a commit past it. Asks the committer to commit
    /// at once when that would make room.
    async fn wait_for_window(&mut self) {
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
                return;
            }
            let progress = self.progress.clone();
            tokio::select! {
                _ = progress.notified() => {}
                _ = tokio::time::sleep(COMMIT_TICK) => {}
                _ = self.serve_blocked(blocked_since) => {}
            }
        }
    }

    /// The next message: a stashed one first, else from the consumer;
    /// consume errors are logged (not all of them) and retried with a
    /// growing pause.
    async fn receive(&mut self) -> OwnedMessage {
        loop {
            let next = match self.stash.pop_front() {
                Some(m) => Ok(m),
                None => self.consumer.recv().await.map(|m| m.detach()),
            };
            match next {
                Ok(m) => {
                    self.consecutive_errors = 0;
                    return m;
                }
                Err(e) => {
                    self.consecutive_errors += 1;
                    if self.consecutive_errors == 1 || self.consecutive_errors % 20 == 0 {
                        warn!(error = %e, "Kafka consume error; retrying");
                    }
                    tokio::time::sleep(CONSUME_ERROR_PAUSES.random(self.consecutive_errors)).await;
                }
            }
        }
    }

    /// Start tracking `msg` and hand it out with its ack; `None` when its
    /// partition is no longer assigned here (it will be redelivered).
    fn deliver(&mut self, msg: &OwnedMessage, given_up: Option<String>) -> Option<(Delivery, KafkaAck)> {
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
            return None;
        };
        let delivery = Delivery {
            topic: msg.topic().to_string(),
            partition: msg.partition(),
            offset: msg.offset(),
            key: msg.key().filter(|k| !k.is_empty()).map(<[u8]>::to_vec),
            payload: msg.payload().map(<[u8]>::to_vec).unwrap_or_default(),
            trust: Trust::Signed,
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
            dlq: self.dlq.clone(),
            progress: self.progress.clone(),
            given_up,
        };
        Some((delivery, ack))
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
    /// The Kafka source ends only at shutdown.
    type Error = std::convert::Infallible;

    async fn next(&mut self, _room: usize) -> Option<(Delivery, KafkaAck)> {
        // Cancel-safe: a message waiting for a check or for its turn stays
        // at the front of the stash until the moment it is handed out.
        loop {
            self.wait_for_window().await;
            self.finish_probes().await;
            if self.paused.load(Ordering::SeqCst) {
                self.resume();
            }
            let msg = self.receive().await;
            let mode = lock(&self.marks).mode(msg.topic(), msg.partition());
            match mode {
                Some(Mode::Normal) | None => {
                    // `deliver` drops a message of a partition no longer here.
                    if let Some(started) = self.deliver(&msg, None) {
                        return Some(started);
                    }
                }
                Some(Mode::Unchecked) => {
                    let (topic, partition, offset) = (msg.topic().to_string(), msg.partition(), msg.offset());
                    self.stash.push_front(msg);
                    self.check_partition(&topic, partition, offset).await;
                }
                Some(Mode::Suspect { remaining, pending }) => {
                    self.stash.push_front(msg);
                    if let Some(started) = self.start_suspect(remaining, pending).await {
                        return Some(started);
                    }
                }
                // Its partition's suspect runs: wait for it (loop top).
                Some(Mode::Probe { .. }) => self.stash.push_front(msg),
            }
        }
    }

    async fn idle(&mut self) {
        self.serve_blocked(tokio::time::Instant::now()).await
    }

    fn stopping(&mut self) {
        // Commit what is done right away: if the process dies during the
        // drain, only the in-flight messages come again. On a thread of its
        // own, bounded by the commit timeout; the drain does not wait for it.
        self.committer.abort();
        let commits = self.commits.clone();
        drop(on_thread("kafka-commit", move || {
            commits.commit(Which::All, "before draining")
        }));
    }

    async fn close(self) -> Result<(), Self::Error> {
        let KafkaSource {
            consumer,
            commits,
            committer,
            closed,
            ..
        } = self;
        committer.abort();
        let wait = commits.timeout;
        // The final commit waits at most the commit timeout for the broker
        // (after the commit before the drain, if that one still runs); it
        // is not waited for longer than that here.
        let final_commit = {
            let commits = commits.clone();
            on_thread("kafka-commit", move || commits.commit(Which::Final, "final"))
        };
        if tokio::time::timeout(wait, final_commit).await.is_err() {
            warn!(waited = ?wait, "the final commit got no answer in time; closing the consumer anyway");
        }
        // The last handle closes the consumer, on a thread of its own:
        // revoke (its commit also bounded), leave the group.
        drop(commits);
        drop(consumer);
        match tokio::time::timeout(wait, closed).await {
            Ok(_) => info!("left the consumer group"),
            Err(_) => warn!(
                waited = ?wait,
                "the Kafka consumer did not close in time (brokers unreachable?); not waiting for it any longer"
            ),
        }
        Ok(())
    }
}

impl Ack for KafkaAck {
    fn given_up(&self) -> Option<&str> {
        self.given_up.as_deref()
    }

    async fn done(self, delivery: &Delivery, outcome: &Outcome) {
        if let (Some(dlq), true) = (&self.dlq, outcome.needs_dead_letter()) {
            dlq.send(delivery, &self.headers, outcome).await;
        }
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
