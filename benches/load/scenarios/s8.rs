//! S8: synchronized runs produced at a steady rate, the fake Port API
//! answering every call after `--port-latency-ms` (50 ms by default): how
//! long from produce until Port has the run's status (the fakes receive its
//! status PATCH), and from the target's call until then.

use serde_json::json;

use super::s6::{live, LiveSpec};
use super::{Description, Run, Scenario};
use crate::report::Target;
use crate::session::Session;

/// The scenario.
pub struct SyncStatus;

impl Scenario for SyncStatus {
    fn describe(&self, s: &Session) -> Description {
        let o = &s.opts;
        let rtt = o.port_latency_ms as f64;
        Description {
            title: format!(
                "live synchronized: {} runs/s for {} s, Port API answering in {} ms: produce→status",
                o.s8_rate, o.s8_seconds, o.port_latency_ms
            ),
            params: json!({"rate": o.s8_rate, "seconds": o.s8_seconds, "port_latency_ms": o.port_latency_ms}),
            targets: vec![Target::at_most(
                "target_to_status_p50_ms",
                2.0 * rtt + 10.0,
                "p50 target→status ms: ≤ 2 Port round trips (+10 ms)",
            )
            .aim()],
        }
    }

    fn run<'a>(&'a self, s: &'a Session, tag: &'a str) -> Run<'a> {
        let spec = LiveSpec {
            rate: s.opts.s8_rate,
            seconds: s.opts.s8_seconds,
            synchronized: true,
            port_latency_ms: s.opts.port_latency_ms,
            baselines: false,
        };
        Box::pin(live(s, tag, spec))
    }
}
