//! Sending a run's Port calls: two chains side by side (the run logs, and
//! the response then the status), each in order, and never given up on
//! while Port is unreachable (the message's offset waits for both). A log
//! line about a result call (Port took the response, or refused it or the
//! status) waits on the log chain for that call's outcome; the result
//! chain never waits for a log line.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;
use tracing::{info, warn};

use crate::message::Kind;
use crate::port::{BacklogEntry, PortBacklog, PortCall, PortError, Reporter};
use crate::redact::Redactor;
use crate::report::{Chains, Refused, ReportPlan};
use crate::retry::Pauses;
use crate::settings::RunLogs;
use crate::telemetry::metrics;

/// The pauses before a Port call that failed after its retries is sent
/// again: 1 s doubling to 10 s, each 50–100 % of that.
const PENDING_RETRY: Pauses = Pauses {
    initial: Duration::from_secs(1),
    factor: 2.0,
    max: Duration::from_secs(10),
    jitter: (0.5, 1.0),
};

/// The run's calls waiting for Port: the run counts once in the
/// [`PortBacklog`] while any of them waits.
#[derive(Default)]
struct Pending {
    calls: usize,
    report: Option<BacklogEntry>,
}

/// How a result call ended: accepted, or refused for good.
type Answer = Result<(), PortError>;

/// The log chain after its first lines: `logs`, then for each result call
/// the lines its outcome brings (once it arrives), then `closing`.
struct LogTail {
    logs: Vec<PortCall>,
    after: Vec<(Vec<PortCall>, Option<Refused>, oneshot::Receiver<Answer>)>,
    closing: Vec<PortCall>,
}

