//! The built `port-agent` binary as a separate process against a real
//! Kafka-protocol broker (tansu, in memory, on 127.0.0.1), the fake Port API
//! and a fake target.

use std::collections::HashMap;
use std::time::Duration;

use crate::support::broker::{eventually, produce, run_ids, signed_runs, write_mapping, AgentProcess, Tansu};
use crate::support::{action_run, signed, FakePort, FakeTarget, SECRET};
use serde_json::{json, Value};

const RUNS: &str = "org_1.runs";
const CHANGES: &str = "org_1.change.log";
const GROUP: &str = "org_1.agent";

fn agent_env(
    tansu: &Tansu,
    port: &FakePort,
    mapping: &std::path::Path,
    extra: &[(&'static str, &str)],
) -> Vec<(&'static str, String)> {
    crate::support::broker::agent_env(&tansu.bootstrap, &port.base(), mapping, GROUP, extra)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_signed_runs_are_delivered_once_and_committed_to_the_end() {
    let tansu = Tansu::start();
    tansu.create_topic(RUNS, 3).await;
    tansu.create_topic(CHANGES, 1).await;
    let (port, target) = (FakePort::start().await, FakeTarget::start().await);
    target.answer_json(200, json!({"ok": true}));
    let msgs = signed_runs(2000, &target.url("/run"), true);
    let ends = produce(&tansu.bootstrap, RUNS, msgs).await;

    let mapping = write_mapping("tansu-once");
    let mut agent = AgentProcess::start(&agent_env(&tansu, &port, &mapping, &[]), "once");
    eventually("2000 runs at the target", Duration::from_secs(240), || {
        target.requests().len() >= 2000
    })
    .await;
    eventually("2000 status patches", Duration::from_secs(60), || {
        port.accepted()
            .iter()
            .filter(|c| c.method == "PATCH" && !c.path().ends_with("/response"))
            .count()
            >= 2000
    })
    .await;
    agent.signal("-TERM");
    assert_eq!(
        agent.wait(Duration::from_secs(30)),
        Some(0),
        "clean exit; log: {}",
        agent.log_text()
    );

    let counts = run_ids(&target);
    assert_eq!(counts.len(), 2000);
    assert!(counts.values().all(|n| *n == 1), "every run exactly once");
    // Per run, two chains each in its order: 5 logs, and the response then
    // the status (the status does not wait for the logs).
    let calls = port.accepted();
    let mut per_run: HashMap<String, Vec<String>> = HashMap::new();
    for c in &calls {
        let parts: Vec<&str> = c.path().split('/').collect();
        if parts.len() >= 5 && parts[3] == "runs" {
            let kind = match (c.method.as_str(), parts.get(5).copied()) {
                ("POST", Some("logs")) => "log",
                ("PATCH", Some("response")) => "response",
                ("PATCH", None) => "status",
                _ => "other",
            };
            per_run
                .entry(parts[4].to_string())
                .or_default()
                .push(kind.to_string());
        }
    }
    assert_eq!(per_run.len(), 2000);
    for (run, kinds) in &per_run {
        let logs = kinds.iter().filter(|k| *k == "log").count();
        let result: Vec<&str> = kinds.iter().map(String::as_str).filter(|k| *k != "log").collect();
        assert_eq!(
            (logs, result),
            // A synchronous run with a body: seven lines, as the Python
            // agent posts them (tests/it/run_logs.rs has their texts).
            (7, vec!["response", "status"]),
            "{run}: {kinds:?}"
        );
    }
    let status = calls
        .iter()
        .find(|c| c.method == "PATCH" && c.path() == "/v1/actions/runs/r_0007")
        .unwrap();
    assert_eq!(status.json(), json!({"status": "SUCCESS"}));
    assert_eq!(port.token_calls(), 1);
    assert!(
        port.all_calls()
            .iter()
            .any(|c| c.method == "PATCH" && c.path() == "/v1/organization"),
        "the streamer name is recorded at start-up"
    );
    for (partition, committed) in tansu.committed(GROUP, RUNS, 3).into_iter().enumerate() {
        assert_eq!(
            committed,
            ends[&(partition as i32)],
            "committed offsets equal the log end"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_copies_the_topics_without_committing_and_dry_run_reads_the_file() {
    let tansu = Tansu::start();
    tansu.create_topic(RUNS, 3).await;
    tansu.create_topic(CHANGES, 1).await;
    let msgs: Vec<_> = (0..6)
        .map(|i| {
            (
                i % 3,
                signed(
                    action_run(&format!("r_rec{i}"), "http://t.internal/x", "POST", false),
                    SECRET,
                    1,
                ),
            )
        })
        .collect();
    produce(&tansu.bootstrap, RUNS, msgs.clone()).await;
    let out = std::env::temp_dir().join(format!("recorded-{}.jsonl", std::process::id()));
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_port-agent"))
        .args([
            "record",
            "--out",
            out.to_str().unwrap(),
            "--from-beginning",
            "--max",
            "6",
            "--timeout",
            "60",
        ])
        .env_clear()
        .envs([
            ("PORT_ORG_ID", "org_1"),
            ("USING_LOCAL_PORT_INSTANCE", "true"),
            ("KAFKA_CONSUMER_BOOTSTRAP_SERVERS", tansu.bootstrap.as_str()),
        ])
        .output()
        .expect("run record");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let text = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 6);
    // Each message once, on the partition it was produced to, at offsets 0
    // and 1 of that partition (concurrent produces fix no order inside it).
    let mut seen: Vec<(i64, i64, String)> = lines
        .iter()
        .map(|l| {
            assert_eq!(l["topic"], RUNS);
            let id = l["value"]["context"]["runId"].as_str().unwrap().to_string();
            (
                l["partition"].as_i64().unwrap(),
                l["offset"].as_i64().unwrap(),
                id,
            )
        })
        .collect();
    seen.sort();
    for (i, (partition, offset, id)) in seen.iter().enumerate() {
        assert_eq!((*partition, *offset), ((i / 2) as i64, (i % 2) as i64));
        let n: i64 = id.trim_start_matches("r_rec").parse().unwrap();
        assert_eq!(n % 3, *partition, "{id} was produced to partition {}", n % 3);
    }
    // The recorded values are the messages as produced (signatures still verify).
    for l in &lines {
        let id = l["value"]["context"]["runId"].as_str().unwrap();
        let original = &msgs.iter().find(|(_, m)| m["context"]["runId"] == id).unwrap().1;
        assert_eq!(&l["value"], original);
    }
    // `record` consumed as its own throwaway group (it says which) and
    // committed nothing for it.
    let stderr = String::from_utf8_lossy(&status.stderr);
    let group = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["message"] == "recording with a throwaway consumer group; nothing is committed")
        .and_then(|l| l["group"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("record names its group: {stderr}"));
    assert!(group.starts_with("port-agent-record-"), "{group}");
    assert_eq!(
        tansu.committed(&group, RUNS, 3),
        [-1, -1, -1],
        "record must not commit"
    );
    assert_eq!(
        tansu.committed(&group, CHANGES, 1),
        [-1],
        "record must not commit"
    );
    let mapping = write_mapping("record-dry-run");
    let dry = std::process::Command::new(env!("CARGO_BIN_EXE_port-agent"))
        .args([
            "dry-run",
            "--input",
            out.to_str().unwrap(),
            "--mapping",
            mapping.to_str().unwrap(),
            "--format",
            "json",
        ])
        .env_clear()
        .envs([("PORT_ORG_ID", "org_1"), ("PORT_CLIENT_SECRET", SECRET)])
        .output()
        .expect("dry-run");
    assert_eq!(dry.status.code(), Some(0));
    let summary: Value =
        serde_json::from_str(String::from_utf8_lossy(&dry.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(summary["summary"]["by_outcome"], json!({"delivered": 6}));
}

/// tansu 0.6 answers every committed offset with empty metadata, so the
/// crash-loop guard (which keeps what was in flight there) cannot work
/// against it: the agent checks once, after its first commit, and says so
/// (README "Running against Kafka", **A crash loop**).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_says_when_the_broker_drops_commit_metadata() {
    let tansu = Tansu::start();
    tansu.create_topic(RUNS, 3).await;
    tansu.create_topic(CHANGES, 1).await;
    let (port, target) = (FakePort::start().await, FakeTarget::start().await);
    target.answer(200, "");
    produce(&tansu.bootstrap, RUNS, signed_runs(1, &target.url("/run"), false)).await;
    let mapping = write_mapping("tansu-metadata");
    let agent = AgentProcess::start(&agent_env(&tansu, &port, &mapping, &[]), "tansu-metadata");
    eventually(
        "the warning that the guard is off",
        Duration::from_secs(60),
        || {
            agent.log_text().contains(
                "the broker does not keep the metadata of committed offsets: the crash-loop guard is off",
            )
        },
    )
    .await;
    eventually("the run still goes through", Duration::from_secs(60), || {
        target.requests().len() == 1
    })
    .await;
}
