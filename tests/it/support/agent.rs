//! The agent binary in polling mode (`STREAMER_NAME=POLLING`) against the
//! fake Port API: the real binary, with no broker, for the tests of
//! settings, retries and failure reports.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::broker::AgentProcess;
use super::{FakePort, Recorded, SECRET};

/// Port's polling API: claim action runs.
pub const CLAIM_RUNS: &str = "/v1/actions/runs/claim-pending";
/// Port's polling API: claim workflow node runs.
pub const CLAIM_NODES: &str = "/v1/workflows/runs/claim-pending";
/// Port's polling API: acknowledge action runs.
pub const ACK_RUN: &str = "/v1/actions/runs/ack";
/// Port's polling API: acknowledge a node run.
pub const ACK_NODE: &str = "/v1/workflows/runs/ack";

/// Write `mapping` to a temporary file named after `tag`.
pub fn mapping_file(tag: &str, mapping: &Value) -> PathBuf {
    let path = std::env::temp_dir().join(format!("mapping-{tag}-{}.json", std::process::id()));
    std::fs::write(&path, mapping.to_string()).expect("write mapping");
    path
}

/// Start the agent in polling mode with `mapping` and `extra` settings
/// (which replace the defaults below: a 0.2 s interval (test builds only), one attempt per
/// Port call, no health server, JSON logs at info).
pub fn start_polling(port: &FakePort, tag: &str, mapping: &Value, extra: &[(&str, &str)]) -> AgentProcess {
    AgentProcess::start(&polling_env(port, tag, mapping, extra), tag)
}

/// The environment [`start_polling`] gives the agent.
pub fn polling_env<'a>(
    port: &FakePort,
    tag: &str,
    mapping: &Value,
    extra: &[(&'a str, &str)],
) -> Vec<(&'a str, String)> {
    let mapping = mapping_file(tag, mapping);
    let mut env: Vec<(&str, String)> = vec![
        ("PORT_ORG_ID", "org_1".into()),
        ("PORT_CLIENT_ID", "client-id".into()),
        ("PORT_CLIENT_SECRET", SECRET.into()),
        ("PORT_API_BASE_URL", port.base()),
        ("STREAMER_NAME", "POLLING".into()),
        ("CONTROL_THE_PAYLOAD_CONFIG_PATH", mapping.display().to_string()),
        // The shortest interval a user may set is 1 s; the tests pace
        // claims at 0.2 s through the test build's own knob.
        ("POLLING_INTERVAL_SECONDS", "1".into()),
        ("PORT_AGENT_TEST_POLLING_INTERVAL_MS", "200".into()),
        ("AGENT_PORT_RETRY_MAX_ATTEMPTS", "1".into()),
        ("AGENT_HTTP_PORT", "0".into()),
        ("AGENT_LOG_FORMAT", "json".into()),
        ("LOG_LEVEL", "info".into()),
    ];
    for (k, v) in extra {
        env.retain(|(key, _)| key != k);
        if *k == "POLLING_INTERVAL_SECONDS" {
            // An interval the test chose is the one in force.
            env.retain(|(key, _)| *key != "PORT_AGENT_TEST_POLLING_INTERVAL_MS");
        }
        env.push((k, v.to_string()));
    }
    env
}

/// An action run as `claim-pending` returns it.
pub fn claimable(id: &str, url: &str, synchronized: bool, properties: Value) -> Value {
    json!({"id": id, "payload": {
        "type": "WEBHOOK", "url": url, "agent": true, "synchronized": synchronized,
        "method": "POST", "headers": {"X-From": "port"},
        "body": {"action": {"identifier": "deploy"}, "payload": {"properties": properties},
                 "context": {"blueprint": "service"}}}})
}

/// Put action runs up for claiming.
pub fn offer(port: &FakePort, runs: impl IntoIterator<Item = Value>) {
    port.state.claimable_runs.lock().unwrap().extend(runs);
}

/// Poll `check` every 20 ms until it holds, or panic after `within` with
/// the agent's log.
pub fn wait_until(within: Duration, what: &str, agent: &AgentProcess, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; agent log:\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every call to `path`, whatever the answer.
pub fn calls_to(port: &FakePort, path: &str) -> Vec<Recorded> {
    port.all_calls()
        .into_iter()
        .filter(|c| c.path() == path)
        .collect()
}

/// Accepted status PATCH bodies of action run `run_id`.
pub fn patches_of(port: &FakePort, run_id: &str) -> Vec<Value> {
    let path = format!("/v1/actions/runs/{run_id}");
    port.accepted()
        .into_iter()
        .filter(|c| c.method == "PATCH" && c.path() == path)
        .map(|c| c.json())
        .collect()
}

/// Accepted run log lines of action run `run_id`, in order.
pub fn run_logs_of(port: &FakePort, run_id: &str) -> Vec<Recorded> {
    let path = format!("/v1/actions/runs/{run_id}/logs");
    port.accepted()
        .into_iter()
        .filter(|c| c.method == "POST" && c.path() == path)
        .collect()
}

/// SIGTERM, then expect exit code 0.
pub fn stop(mut agent: AgentProcess) {
    agent.signal("-TERM");
    assert_eq!(
        agent.wait(Duration::from_secs(30)),
        Some(0),
        "{}",
        agent.log_text()
    );
}

/// The run id of a target request (the default body is the whole message).
pub fn run_of(request: &Recorded) -> String {
    request.json()["context"]["runId"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The peak resident set size (`VmHWM`) of a running process, in KiB.
pub fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc status")
}
