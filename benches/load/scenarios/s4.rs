//! S4: 2,000 async runs with a Port API answering in 20 ms: the run logs
//! and reports must not hold the target requests back.

use super::drain::{Drain, DrainScenario};
use crate::report::Target;

/// The scenario.
pub fn scenario() -> DrainScenario {
    DrainScenario {
        defaults: Drain {
            runs: 2_000,
            port_latency_ms: 20,
            ..super::drain::IMMEDIATE
        },
        title: |d, _| format!("{} async runs, Port API answering in 20 ms", d.runs),
        targets: |_| vec![Target::at_least("runs_per_s", 400.0, "runs/s over the drain")],
    }
}
