//! One bad mapping costs one run, never the agent (issue 23): the four
//! expressions that crashed, exhausted or held up the agent, through the
//! built binary, in `render` and in `run`, with the peak memory measured.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::agent::{claimable, offer, start_polling, stop, wait_until};
use crate::support::cli::{all_output, arg, run_cli, stdout, temp_file};
use crate::support::{FakePort, FakeTarget};

/// A deep value serialised (overflowed the stack), a string doubled (4 GiB),
/// a value whose parts are shared printed (ran far past its time limit),
/// and a large field through a regular expression (quadratic).
const BOMBS: [(&str, &str); 4] = [
    ("deep", "reduce range(100000) as $i (null; [.]) | tojson | length"),
    ("doubled", "reduce range(40) as $i (\"xx\"; . + .) | length"),
    (
        "shared",
        "reduce range(30) as $i ({}; {a: ., b: .}) | tojson | length",
    ),
    ("lines", ".payload.properties.log | gsub(\"\\n\"; \" \") | length"),
];

/// The 2 MB field: 400,000 lines.
fn log_field() -> String {
    "line\n".repeat(400_000)
}

fn mapping(url: &str) -> Value {
    let body: serde_json::Map<String, Value> = BOMBS.iter().map(|(k, e)| (k.to_string(), json!(e))).collect();
    json!([{"enabled": true, "url": format!("{url:?}"), "body": body}])
}

/// What the evaluation of each bomb gave, as the target saw it.
fn expect_body(body: &Value) {
    assert_eq!(body["deep"], Value::Null, "{body}");
    assert_eq!(body["doubled"], Value::Null, "{body}");
    assert_eq!(body["shared"], Value::Null, "{body}");
    // jq 1.6's answer: the length is unchanged.
    assert_eq!(body["lines"], json!(2_000_000), "{body}");
}

/// Debug builds are slow; the regular expression needs more than the
/// default second there (release: a few hundred ms, benches/micro.rs).
const JQ_TIMEOUT_MS: &str = "10000";

/// The ceiling of the issue: each bomb a warning and a reported run, with
/// a peak RSS under 100 MiB.
const PEAK_KIB: u64 = 100 * 1024;

