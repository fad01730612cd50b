//! Port's API rate limits (issue 19): the built binary in polling mode
//! against a fake Port API that enforces a fixed-window limit and says where
//! the agent stands on every answer (`x-ratelimit-*`).

use std::time::Duration;

use crate::support::agent::*;
use crate::support::broker::free_port;
use crate::support::{http_get, FakePort, FakeTarget};
use serde_json::json;

const RUNS: usize = 60;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_port_gets_every_report_with_almost_no_429s() {
    let (port, target) = (FakePort::start().await, FakeTarget::start().await);
    // 100 calls per 2 s; the agent needs about 8 per run (ack, five run
    // logs, /response, status) plus the claims: ~500 calls, 10 periods.
    port.rate_limit(100, Duration::from_secs(2));
    target.answer_json(200, json!({"ok": true}));
    let url = target.url("/deploy");
    offer(
        &port,
        (0..RUNS).map(|i| claimable(&format!("r_{i}"), &url, true, json!({"i": i}))),
    );
    // One attempt per Port call (the polling helper's default): each 429 the
    // fake counts is one the agent ran into, and a run's refused call is
    // held and sent again until Port takes it.
    let http_port = free_port().to_string();
    let mapping = json!([{"enabled": true}]);
    let mut agent = start_polling(&port, "rate", &mapping, &[("AGENT_HTTP_PORT", &http_port)]);
    wait_until(Duration::from_secs(120), "every run's status", &agent, || {
        (0..RUNS).all(|i| !patches_of(&port, &format!("r_{i}")).is_empty())
    });
    // The gauge shows the budget Port gave last: within the limit.
    let (_, metrics) = http_get(&format!("127.0.0.1:{http_port}"), "/metrics").expect("/metrics");
    let remaining: f64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("port_agent_port_rate_limit_remaining ")?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no port_agent_port_rate_limit_remaining in {metrics}"));
    assert!((0.0..=100.0).contains(&remaining), "{remaining}");
    assert_eq!(
        agent.stop(Duration::from_secs(30)),
        Some(0),
        "{}",
        agent.log_text()
    );
    let calls = port.all_calls();
    let limited = calls.iter().filter(|c| c.status == 429).count();
    assert!(
        limited * 100 < calls.len(),
        "{limited} of {} calls were answered 429",
        calls.len()
    );
    for i in 0..RUNS {
        let patches = patches_of(&port, &format!("r_{i}"));
        assert_eq!(patches.len(), 1, "r_{i}: {patches:?}");
        assert_eq!(patches[0]["status"], "SUCCESS", "r_{i}");
    }
    let log = agent.log_text();
    let pacing = log.lines().filter(|l| l.contains("pacing Port calls")).count();
    assert_eq!(pacing, 1, "the agent says once that it paces itself:\n{log}");
}
