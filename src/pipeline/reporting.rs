//! Sending a run's Port calls: two chains side by side (the run logs, and
//! the response then the status), each in order, and never given up on
//! while Port is unreachable (the message's offset waits for both).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::Rng;
use tokio::sync::oneshot;
use tracing::{info, warn};

use crate::message::Kind;
use crate::port::{PendingReport, PortCall, ReportBacklog, Reporter};
use crate::redact::Redactor;
use crate::report::{Chains, RunLogs, RunReports};
use crate::telemetry::metrics;

/// First pause before a Port call that failed after its retries is sent
/// again; it doubles up to [`PENDING_RETRY_MAX`].
const PENDING_RETRY_FIRST: Duration = Duration::from_secs(1);
/// Longest pause between two tries of a pending Port call.
const PENDING_RETRY_MAX: Duration = Duration::from_secs(10);

/// The pause after `pause` before a pending Port call is sent again:
/// doubled, capped at [`PENDING_RETRY_MAX`].
fn next_pending_retry_pause(pause: Duration) -> Duration {
    (pause * 2).min(PENDING_RETRY_MAX)
}

/// How long to sleep for `pause` with the jitter factor drawn from 0.5..=1.0.
fn pending_retry_sleep(pause: Duration, jitter: f64) -> Duration {
    pause.mul_f64(jitter.clamp(0.5, 1.0))
}

/// The run's calls waiting for Port: the run counts once in the
/// [`ReportBacklog`] while any of them waits.
#[derive(Default)]
struct Pending {
    calls: usize,
    report: Option<PendingReport>,
}

/// A run's reporting target. Calls of one chain keep their order because
/// they are awaited one after another; [`RunReporter::send_chains`] runs a
/// run's two chains side by side.
pub(super) struct RunReporter<'a, R> {
    reporter: &'a R,
    kind: &'a Kind,
    /// Which log lines are posted (`AGENT_RUN_LOGS`).
    logs: RunLogs,
    /// Calls Port refused for good.
    errors: Mutex<Vec<String>>,
    backlog: &'a Arc<ReportBacklog>,
    pending: Mutex<Pending>,
    /// Send the two chains as one, in SPEC §7's order
    /// ([`Chains::in_order`]): for recording reporters (dry-run, render),
    /// which show the calls in that order.
    in_order: bool,
    /// Applied to every call before it is made: nothing goes to Port with
    /// a known secret in it.
    redactor: Redactor,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<'a, R: Reporter> RunReporter<'a, R> {
    pub(super) fn new(
        reporter: &'a R,
        kind: &'a Kind,
        logs: RunLogs,
        backlog: &'a Arc<ReportBacklog>,
    ) -> Self {
        RunReporter {
            reporter,
            kind,
            logs,
            errors: Mutex::default(),
            backlog,
            pending: Mutex::default(),
            in_order: false,
            redactor: Redactor::default(),
        }
    }

    /// Hide the secrets `redactor` knows in every call made from now on.
    pub(super) fn redact_with(&mut self, redactor: Redactor) {
        self.redactor = redactor;
    }

    /// Send the chains as one list in SPEC §7's order (see `in_order`).
    pub(super) fn in_order(mut self, in_order: bool) -> Self {
        self.in_order = in_order;
        self
    }

    /// Whether the chains go as one list.
    pub(super) fn sends_in_order(&self) -> bool {
        self.in_order
    }

    /// What to report about this run.
    pub(super) fn reports(&self) -> RunReports<'a> {
        RunReports {
            kind: self.kind,
            logs: self.logs,
        }
    }

    /// The calls Port refused for good.
    pub(super) fn into_errors(self) -> Vec<String> {
        self.errors.into_inner().unwrap_or_else(|p| p.into_inner())
    }

    /// Make `calls`, one after another.
    pub(super) async fn send(&self, calls: Vec<PortCall>) {
        for call in calls {
            self.call(call).await;
        }
    }

    /// Send the run's two chains side by side; done when both are.
    pub(super) async fn send_chains(&self, chains: Chains) {
        if self.in_order {
            self.send(chains.in_order()).await;
        } else {
            tokio::join!(self.send(chains.logs), self.send(chains.result));
        }
    }

    /// The log chain of a run whose closing lines are known later: `first`,
    /// then what `rest` brings (nothing when it is dropped).
    pub(super) async fn send_logs(&self, first: Vec<PortCall>, rest: oneshot::Receiver<Vec<PortCall>>) {
        self.send(first).await;
        if let Ok(rest) = rest.await {
            self.send(rest).await;
        }
    }

    /// Make one Port call, never giving up on a transient failure: when the
    /// client's own retries are spent, the call (and so the rest of its
    /// chain, and the message's offset) waits and is sent again with capped
    /// backoff until Port accepts it. Only a refusal for good (a 4xx other
    /// than 401/408/429) ends it.
    async fn call(&self, call: PortCall) {
        let call = call.redacted(&self.redactor);
        let mut pending = false;
        let mut pause = PENDING_RETRY_FIRST;
        loop {
            match self.reporter.send(&call).await {
                Ok(()) => {
                    if pending {
                        info!(call = %call.kind(), "Port accepted the pending call");
                        self.leave_pending();
                    }
                    return;
                }
                Err(e) if e.permanent => {
                    warn!(run_id = self.kind.run_id().unwrap_or(""), error = %e,
                          "Port refused the call; it is not sent again");
                    metrics::report_rejected(call.kind());
                    lock(&self.errors).push(e.to_string());
                    if pending {
                        self.leave_pending();
                    }
                    return;
                }
                Err(e) => {
                    if !pending {
                        warn!(error = %e, "Port API unreachable after retries: the call stays pending and is sent again until Port accepts it");
                        pending = true;
                        self.enter_pending();
                    }
                    let jittered = pending_retry_sleep(pause, rand::rng().random_range(0.5..=1.0));
                    tokio::time::sleep(jittered).await;
                    pause = next_pending_retry_pause(pause);
                }
            }
        }
    }

    fn enter_pending(&self) {
        let mut p = lock(&self.pending);
        p.calls += 1;
        if p.report.is_none() {
            p.report = Some(self.backlog.enter());
        }
    }

    fn leave_pending(&self) {
        let mut p = lock(&self.pending);
        p.calls = p.calls.saturating_sub(1);
        if p.calls == 0 {
            p.report = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pending_call_is_sent_again_after_1_s_doubling_to_10_s_jittered_50_to_100_percent() {
        let mut pause = PENDING_RETRY_FIRST;
        let mut pauses = Vec::new();
        for _ in 0..7 {
            pauses.push(pause.as_secs());
            pause = next_pending_retry_pause(pause);
        }
        assert_eq!(pauses, [1, 2, 4, 8, 10, 10, 10]);
        let ten = Duration::from_secs(10);
        assert_eq!(pending_retry_sleep(ten, 0.5), Duration::from_secs(5));
        assert_eq!(pending_retry_sleep(ten, 1.0), ten);
        // The factor is drawn from 0.5..=1.0; the sleep stays within it.
        for jitter in [0.0, 0.3, 0.5, 0.75, 1.0, 1.7] {
            let s = pending_retry_sleep(ten, jitter);
            assert!(s >= Duration::from_secs(5) && s <= ten, "{jitter}: {s:?}");
        }
    }
}