#[test]
fn render_survives_each_bomb_with_a_warning_and_a_report() {
    let message = json!({
        "action": {"identifier": "deploy"},
        "context": {"runId": "r_bomb", "blueprint": "svc"},
        "payload": {"properties": {"log": log_field()},
                    "action": {"invocationMethod": {"type": "WEBHOOK", "agent": true, "synchronized": true,
                                                     "url": "http://127.0.0.1:9/hook", "method": "POST"}}},
    });
    let mapping = temp_file(
        "bounds",
        "mapping.json",
        &mapping("http://127.0.0.1:9/hook").to_string(),
    );
    let msg = temp_file("bounds", "msg.json", &message.to_string());
    let args = [
        "render",
        "--mapping",
        arg(&mapping),
        "--message",
        arg(&msg),
        "--no-verify",
        "--format",
        "json",
    ];
    // Its peak RSS is not asserted here: a child started by posix_spawn
    // reports the test process's own peak as its ru_maxrss (Linux records
    // the shared address space at exec), and /proc forgets it at exit. The
    // same pipeline in `run` is measured below; render in release, with
    // `/usr/bin/time -f %M`: 28-48 MiB per bomb (closing note of issue 23).
    let o = run_cli(&args, &[("AGENT_JQ_TIMEOUT_MS", JQ_TIMEOUT_MS)]);
    let text = all_output(&o);
    assert_eq!(o.status.code(), Some(0), "{text}");
    for (field, why) in [
        ("deep", "nesting too deep"),
        ("doubled", "memory limit exceeded"),
        ("shared", "evaluation stopped: "),
    ] {
        assert!(
            text.contains(&format!("field 'body.{field}'"))
                || text.contains(&format!("\"field\":\"body.{field}\"")),
            "a warning names body.{field}: {text}"
        );
        assert!(text.contains(why), "{why}: {text}");
    }
    let rendered: Value = serde_json::from_str(stdout(&o).trim()).expect("one JSON object");
    expect_body(&rendered["request"]["body"]);
    assert_eq!(rendered["report"], json!({"status": "SUCCESS"}), "{rendered}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_survives_each_bomb_and_reports_the_run() {
    let port = FakePort::start().await;
    let target = FakeTarget::start().await;
    let url = target.url("/hook");
    offer(
        &port,
        [claimable("r_bomb", &url, true, json!({"log": log_field()}))],
    );
    let agent = start_polling(
        &port,
        "bounds-run",
        &mapping(&url),
        &[("AGENT_JQ_TIMEOUT_MS", JQ_TIMEOUT_MS), ("LOG_LEVEL", "warn")],
    );
    let reported = || {
        port.accepted()
            .iter()
            .any(|c| c.method == "PATCH" && c.path() == "/v1/actions/runs/r_bomb")
    };
    wait_until(Duration::from_secs(120), "the run is reported", &agent, reported);
    let peak_kib = crate::support::agent::peak_rss_kib(agent.pid());
    let requests = target.requests();
    assert_eq!(requests.len(), 1);
    expect_body(&requests[0].json());
    let status: Vec<Value> = port
        .accepted()
        .iter()
        .filter(|c| c.method == "PATCH" && c.path() == "/v1/actions/runs/r_bomb")
        .map(|c| c.json())
        .collect();
    assert_eq!(status, vec![json!({"status": "SUCCESS"})]);
    // The log is written by a background writer: wait for the lines.
    let warned = |field: &str| agent.log_text().contains(&format!("\"field\":\"body.{field}\""));
    wait_until(
        Duration::from_secs(10),
        "a warning names each failed field",
        &agent,
        || ["deep", "doubled", "shared"].iter().all(|f| warned(f)),
    );
    stop(agent);
    eprintln!("run's peak RSS: {peak_kib} KiB");
    assert!(
        peak_kib < PEAK_KIB,
        "run's peak RSS {peak_kib} KiB, expected under {PEAK_KIB}"
    );
}

/// The Helm chart's default memory limit.
const POD_LIMIT_KIB: u64 = 256 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_bombs_in_flight_stay_inside_the_pod_memory_limit() {
    const RUNS: usize = 64;
    let port = FakePort::start().await;
    let target = FakeTarget::start().await;
    let url = target.url("/hook");
    // A smaller field (64 runs share one claim answer); the bombs are the same.
    let log = "line\n".repeat(20_000);
    offer(
        &port,
        (0..RUNS).map(|i| claimable(&format!("r_{i}"), &url, true, json!({"log": log}))),
    );
    let agent = start_polling(
        &port,
        "bounds-64",
        &mapping(&url),
        &[
            ("AGENT_MAX_IN_FLIGHT", "64"),
            ("POLLING_RUNS_BATCH_SIZE", "64"),
            ("AGENT_JQ_TIMEOUT_MS", "300"),
            ("LOG_LEVEL", "error"),
        ],
    );
    let reported = || {
        port.accepted()
            .iter()
            .filter(|c| c.method == "PATCH" && c.json() == json!({"status": "SUCCESS"}))
            .count()
    };
    wait_until(Duration::from_secs(300), "every run is reported", &agent, || {
        reported() == RUNS
    });
    let peak_kib = crate::support::agent::peak_rss_kib(agent.pid());
    assert_eq!(target.requests().len(), RUNS);
    stop(agent);
    eprintln!("peak RSS with {RUNS} bombs in flight: {peak_kib} KiB");
    assert!(
        peak_kib < POD_LIMIT_KIB,
        "peak RSS {peak_kib} KiB, expected under {POD_LIMIT_KIB}"
    );
}

/// Recursive definitions run as in jq 1.6 (issue 26); one that never ends
/// costs its field (null with a warning naming the bound), not the agent:
/// through the built binary, on the stack of its runtime workers.
#[test]
fn render_runs_recursive_definitions_and_stops_runaway_ones() {
    let body = json!({
        "fact": "def fact: if . <= 1 then 1 else . * (. - 1 | fact) end; 10 | fact",
        "walk": "def n: if type == \"object\" then [.[] | n] | add + 1 else 0 end; .payload | n",
        "runaway": "def f: 1 + f; f",
        "nested": "def f: [f]; f",
        "loop": "def f: f; f",
    });
    let mapping = json!([{"enabled": true, "url": "\"http://127.0.0.1:9/hook\"", "body": body}]);
    let message = json!({
        "action": {"identifier": "deploy"},
        "context": {"runId": "r_rec", "blueprint": "svc"},
        "payload": {"a": {"b": {}}, "action": {"invocationMethod": {"type": "WEBHOOK", "agent": true,
                     "synchronized": true, "url": "http://127.0.0.1:9/hook", "method": "POST"}}},
    });
    let mapping = temp_file("bounds-rec", "mapping.json", &mapping.to_string());
    let msg = temp_file("bounds-rec", "msg.json", &message.to_string());
    let args = [
        "render",
        "--mapping",
        arg(&mapping),
        "--message",
        arg(&msg),
        "--no-verify",
        "--format",
        "json",
    ];
    let o = run_cli(&args, &[("AGENT_JQ_TIMEOUT_MS", JQ_TIMEOUT_MS)]);
    let text = all_output(&o);
    assert_eq!(o.status.code(), Some(0), "{text}");
    for (field, why) in [
        ("runaway", "nesting too deep"),
        ("nested", "nesting too deep"),
        ("loop", "step limit exceeded"),
    ] {
        assert!(
            text.contains(&format!("field 'body.{field}'"))
                || text.contains(&format!("\"field\":\"body.{field}\"")),
            "a warning names body.{field}: {text}"
        );
        assert!(text.contains(why), "{why}: {text}");
    }
    let rendered: Value = serde_json::from_str(stdout(&o).trim()).expect("one JSON object");
    let got = &rendered["request"]["body"];
    assert_eq!(got["fact"], json!(3_628_800), "{rendered}");
    // jq 1.6 gives 5 for this payload (`jq` on the same message).
    assert_eq!(got["walk"], json!(5), "{rendered}");
    for field in ["runaway", "nested", "loop"] {
        assert_eq!(got[field], Value::Null, "{rendered}");
    }
    assert_eq!(rendered["report"], json!({"status": "SUCCESS"}), "{rendered}");
}
