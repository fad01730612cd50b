//! The runs Port handed this agent (acked and confirmed) that have no final
//! status yet: they are ours alone, since Port will not hand them out
//! again. Whatever stops the agent before they finish fails them instead of
//! leaving them `IN_PROGRESS` for good: the drain timeout at close, and a
//! second stop signal (through [`crate::shutdown::LastWords`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::{error, warn};

use super::claimed::ClaimedRun;
use crate::port::{PortCall, PortClient, Reporter};

/// The runs acked and confirmed, not done yet (by delivery sequence
/// number); shared by the source, each run's ack and the signal handler.
#[derive(Clone)]
pub struct InFlight {
    runs: Arc<Mutex<HashMap<i64, ClaimedRun>>>,
    port: PortClient,
}

impl InFlight {
    /// None yet; failure reports go through `port`.
    pub fn new(port: PortClient) -> InFlight {
        InFlight {
            runs: Arc::default(),
            port,
        }
    }

    /// Port confirmed the ack of `run`: it is ours until [`Self::finished`].
    pub fn acked(&self, sequence: i64, run: ClaimedRun) {
        self.lock().insert(sequence, run);
    }

    /// The run of `sequence` has its final status (or is being given one).
    pub fn finished(&self, sequence: i64) {
        self.lock().remove(&sequence);
    }

    /// How many runs are in flight.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// No run is in flight.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, ClaimedRun>> {
        self.runs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Report every run in flight FAILURE with `summary`, all at once,
    /// within `timeout`; they leave the set (a run's own late report then
    /// finds it finished: Port keeps the first final status).
    pub async fn fail_all(&self, summary: &str, timeout: Duration) {
        let left: Vec<ClaimedRun> = self.lock().drain().map(|(_, run)| run).collect();
        if left.is_empty() {
            return;
        }
        warn!(
            runs = left.len(),
            summary, "reporting the runs in flight as failed"
        );
        let mut reports = tokio::task::JoinSet::new();
        for run in left {
            let call = failure_call(&run, summary);
            let port = self.port.clone();
            reports.spawn(async move {
                if let Err(e) = port.send(&call).await {
                    error!(run_id = %run.id, error = %e, "could not report the stopped run to Port");
                }
            });
        }
        let all = async { while reports.join_next().await.is_some() {} };
        if tokio::time::timeout(timeout, all).await.is_err() {
            error!("reporting the stopped runs took too long; some stay IN_PROGRESS in Port");
        }
    }
}

/// The Port call that fails `run` with `summary`.
pub fn failure_call(run: &ClaimedRun, summary: &str) -> PortCall {
    crate::report::run_failed(&run.id, run.node_run, summary)
}

/// Ack `run`; when Port confirms, it is in flight (as delivery `sequence`)
/// from that moment, so that a second signal fails it even before it is
/// handed out.
pub(super) async fn ack_into(
    port: PortClient,
    run: ClaimedRun,
    in_flight: InFlight,
    sequence: i64,
) -> Option<(i64, ClaimedRun)> {
    if !ack(&port, &run).await {
        return None;
    }
    in_flight.acked(sequence, run.clone());
    Some((sequence, run))
}

/// Ack one run; `true` when Port confirmed it.
async fn ack(port: &PortClient, run: &ClaimedRun) -> bool {
    let answer = if run.node_run {
        port.ack_node_run(&run.id).await
    } else {
        port.ack_run(&run.id).await
    };
    match answer {
        Ok(a) if a.confirmed => true,
        Ok(a) => {
            warn!(run_id = %run.id, answer = %a.answer, "Port did not confirm the ack; the run is not processed");
            false
        }
        Err(e) => {
            warn!(run_id = %run.id, error = %e, "ack failed; the run is not processed");
            false
        }
    }
}
