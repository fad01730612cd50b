//! The polling source (SPEC §2.2, `STREAMER_NAME=POLLING`): runs claimed
//! from Port's API instead of read from Kafka, then fed to the same
//! runner ([`super::run`]) and pipeline.
//!
//! Each iteration claims pending action runs, then workflow node runs, never
//! more in all than the runner has free slots, and queues them. A run is
//! acked (its own call) only when it is about to start, so a run is never
//! acked and then left waiting; one whose ack fails or is not confirmed is
//! dropped, since Port did not hand it to us. When a claim came back full,
//! the next iteration starts at once; otherwise after
//! `POLLING_INTERVAL_SECONDS`. Claim failures back off exponentially with
//! jitter, and after `POLLING_MAX_FAILURE_DURATION_SECONDS` of nothing but
//! failures the source ends, and its close returns [`PollingError`].
//!
//! Nothing acked is lost: an ack runs as a task of its own, so a shutdown
//! that interrupts the runner hands its run over through
//! [`Source::undispatched`] for the drain; and a run still in flight when
//! the drain times out is reported as failed ([`FailureSummary::DrainTimeout`]) instead
//! of being left `IN_PROGRESS`; so is every acked run without a final
//! status when a second stop signal exits at once ([`InFlight`], through
//! [`crate::shutdown::LastWords`]). Claimed runs not yet acked are let go:
//! Port hands them out again.

mod claimed;
mod in_flight;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use crate::retry::Pauses;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

pub use claimed::{action_run_message, node_run_message, ClaimedRun};
pub use in_flight::InFlight;
use in_flight::{ack_into, failure_call};

use super::{Ack, Source};
use crate::delivery::Delivery;
use crate::delivery::Trust;
use crate::outcome::{Disposition, Outcome, Skip};
use crate::port::{PortClient, Reporter};
use crate::report::FailureSummary;
use crate::settings::{PollingSettings, Settings};
use crate::telemetry::metrics;
use crate::telemetry::server::Health;