/// A run's reporting target. Calls of one chain keep their order because
/// they are awaited one after another; [`RunSender::send_chains`] runs a
/// run's two chains side by side.
pub(super) struct RunSender<'a, R> {
    reporter: &'a R,
    kind: &'a Kind,
    /// Which log lines are posted (`AGENT_RUN_LOGS`).
    logs: RunLogs,
    /// `DETAILED_LOGGING`.
    detailed: bool,
    /// Calls Port refused for good.
    errors: Mutex<Vec<PortError>>,
    backlog: &'a Arc<PortBacklog>,
    pending: Mutex<Pending>,
    /// Send the two chains as one sequence, in the Python agent's order
    /// (as [`Chains::in_order`] lists them): for recording reporters
    /// (dry-run, render), which show the calls in that order.
    in_order: bool,
    /// Applied to every call before it is made: nothing goes to Port with
    /// a known secret in it.
    redactor: Redactor,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<'a, R: Reporter> RunSender<'a, R> {
    pub(super) fn new(reporter: &'a R, kind: &'a Kind, logs: RunLogs, backlog: &'a Arc<PortBacklog>) -> Self {
        RunSender {
            reporter,
            kind,
            logs,
            detailed: false,
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

    /// Quote Port's answer in the line about a refusal (`DETAILED_LOGGING`).
    pub(super) fn detailed(mut self, detailed: bool) -> Self {
        self.detailed = detailed;
        self
    }

    /// Send the chains as one sequence, in the Python agent's order (see `in_order`).
    pub(super) fn in_order(mut self, in_order: bool) -> Self {
        self.in_order = in_order;
        self
    }

    /// What to report about this run.
    pub(super) fn reports(&self) -> ReportPlan<'a> {
        ReportPlan {
            kind: self.kind,
            logs: self.logs,
            detailed: self.detailed,
        }
    }

    /// The calls Port refused for good.
    pub(super) fn into_errors(self) -> Vec<PortError> {
        self.errors.into_inner().unwrap_or_else(|p| p.into_inner())
    }

    /// Make `calls`, one after another.
    pub(super) async fn send(&self, calls: Vec<PortCall>) {
        for call in calls {
            // A refusal is counted and kept by `call`; the chain goes on.
            let _ = self.call(call).await;
        }
    }

    /// Send the run's two chains side by side; done when both are.
    pub(super) async fn send_chains(&self, chains: Chains) {
        self.send_after(Vec::new(), async { (chains, ()) }).await
    }

    /// Post `first` on the log chain while `answered` works out the run's
    /// chains (the request to the target travels meanwhile); then send
    /// them, the log chain going on after `first` and the result chain
    /// starting at once. In order (recording reporters): one sequence.
    pub(super) async fn send_after<T>(
        &self,
        first: Vec<PortCall>,
        answered: impl Future<Output = (Chains, T)>,
    ) -> T {
        if self.in_order {
            self.send(first).await;
            let (chains, value) = answered.await;
            self.send_in_order(chains).await;
            return value;
        }
        let (tail_to_logs, tail) = oneshot::channel::<LogTail>();
        let logs = async {
            self.send(first).await;
            if let Ok(tail) = tail.await {
                self.send_tail(tail).await;
            }
        };
        let result = async {
            let (chains, value) = answered.await;
            let mut calls = Vec::new();
            let mut after = Vec::new();
            for r in chains.result {
                let (answer, answered) = oneshot::channel();
                calls.push((r.call, answer));
                after.push((r.accepted, r.refused, answered));
            }
            let _ = tail_to_logs.send(LogTail {
                logs: chains.logs,
                after,
                closing: chains.closing,
            });
            for (call, answer) in calls {
                let _ = answer.send(self.call(call).await);
            }
            value
        };
        let ((), value) = tokio::join!(logs, result);
        value
    }

    /// The chains as one sequence: each result call followed by its lines.
    async fn send_in_order(&self, chains: Chains) {
        self.send(chains.logs).await;
        for r in chains.result {
            let answer = self.call(r.call).await;
            self.send(self.lines_after(r.accepted, r.refused, answer)).await;
        }
        self.send(chains.closing).await;
    }

    /// The log chain after its first lines; it waits for each result
    /// call's outcome before the lines that follow it.
    async fn send_tail(&self, tail: LogTail) {
        self.send(tail.logs).await;
        for (accepted, refused, answered) in tail.after {
            let Ok(answer) = answered.await else {
                return;
            };
            self.send(self.lines_after(accepted, refused, answer)).await;
        }
        self.send(tail.closing).await;
    }

    /// The lines a result call's `answer` brings: `accepted`, or the line
    /// that says Port refused it.
    fn lines_after(
        &self,
        accepted: Vec<PortCall>,
        refused: Option<Refused>,
        answer: Answer,
    ) -> Vec<PortCall> {
        match (answer, refused) {
            (Ok(()), _) => accepted,
            (Err(e), Some(which)) => self.reports().refused(which, &e),
            (Err(_), None) => Vec::new(),
        }
    }

    /// Make one Port call, never giving up on a transient failure: when the
    /// client's own retries are spent, the call (and so the rest of its
    /// chain, and the message's offset) waits and is sent again with capped
    /// backoff until Port accepts it. Only a refusal for good (a 4xx other
    /// than 401/408/429) ends it, and is returned.
    async fn call(&self, call: PortCall) -> Answer {
        let call = call.redacted(&self.redactor);
        let mut pending = false;
        let mut failures = 0;
        loop {
            match self.reporter.send(&call).await {
                Ok(()) => {
                    if pending {
                        info!(call = %call.endpoint().label(), "Port accepted the pending call");
                        self.leave_pending();
                    }
                    return Ok(());
                }
                Err(e) if e.permanent => {
                    warn!(run_id = self.kind.run_id().unwrap_or(""), error = %e,
                          "Port refused the call; it is not sent again");
                    metrics::report_rejected(call.endpoint().label());
                    lock(&self.errors).push(e.clone());
                    if pending {
                        self.leave_pending();
                    }
                    return Err(e);
                }
                Err(e) => {
                    if !pending {
                        warn!(error = %e, "Port API unreachable after retries: the call stays pending and is sent again until Port accepts it");
                        pending = true;
                        self.enter_pending();
                    }
                    failures += 1;
                    tokio::time::sleep(PENDING_RETRY.random(failures)).await;
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
        let pauses: Vec<u64> = (1..=7).map(|n| PENDING_RETRY.nth(n, 1.0).as_secs()).collect();
        assert_eq!(pauses, [1, 2, 4, 8, 10, 10, 10]);
        let ten = Duration::from_secs(10);
        assert_eq!(PENDING_RETRY.nth(7, 0.0), Duration::from_secs(5));
        assert_eq!(PENDING_RETRY.nth(7, 1.0), ten);
        // The factor is drawn from 0.5..=1.0; the sleep stays within it.
        for _ in 0..100 {
            let s = PENDING_RETRY.random(7);
            assert!(s >= Duration::from_secs(5) && s <= ten, "{s:?}");
        }
    }
}
