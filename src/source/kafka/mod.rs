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

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaResult;
use rdkafka::message::{Headers, OwnedMessage};
use rdkafka::Message;
use tracing::{debug, error, info, warn};

pub use commit::COMMIT_TICK;
use commit::{commit_loop, commit_now, Committer, Which};
pub use config::{resolve_options, KafkaOptions, ResolveError};
pub use context::Status;
use context::{lock, Consumer_, EngineContext, WAITING_FOR_ASSIGNMENT};
use dlq::Dlq;

use guard::{given_up_summary, Guard, Meta, Verdict};

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
    status: Arc<Status>,
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
    /// partitions); `status` is what the source counts (tests read it).
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
            limit: opts.crash_loop_limit,
            window: u32::try_from(opts.max_in_flight).unwrap_or(u32::MAX),
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
        let topics: Vec<&str> = opts.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        info!(topics = %opts.topics.join(","), group = %opts.group_id, "subscribed");
        let dlq = Dlq::connect(opts, status.clone())?.map(Arc::new);
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
            status,
            dlq,
            committer,
            consecutive_errors: 0,
            window: opts.max_in_flight,
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
                    self.status.received.fetch_add(1, Ordering::Relaxed);
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
                None => {
                    let m = self.consumer.recv().await.map(|m| m.detach());
                    if m.is_ok() {
                        self.status.received.fetch_add(1, Ordering::Relaxed);
                    }
                    m
                }
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
    async fn check_partition(&mut self, topic: &str, partition: i32, first: i64) {
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
    async fn start_suspect(
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
    async fn finish_probes(&mut self) {
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
