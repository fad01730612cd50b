//! S3: 5,000 async runs against a target answering in 20 ms: throughput is
//! bounded by `AGENT_MAX_IN_FLIGHT` / 20 ms, and the agent should reach 90%
//! of it.

use super::drain::{Drain, DrainScenario};
use crate::report::{self, Target};

/// The scenario.
pub fn scenario() -> DrainScenario {
    DrainScenario {
        defaults: Drain {
            runs: 5_000,
            target_latency_ms: 20,
            ..super::drain::IMMEDIATE
        },
        title: |d, o| {
            format!(
                "{} async runs, target answering in 20 ms, AGENT_MAX_IN_FLIGHT={}",
                d.runs, o.max_in_flight
            )
        },
        targets: |o| {
            let bound = o.max_in_flight as f64 / 0.020;
            let label = format!(
                "runs/s ≥ 90% of {} / 20 ms = {}",
                o.max_in_flight,
                report::num(bound)
            );
            vec![Target::at_least("runs_per_s", 0.9 * bound, &label)]
        },
    }
}
