//! README claims of `dry-run` and `render` (issue 17, docs/testing.md),
//! through the built binary: the text output, `--topic`,
//! `--assume-status`, the `value` string form, `kind`, the outcomes
//! `target_error` and `no_invocation`, the 4-character threshold of
//! environment values, `AGENT_MAX_MESSAGE_AGE_SECONDS` on node runs and
//! change-log events, a method that is not a string, and
//! `examples/generate.py`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::support::{action_run, signed, SECRET};
use port_agent::json_canon::to_raw_string;
use serde_json::{json, Value};

use crate::support::cli::{all_output as all, arg, root, run_cli as agent, stdout};

fn temp_file(name: &str, text: &str) -> PathBuf {
    crate::support::cli::temp_file("claims", name, text)
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// `dry-run --format json` over `lines` with `mapping` and `extra` args.
fn dry_run_json(
    tag: &str,
    lines: &[String],
    mapping: &Value,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Vec<Value> {
    let input = temp_file(&format!("{tag}.jsonl"), &(lines.join("\n") + "\n"));
    let mapping = temp_file(&format!("{tag}-mapping.json"), &mapping.to_string());
    crate::support::cli::dry_run_json(&input, &mapping, extra, env).0
}

fn own(topic: &str, offset: i64, value: Value) -> String {
    json!({"topic": topic, "partition": 0, "offset": offset, "timestamp": 1, "key": null,
           "headers": {}, "value": value})
    .to_string()
}

fn signed_run(id: &str, ts: u64) -> Value {
    let v = to_raw_string(&signed(
        action_run(id, "http://t.internal/x", "POST", true),
        SECRET,
        ts,
    ));
    serde_json::from_str(&v).unwrap()
}

fn change_log_event(url: &str) -> Value {
    json!({"action": "UPDATE", "resourceType": "entity", "status": "ACK",
           "changelogDestination": {"type": "WEBHOOK", "agent": true, "url": url},
           "diff": {"before": null, "after": {"identifier": "e1"}}})
}

/// Claim 1: the text output names, per message, the decision, the signed
/// request and the Port calls, then ends with a summary table.
#[test]
fn dry_run_text_prints_decision_signed_request_port_calls_then_a_summary() {
    let lines = [
        own("org_1.runs", 0, signed_run("r_t1", now())),
        own("org_1.runs", 1, {
            let mut m = action_run("r_t2", "http://t.internal/x", "POST", false);
            m["payload"]["action"]["invocationMethod"]["agent"] = json!(false);
            m
        }),
    ];
    let input = temp_file("text.jsonl", &(lines.join("\n") + "\n"));
    let mapping = temp_file("text-mapping.json", r#"[{"enabled": true}]"#);
    let o = agent(
        &["dry-run", "--input", arg(&input), "--mapping", arg(&mapping)],
        &[("PORT_CLIENT_SECRET", SECRET), ("PORT_ORG_ID", "org_1")],
    );
    assert_eq!(o.status.code(), Some(0), "{}", all(&o));
    let out = stdout(&o);
    let first = out.split("\nline 2").next().unwrap();
    assert!(
        first.contains("line 1") && first.contains("action_run r_t1"),
        "{out}"
    );
    assert!(first.contains("decision: mapping #0"), "{out}");
    assert!(first.contains("request:  POST http://t.internal/x"), "{out}");
    // Signed: the signature and its timestamp are headers of the request
    // (the signature value itself shown redacted).
    assert!(first.contains("\"X-Port-Signature\":\"<redacted>\""), "{out}");
    assert!(first.contains("\"X-Port-Timestamp\""), "{out}");
    assert!(
        first.contains("port:     POST /v1/actions/runs/r_t1/logs"),
        "{out}"
    );
    assert!(first.contains("port:     PATCH /v1/actions/runs/r_t1 "), "{out}");
    // Skipped, and why.
    let second = out.split("\nline 2").nth(1).expect("line 2");
    let second = second.split("\nsummary:").next().unwrap();
    assert!(
        second.contains("not_for_agent") || second.contains("not for agent"),
        "{second}"
    );
    assert!(!second.contains("request:"), "{second}");
    // Then the summary table, last.
    let summary = out.split("\nsummary:").nth(1).expect("a summary at the end");
    assert!(
        summary.starts_with(" 2 message(s), 0 malformed line(s)"),
        "{summary}"
    );
    assert!(
        summary.contains("outcome") && summary.contains("count"),
        "{summary}"
    );
    assert!(
        summary.contains("delivered") && summary.contains("not_for_agent"),
        "{summary}"
    );
    assert!(
        !summary.contains("\nline "),
        "nothing after the summary: {summary}"
    );
}

/// Claims 4, 6 and 7: `--topic` for bare lines, `--assume-status`, the
/// `kind` values and the outcomes `target_error` and `no_invocation`.
#[test]
fn topic_assume_status_kinds_and_outcomes() {
    let node = {
        let mut m = action_run("wfnr_n1", "http://t.internal/node", "POST", false);
        m["context"]["runId"] = json!("wfnr_n1");
        to_raw_string(&signed(m, SECRET, now()))
    };
    let no_invocation = {
        let mut m = action_run("x", "http://t.internal/x", "POST", false);
        m["context"].as_object_mut().unwrap().remove("runId");
        m["payload"]["action"]["invocationMethod"]
            .as_object_mut()
            .unwrap()
            .remove("url");
        to_raw_string(&signed(m, SECRET, now()))
    };
    let lines = vec![
        own("org_1.runs", 0, signed_run("r_k1", now())),
        own("org_1.runs", 1, serde_json::from_str(&node).unwrap()),
        own("org_1.change.log", 0, change_log_event("http://t.internal/cl")),
        own("org_1.runs", 2, serde_json::from_str(&no_invocation).unwrap()),
        own("org_1.runs", 3, json!({"not": "a run"})),
    ];
    let mapping = json!([{"enabled": true}]);
    let env = [("PORT_CLIENT_SECRET", SECRET), ("PORT_ORG_ID", "org_1")];
    let out = dry_run_json("kinds", &lines, &mapping, &["--assume-status", "500"], &env);
    let got: Vec<(Value, Value)> = out[..5]
        .iter()
        .map(|l| (l["kind"].clone(), l["outcome"].clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (json!("action_run"), json!("target_error")),
            (json!("node_run"), json!("target_error")),
            (json!("change_log"), json!("target_error")),
            (Value::Null, json!("no_invocation")),
            (Value::Null, json!("not_for_agent")),
        ]
    );
    // target_error is reported: FAILURE for the action run, FAILED for the
    // node run.
    let patch = |l: &Value, path: &str| {
        l["port_calls"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["method"] == "PATCH" && c["path"] == path)
            .cloned()
            .unwrap_or_else(|| panic!("a PATCH of {path} in {l}"))
    };
    assert_eq!(
        patch(&out[0], "/v1/actions/runs/r_k1")["body"]["status"],
        "FAILURE"
    );
    assert_eq!(
        patch(&out[1], "/v1/workflows/nodes/runs/wfnr_n1")["body"]["status"],
        "COMPLETED"
    );
    assert_eq!(
        patch(&out[1], "/v1/workflows/nodes/runs/wfnr_n1")["body"]["result"],
        "FAILED"
    );
    assert_eq!(out[3]["port_calls"], json!([]));
    assert_eq!(out[3]["request"], Value::Null);
    // Without --assume-status the same run is delivered (the default 200).
    let default = dry_run_json("kinds-200", &lines[..1], &mapping, &[], &env);
    assert_eq!(default[0]["outcome"], "delivered");
    assert_eq!(
        patch(&default[0], "/v1/actions/runs/r_k1")["body"]["status"],
        "SUCCESS"
    );

    // --topic: a bare change-log event is read as a change-log event with
    // it, and as a runs-topic message (not for the agent) without it.
    let bare = vec![change_log_event("http://t.internal/cl").to_string()];
    let with = dry_run_json(
        "bare-topic",
        &bare,
        &mapping,
        &["--topic", "org_1.change.log"],
        &env,
    );
    assert_eq!(with[0]["topic"], "org_1.change.log");
    assert_eq!(with[0]["kind"], "change_log");
    assert_eq!(with[0]["outcome"], "delivered");
    assert_eq!(with[0]["request"]["url"], "http://t.internal/cl");
    let without = dry_run_json("bare-default", &bare, &mapping, &[], &env);
    assert_eq!(without[0]["topic"], "org_1.runs");
    assert_eq!(without[0]["outcome"], "not_for_agent");

    // render takes --topic and --assume-status too.
    let message = temp_file(
        "render-cl.json",
        &change_log_event("http://t.internal/cl").to_string(),
    );
    let mapping_file = temp_file("render-mapping.json", &mapping.to_string());
    let render_json = |message: &Path, extra: &[&str]| {
        let mut args = vec![
            "render",
            "--mapping",
            arg(&mapping_file),
            "--message",
            arg(message),
            "--format",
            "json",
        ];
        args.extend_from_slice(extra);
        agent(&args, &env)
    };
    let render = |extra: &[&str]| {
        let o = render_json(&message, extra);
        (
            o.status.code(),
            all(&o),
            serde_json::from_slice::<Value>(&o.stdout).ok(),
        )
    };
    let (code, text, out) = render(&["--topic", "org_1.change.log"]);
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(out.unwrap()["request"]["url"], "http://t.internal/cl", "{text}");
    let (_, text, _) = render(&[]);
    assert!(!text.contains("\"url\":\"http://t.internal/cl\""), "{text}");

    let run = temp_file("render-run.json", &signed_run("r_r1", now()).to_string());
    let render_run = |extra: &[&str]| {
        let o = render_json(&run, extra);
        assert_eq!(o.status.code(), Some(0), "{}", all(&o));
        stdout(&o)
    };
    let failed = render_run(&["--assume-status", "503"]);
    assert!(
        failed.contains("\"status\":\"FAILURE\"") && !failed.contains("\"status\":\"SUCCESS\""),
        "{failed}"
    );
    let ok = render_run(&[]);
    assert!(ok.contains("\"status\":\"SUCCESS\""), "{ok}");
}

/// Claim 5: the agent's own format with `value` as a string holding JSON.
#[test]
fn the_agents_own_format_takes_value_as_a_json_string() {
    let value = to_raw_string(&signed(
        action_run("r_str", "http://t.internal/s", "POST", false),
        SECRET,
        now(),
    ));
    let line = json!({"topic": "org_1.runs", "partition": 3, "offset": 11, "timestamp": 1, "key": null,
                      "headers": {}, "value": value})
    .to_string();
    let out = dry_run_json(
        "value-string",
        &[line],
        &json!([{"enabled": true}]),
        &[],
        &[("PORT_CLIENT_SECRET", SECRET), ("PORT_ORG_ID", "org_1")],
    );
    assert_eq!(out[0]["run_id"], "r_str");
    assert_eq!(out[0]["offset"], 11);
    assert_eq!(
        out[0]["outcome"], "delivered",
        "signature verified over the string: {}",
        out[0]
    );
    assert_eq!(out[0]["request"]["url"], "http://t.internal/s");
}

/// Claim 8: environment values named like secrets are searched for in the
/// output from 4 characters on; a 3-character one is left alone.
#[test]
fn environment_values_of_four_characters_or_more_are_redacted_wherever_they_occur() {
    let message = temp_file("env-threshold.json", &signed_run("r_env", now()).to_string());
    let mapping = temp_file(
        "env-threshold-mapping.json",
        &json!([{"enabled": true, "body": {"a": "\"x-\" + env.SHORT_TOKEN", "b": "\"y-\" + env.LONG_TOKEN"}}])
            .to_string(),
    );
    let o = agent(
        &[
            "render",
            "--mapping",
            arg(&mapping),
            "--message",
            arg(&message),
            "--env",
            "SHORT_TOKEN=abc",
            "--env",
            "LONG_TOKEN=wxyz",
            "--format",
            "json",
        ],
        &[("PORT_CLIENT_SECRET", SECRET)],
    );
    assert_eq!(o.status.code(), Some(0), "{}", all(&o));
    let out: Value = serde_json::from_slice(&o.stdout).expect("render JSON");
    assert_eq!(out["request"]["body"]["a"], "x-abc", "3 characters: not searched");
    assert_eq!(
        out["request"]["body"]["b"], "y-<redacted>",
        "4 characters: searched"
    );
    assert!(!all(&o).contains("wxyz"));
}

/// Claim 22 (dry-run part): node and action runs older than
/// AGENT_MAX_MESSAGE_AGE_SECONDS are skipped as `stale` and counted; the
/// node run reported COMPLETED/FAILED, the action run FAILURE saying why;
/// change-log events are not checked.
#[test]
fn stale_node_runs_are_reported_failed_and_change_log_events_are_not_checked() {
    let old = now() - 3600;
    let node = |id: &str, ts: u64| {
        let mut m = action_run(id, "http://t.internal/node", "POST", false);
        m["context"]["runId"] = json!(id);
        serde_json::from_str::<Value>(&to_raw_string(&signed(m, SECRET, ts))).unwrap()
    };
    let lines = vec![
        own("org_1.runs", 0, node("wfnr_old", old)),
        own("org_1.runs", 1, node("wfnr_new", now())),
        own("org_1.runs", 2, signed_run("r_old", old)),
        // Change-log events are not checked against the age: one signed an
        // hour ago (and recorded long ago: the record's timestamp is 1) is
        // still delivered. Were the check applied to change-log events, its
        // X-Port-Timestamp would make it stale.
        own(
            "org_1.change.log",
            0,
            serde_json::from_str::<Value>(&to_raw_string(&signed(
                change_log_event("http://t.internal/cl"),
                SECRET,
                old,
            )))
            .unwrap(),
        ),
    ];
    let out = dry_run_json(
        "stale",
        &lines,
        &json!([{"enabled": true}]),
        &[],
        &[
            ("PORT_CLIENT_SECRET", SECRET),
            ("PORT_ORG_ID", "org_1"),
            ("AGENT_MAX_MESSAGE_AGE_SECONDS", "60"),
        ],
    );
    let outcomes: Vec<&Value> = out[..4].iter().map(|l| &l["outcome"]).collect();
    assert_eq!(outcomes, ["stale", "delivered", "stale", "delivered"]);
    let patches: Vec<&Value> = out[0]["port_calls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["method"] == "PATCH")
        .collect();
    assert_eq!(patches.len(), 1, "{}", out[0]);
    assert_eq!(patches[0]["path"], "/v1/workflows/nodes/runs/wfnr_old");
    assert_eq!(patches[0]["body"]["status"], "COMPLETED");
    assert_eq!(patches[0]["body"]["result"], "FAILED");
    // The action run's report says why (a node run's report has no
    // summary field).
    let action_patch = out[2]["port_calls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["method"] == "PATCH" && c["path"] == "/v1/actions/runs/r_old")
        .cloned()
        .unwrap_or_else(|| panic!("a status report: {}", out[2]));
    assert_eq!(action_patch["body"]["status"], "FAILURE");
    let why = action_patch["body"]["summary"].as_str().unwrap_or_default();
    assert!(why.contains("AGENT_MAX_MESSAGE_AGE_SECONDS"), "{why}");
    assert_eq!(out[0]["request"], Value::Null, "no request for a stale run");
    assert_eq!(out[4]["summary"]["by_outcome"]["stale"], 2, "{}", out[4]);
}

/// Claim 24: a mapping whose method is not a string reports FAILURE with a
/// summary saying so, and sends nothing.
#[test]
fn a_method_that_is_not_a_string_reports_failure_saying_so() {
    let out = dry_run_json(
        "bad-method",
        &[own("org_1.runs", 0, signed_run("r_m", now()))],
        &json!([{"enabled": true, "method": "42"}]),
        &[],
        &[("PORT_CLIENT_SECRET", SECRET), ("PORT_ORG_ID", "org_1")],
    );
    assert_eq!(out[0]["outcome"], "request_failed", "{}", out[0]);
    let patch = out[0]["port_calls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["method"] == "PATCH" && c["path"] == "/v1/actions/runs/r_m")
        .cloned()
        .unwrap_or_else(|| panic!("a status report: {}", out[0]));
    assert_eq!(patch["body"]["status"], "FAILURE");
    let summary = patch["body"]["summary"].as_str().unwrap_or_default();
    assert!(summary.contains("method must be a string"), "{summary}");
}

/// Claim 2: `examples/generate.py` regenerates the recorded topic, byte for
/// byte (needs python3 with `cryptography`).
#[test]
fn generate_py_regenerates_the_recorded_topic() {
    let dir = std::env::temp_dir().join(format!("port-agent-generate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(root().join("examples/generate.py"), dir.join("generate.py")).unwrap();
    let o = Command::new("python3")
        .arg("generate.py")
        .current_dir(&dir)
        .output()
        .expect("python3 (with the cryptography package) runs examples/generate.py");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let made = std::fs::read(dir.join("recorded-topic.jsonl")).unwrap();
    let committed = std::fs::read(root().join("examples/recorded-topic.jsonl")).unwrap();
    assert!(
        made == committed,
        "examples/generate.py no longer gives examples/recorded-topic.jsonl"
    );
}
