//! Sending a run's Port calls: in order, one after another, and never
//! given up on while Port is unreachable (the message's offset waits).

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tracing::{info, warn};

use crate::message::Kind;
use crate::port::{PortCall, ReportBacklog, Reporter};
use crate::report::RunReports;
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

/// A run's reporting target; calls keep their order because they are
/// awaited one after another.
pub(super) struct RunReporter<'a, R> {
    pub(super) reporter: &'a R,
    pub(super) kind: &'a Kind,
    /// Post log lines (`AGENT_RUN_LOGS`).
    pub(super) logs: bool,
    /// Calls Port refused for good.
    pub(super) errors: Vec<String>,
    pub(super) backlog: &'a Arc<ReportBacklog>,
}

impl<'a, R: Reporter> RunReporter<'a, R> {
    /// What to report about this run.
    pub(super) fn reports(&self) -> RunReports<'a> {
        RunReports {
            kind: self.kind,
            logs: self.logs,
        }
    }

    /// Make `calls`, one after another.
    pub(super) async fn send(&mut self, calls: Vec<PortCall>) {
        for call in calls {
            self.call(call).await;
        }
    }

    /// Make one Port call, never giving up on a transient failure: when the
    /// client's own retries are spent, the call (and so the rest of the
    /// run's calls, and the message's offset) waits and is sent again with
    /// capped backoff until Port accepts it. Only a refusal for good (a 4xx
    /// other than 401/408/429) ends it.
    async fn call(&mut self, call: PortCall) {
        let mut pending = None;
        let mut pause = PENDING_RETRY_FIRST;
        loop {
            match self.reporter.send(&call).await {
                Ok(()) => {
                    if pending.is_some() {
                        info!(call = %call.kind(), "Port accepted the pending call");
                    }
                    return;
                }
                Err(e) if e.permanent => {
                    warn!(run_id = self.kind.run_id().unwrap_or(""), error = %e,
                          "Port refused the call; it is not sent again");
                    metrics::report_rejected(call.kind());
                    self.errors.push(e.to_string());
                    return;
                }
                Err(e) => {
                    if pending.is_none() {
                        warn!(error = %e, "Port API unreachable after retries: the call stays pending and is sent again until Port accepts it");
                        pending = Some(self.backlog.enter());
                    }
                    let jittered = pending_retry_sleep(pause, rand::rng().random_range(0.5..=1.0));
                    tokio::time::sleep(jittered).await;
                    pause = next_pending_retry_pause(pause);
                }
            }
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
