//! S2: 10,000 synchronized runs (each adds `PATCH …/response` and a status
//! PATCH): throughput.

use super::drain::{Drain, DrainScenario};
use crate::report::Target;

/// The scenario.
pub fn scenario() -> DrainScenario {
    DrainScenario {
        defaults: Drain {
            runs: 10_000,
            synchronized: true,
            ..super::drain::IMMEDIATE
        },
        title: |d, _| format!("{} synchronized runs (/response + status patch)", d.runs),
        targets: |_| vec![Target::at_least("runs_per_s", 4000.0, "runs/s over the drain")],
    }
}