/// How long the failure reports of the close may take at most.
const CLOSE_REPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the failure reports of a second signal may take at most (the
/// process exits at [`crate::shutdown::LAST_WORDS_TIMEOUT`] anyway).
pub const SIGNAL_REPORT_TIMEOUT: Duration = Duration::from_secs(4);

/// What the polling source takes: its settings and what it tells the
/// pipeline about the runs it claims (the runner's limits are the
/// runner's: `source::run`).
#[derive(Debug, Clone)]
pub struct PollingOptions {
    /// `POLLING_*`.
    pub settings: PollingSettings,
    /// Topic name given to deliveries (the pipeline treats them as runs).
    pub runs_topic: String,
    /// The pipeline itself reports unmatched node runs as FAILED
    /// (`AGENT_WF_UNMATCHED_FAIL`), so the ack need not.
    pub wf_unmatched_fail: bool,
}

impl PollingOptions {
    /// From settings.
    pub fn from_settings(s: &Settings) -> PollingOptions {
        let mut settings = s.polling.clone();
        settings.interval = test_interval().unwrap_or(settings.interval);
        PollingOptions {
            settings,
            runs_topic: s.kafka.runs_topic.clone(),
            wf_unmatched_fail: s.report.wf_unmatched_fail,
        }
    }

    /// The pauses between failed claims: `initial × factor^(failures-1)`,
    /// capped, then ± jitter ([`Pauses`]).
    pub fn backoff(&self) -> Pauses {
        let s = &self.settings;
        Pauses {
            initial: s.initial_backoff,
            factor: s.backoff_factor,
            max: s.max_backoff,
            jitter: (1.0 - s.backoff_jitter, 1.0 + s.backoff_jitter),
        }
    }
}

/// Test builds only (`--features fault-injection`, which release builds and
/// the image never enable): `PORT_AGENT_TEST_POLLING_INTERVAL_MS` paces the
/// claims faster than the 1 s that `POLLING_INTERVAL_SECONDS` allows, so
/// that the polling tests do not wait a second per iteration.
fn test_interval() -> Option<Duration> {
    #[cfg(feature = "fault-injection")]
    if let Some(ms) = std::env::var("PORT_AGENT_TEST_POLLING_INTERVAL_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return Some(Duration::from_millis(ms));
    }
    None
}

/// Claims kept failing for longer than allowed.
#[derive(Debug, thiserror::Error)]
#[error("Port's polling API failed for {seconds:.0} s without a success (POLLING_MAX_FAILURE_DURATION_SECONDS); last error: {last}")]
pub struct PollingError {
    /// How long it failed.
    pub seconds: f64,
    /// The last claim error.
    pub last: String,
}

/// What one iteration brought.
struct Iteration {
    /// Claimed runs for the agent, not acked yet.
    claimed: Vec<ClaimedRun>,
    /// A claim came back with as many runs as asked for.
    full: bool,
    /// The first claim error, if a claim failed.
    error: Option<String>,
}

/// Claim action runs, then node runs, `room` at most in all (and at most
/// `batch` of each kind).
async fn iterate(port: PortClient, batch: u32, room: usize) -> Iteration {
    let mut it = Iteration {
        claimed: Vec::new(),
        full: false,
        error: None,
    };
    for node_runs in [false, true] {
        let left = room.saturating_sub(it.claimed.len());
        let limit = u32::try_from(left).unwrap_or(u32::MAX).min(batch);
        if limit == 0 {
            // No slot left for this kind: come back at once.
            it.full = true;
            continue;
        }
        let answer = if node_runs {
            port.claim_node_runs(limit).await
        } else {
            port.claim_runs(limit).await
        };
        metrics::claim(answer.is_ok());
        match answer {
            Ok(list) => {
                it.full |= list.len() >= limit as usize;
                it.claimed.extend(claimed::runs_to_process(list, node_runs));
            }
            Err(e) => {
                it.error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    it
}

/// The polling source.
pub struct PollingSource {
    port: PortClient,
    opts: PollingOptions,
    health: Arc<Health>,
    /// Claimed, not acked yet.
    queue: VecDeque<ClaimedRun>,
    iteration: Option<JoinHandle<Iteration>>,
    /// An ack in progress (a task, so that a shutdown cannot lose its run).
    acking: Option<JoinHandle<Option<(i64, ClaimedRun)>>>,
    running: InFlight,
    next_poll: Instant,
    failures: u32,
    failing_since: Option<Instant>,
    /// Why the source gave up (returned by its close).
    fatal: Option<PollingError>,
    sequence: i64,
}

/// A polling delivery's ack: reports FAILURE when the pipeline could not
/// process the run (it was claimed and acked, so nobody else will).
pub struct PollingAck {
    run: ClaimedRun,
    port: PortClient,
    wf_unmatched_fail: bool,
    running: InFlight,
    sequence: i64,
}

impl PollingSource {
    /// A source claiming through `port`; not ready until its first claim.
    pub fn new(port: PortClient, opts: PollingOptions, health: Arc<Health>) -> PollingSource {
        health.set_not_ready("waiting for the first claim from Port");
        debug!(batch = opts.settings.batch_size, "polling Port for runs");
        PollingSource {
            running: InFlight::new(port.clone()),
            port,
            opts,
            health,
            queue: VecDeque::new(),
            iteration: None,
            acking: None,
            next_poll: Instant::now(),
            failures: 0,
            failing_since: None,
            fatal: None,
            sequence: 0,
        }
    }

    /// The runs acked and in flight (for a second signal to fail them).
    pub fn in_flight(&self) -> InFlight {
        self.running.clone()
    }

    /// Delivery `sequence` of acked `run` (already in flight).
    fn delivery(&self, sequence: i64, run: ClaimedRun) -> (Delivery, PollingAck) {
        let delivery = Delivery {
            topic: self.opts.runs_topic.clone(),
            partition: -1,
            offset: sequence,
            key: None,
            payload: run.message.to_string().into_bytes(),
            trust: Trust::Claimed,
        };
        let ack = PollingAck {
            run,
            port: self.port.clone(),
            wf_unmatched_fail: self.opts.wf_unmatched_fail,
            running: self.running.clone(),
            sequence,
        };
        (delivery, ack)
    }

    /// Take an iteration's result: queue its runs, schedule the next one.
    /// `false` when the failures went on for too long.
    fn absorb(&mut self, it: Iteration) -> bool {
        let now = Instant::now();
        self.queue.extend(it.claimed);
        match it.error {
            None => {
                if self.failures > 0 {
                    info!(failures = self.failures, "claims succeed again");
                }
                self.failures = 0;
                self.failing_since = None;
                self.health.set_ready();
                self.next_poll = if it.full {
                    now
                } else {
                    now + self.opts.settings.interval
                };
            }
            Some(e) => {
                self.failures += 1;
                let since = *self.failing_since.get_or_insert(now);
                let failing_for = now - since;
                if failing_for >= self.opts.settings.max_failure {
                    let err = PollingError {
                        seconds: failing_for.as_secs_f64(),
                        last: e,
                    };
                    error!(error = %err, "giving up");
                    self.fatal = Some(err);
                    return false;
                }
                let pause = self.opts.backoff().random(self.failures);
                warn!(error = %e, failures = self.failures, retry_in_ms = pause.as_millis() as u64,
                      "claiming runs failed; backing off");
                self.health
                    .set_not_ready(format!("claiming runs from Port fails: {e}"));
                // Never sleep past the moment of giving up.
                let give_up_at = since + self.opts.settings.max_failure;
                self.next_poll = (now + pause).min(give_up_at);
            }
        }
        true
    }
}

impl Source for PollingSource {
    type Ack = PollingAck;
    type Error = PollingError;

    async fn next(&mut self, room: usize) -> Option<(Delivery, PollingAck)> {
        // `room` is the free slots now; each run of ours that finishes
        // while this waits (the pause between claims) frees one more.
        let running_now = self.running.len();
        loop {
            // Cancel-safe: the handle stays in `self` if this is dropped.
            if let Some(handle) = self.acking.as_mut() {
                let acked = handle.await;
                self.acking = None;
                match acked {
                    Ok(Some((seq, run))) if run.unreadable.is_some() => self.fail_unreadable(seq, run),
                    Ok(Some((seq, run))) => return Some(self.delivery(seq, run)),
                    _ => {}
                }
                continue;
            }
            if let Some(run) = self.queue.pop_front() {
                // Acked only now that a slot is free for it.
                self.sequence += 1;
                let ack = ack_into(self.port.clone(), run, self.running.clone(), self.sequence);
                self.acking = Some(tokio::spawn(ack));
                continue;
            }
            if self.iteration.is_none() {
                let wait = self.next_poll.saturating_duration_since(Instant::now());
                if !wait.is_zero() {
                    debug!(wait_ms = wait.as_millis() as u64, "waiting for the next claim");
                }
                tokio::time::sleep_until(self.next_poll).await;
                let room = room + running_now.saturating_sub(self.running.len());
                let (port, batch) = (self.port.clone(), self.opts.settings.batch_size);
                self.iteration = Some(tokio::spawn(iterate(port, batch, room)));
            }
            // Cancel-safe: the handle stays in `self` if this is dropped.
            let Some(handle) = self.iteration.as_mut() else {
                continue;
            };
            let result = handle.await;
            self.iteration = None;
            match result {
                Ok(it) => {
                    if !self.absorb(it) {
                        return None;
                    }
                }
                Err(e) => {
                    // The iteration task panicked: count it as a failure.
                    let it = Iteration {
                        claimed: Vec::new(),
                        full: false,
                        error: Some(format!("claim task failed: {e}")),
                    };
                    if !self.absorb(it) {
                        return None;
                    }
                }
            }
        }
    }

    async fn undispatched(&mut self) -> Vec<(Delivery, PollingAck)> {
        // An ack interrupted by shutdown may have succeeded: that run is
        // ours now, so it is processed in the drain. Runs claimed but not
        // acked are let go (Port hands them out again).
        if let Some(iteration) = self.iteration.take() {
            iteration.abort();
        }
        let mut handed_over = Vec::new();
        if let Some(handle) = self.acking.take() {
            match handle.await {
                Ok(Some((seq, run))) if run.unreadable.is_some() => self.fail_unreadable(seq, run),
                Ok(Some((seq, run))) => {
                    info!(run_id = %run.id, "processing an acked run before stopping");
                    handed_over.push(self.delivery(seq, run));
                }
                _ => {}
            }
        }
        if !self.queue.is_empty() {
            info!(
                runs = self.queue.len(),
                "claimed runs not acked are left for Port to hand out again"
            );
        }
        handed_over
    }

    async fn close(self) -> Result<(), PollingError> {
        self.report_stopped().await;
        match self.fatal {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl PollingSource {
    /// An acked run that cannot be read is reported FAILURE at once (in a
    /// task of its own; the client's retries bound it); it is in flight
    /// until that report is done.
    fn fail_unreadable(&self, sequence: i64, run: ClaimedRun) {
        let why = run.unreadable.clone().unwrap_or_default();
        let call = failure_call(&run, &FailureSummary::Unreadable(why.to_string()).to_string());
        let (port, running) = (self.port.clone(), self.running.clone());
        tokio::spawn(async move {
            if let Err(e) = port.send(&call).await {
                error!(run_id = %run.id, error = %e, "could not report the unreadable run to Port");
            }
            running.finished(sequence);
        });
    }

    /// Report what was still running after the drain as failed.
    async fn report_stopped(&self) {
        // Whatever was still running outlived the drain and was stopped by
        // the runner (it can report nothing more): report it failed, so
        // that no acked run stays IN_PROGRESS in Port.
        if !self.running.is_empty() {
            warn!(
                runs = self.running.len(),
                "runs still in flight after the drain timeout are reported as failed"
            );
        }
        self.running
            .fail_all(&FailureSummary::DrainTimeout.to_string(), CLOSE_REPORT_TIMEOUT)
            .await;
    }
}

/// A claimed, acked run was not processed (no mapping, or not a run the
/// pipeline understood) and nothing reported it: it is ours to fail.
fn unreported_failure(outcome: &Outcome, node_run: bool, wf_unmatched_fail: bool) -> bool {
    match &outcome.result {
        Disposition::Skipped(Skip::NoMapping) => !(node_run && wf_unmatched_fail),
        Disposition::Skipped(_) => true,
        Disposition::Delivered(_) | Disposition::RequestFailed(_) | Disposition::InternalError(_) => false,
    }
}

impl Ack for PollingAck {
    async fn done(self, _delivery: &Delivery, outcome: &Outcome) {
        // In flight until its final status is sent (a second signal fails
        // it meanwhile; Port keeps the first final status).
        if unreported_failure(outcome, self.run.node_run, self.wf_unmatched_fail) {
            let call = failure_call(&self.run, &FailureSummary::NotProcessed.to_string());
            warn!(run_id = %self.run.id, outcome = outcome.name(), "the run could not be processed; reporting failure");
            if let Err(e) = self.port.send(&call).await {
                error!(run_id = %self.run.id, error = %e, "could not report the failure to Port");
            }
        }
        self.running.finished(self.sequence);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> PollingOptions {
        PollingOptions {
            settings: PollingSettings::default(),
            runs_topic: "org_1.runs".into(),
            wf_unmatched_fail: true,
        }
    }

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let o = opts();
        // A draw of -1..=1 of the ± jitter is 0..=1 of its range.
        let secs = |n, d: f64| o.backoff().nth(n, (d + 1.0) / 2.0).as_secs_f64();
        assert_eq!(secs(1, 0.0), 1.0);
        assert_eq!(secs(2, 0.0), 2.0);
        assert_eq!(secs(5, 0.0), 16.0);
        assert_eq!(secs(20, 0.0), 300.0, "capped");
        assert!((secs(3, 1.0) - 4.4).abs() < 1e-9, "+10 %");
        assert!((secs(3, -1.0) - 3.6).abs() < 1e-9, "-10 %");
        assert!((secs(3, 5.0) - 4.4).abs() < 1e-9, "draws are clamped");
    }
}
