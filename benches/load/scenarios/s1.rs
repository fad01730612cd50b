//! S1: 10,000 async runs against a target answering at once, run logs on:
//! throughput and the agent's CPU per run.

use super::drain::{Drain, DrainScenario};
use crate::report::Target;

/// The scenario.
pub fn scenario() -> DrainScenario {
    DrainScenario {
        defaults: Drain {
            runs: 10_000,
            ..super::drain::IMMEDIATE
        },
        title: |d, _| format!("{} async runs, 0 ms target, run logs on", d.runs),
        targets: |_| {
            vec![
                Target::at_least("runs_per_s", 6000.0, "runs/s over the drain"),
                Target::at_most("agent_cpu_us_per_run", 150.0, "agent CPU µs per run"),
            ]
        },
    }
}
