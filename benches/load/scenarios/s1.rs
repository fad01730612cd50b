//! S1: 10,000 async runs against a target answering at once, run logs on
//! (`--run-logs`): throughput and the agent's CPU per run.

use super::drain::{Drain, DrainScenario};
use crate::report::Target;

/// The scenario.
pub fn scenario() -> DrainScenario {
    DrainScenario {
        defaults: Drain {
            runs: 10_000,
            ..super::drain::IMMEDIATE
        },
        title: |d, o| {
            format!(
                "{} async runs, 0 ms target, AGENT_RUN_LOGS={}",
                d.runs,
                o.run_logs.env_value()
            )
        },
        targets: |_| {
            vec![
                Target::at_least("runs_per_s", 6000.0, "runs/s over the drain"),
                Target::at_most("agent_cpu_us_per_run", 150.0, "agent CPU µs per run"),
            ]
        },
    }
}
