//! The command line end to end: the built binary's output and exit codes for
//! `check`, `render` and `dry-run`.

mod support;

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use port_agent::json_canon::to_raw_string;
use serde_json::{json, Value};
use support::{action_run, signed, SECRET};

const EXAMPLE_SECRET: &str = "example-client-secret-0123456789abcdef";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn agent(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_port-agent"))
        .args(args)
        .current_dir(root())
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("run port-agent")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn temp_file(name: &str, text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("port-agent-cli-{}-{name}", std::process::id()));
    std::fs::File::create(&path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .expect("write temp file");
    path
}

fn arg(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn check_lists_mappings_and_exits_zero() {
    let o = agent(&["check", "--mapping", "tests/fixtures/render-mapping.json"], &[]);
    assert_eq!(o.status.code(), Some(0));
    let out = stdout(&o);
    assert!(
        out.contains("note: PORT_CLIENT_ID/PORT_CLIENT_SECRET are not set"),
        "{out}"
    );
    assert!(
        out.contains("tests/fixtures/render-mapping.json: 2 mapping(s) compiled"),
        "{out}"
    );
    assert!(
        out.contains("  #0: enabled: .action == \"other\"; sets: nothing (defaults)"),
        "{out}"
    );
    assert!(
        out.contains("  #1: enabled: .action == \"deploy_service\"; sets: body, headers, query, report"),
        "{out}"
    );
}

#[test]
fn check_names_file_mapping_field_and_position_of_a_jq_error() {
    let bad = temp_file(
        "bad.json",
        r#"[{"enabled": true}, {"url": "\"http://x/\" + .context.runId |"}]"#,
    );
    let o = agent(&["check", "--mapping", arg(&bad)], &[]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(
        out.contains(&format!(
            "error: {}: mapping #1, field 'url': syntax error",
            bad.display()
        )),
        "{out}"
    );
    assert!(out.contains("at the end of the expression"), "{out}");

    let bad = temp_file("undefined.json", r#"[{"body": {"a": ".x | frobnicate"}}]"#);
    let out = stdout(&agent(&["check", "--mapping", arg(&bad)], &[]));
    assert!(
        out.contains("mapping #0, field 'body.a': undefined filter 'frobnicate' at position 5"),
        "{out}"
    );

    let o = agent(&["check", "--mapping", "/nonexistent/mapping.json"], &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("cannot read mapping file /nonexistent/mapping.json"));
}

#[test]
fn a_broken_mapping_stops_run_at_start_up() {
    let bad = temp_file("run-bad.json", r#"[{"method": "if"}]"#);
    let o = agent(
        &["run"],
        &[
            ("PORT_ORG_ID", "org_1"),
            ("PORT_CLIENT_ID", "id"),
            ("PORT_CLIENT_SECRET", SECRET),
            ("KAFKA_CONSUMER_GROUP_ID", "org_1.g"),
            ("CONTROL_THE_PAYLOAD_CONFIG_PATH", arg(&bad)),
        ],
    );
    assert_eq!(o.status.code(), Some(3));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("mapping #0, field 'method'"), "{err}");
}

#[test]
fn a_missing_setting_stops_run_with_one_line_naming_it() {
    let o = agent(&["run"], &[("PORT_ORG_ID", "org_1")]);
    assert_eq!(o.status.code(), Some(3));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr).trim(),
        "error: PORT_CLIENT_ID: required, but not set"
    );
}

#[test]
fn render_json_for_a_fixed_case() {
    let o = agent(
        &[
            "render",
            "--mapping",
            "tests/fixtures/render-mapping.json",
            "--message",
            "tests/fixtures/render-message.json",
            "--timestamp",
            "1700000000",
            "--assume-body",
            r#"{"ok":true}"#,
            "--format",
            "json",
        ],
        &[
            ("PORT_CLIENT_SECRET", SECRET),
            ("DEPLOY_TOKEN", "dep-secret-token"),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let logs = |m: &str| json!({"method": "POST", "path": "/v1/actions/runs/r_render1/logs", "body": {"message": m}});
    let expected = json!({
        "mapping_index": 1,
        "skipped": null,
        "passed_over": [{"index": 0, "reason": "enabled yielded false"}],
        "request": {
            "method": "POST",
            "url": "http://deployer.internal/deploy?ref=1.2.3",
            "query": {"ref": "1.2.3"},
            "headers": {
                "Authorization": "<redacted>",
                "X-Env": "prod",
                "Content-Type": "application/json",
                "X-Port-Timestamp": "1700000000",
                "X-Port-Signature": "<redacted>",
                // The run's id names it for the target (AGENT_IDEMPOTENCY_HEADERS
                // is on by default).
                "X-Port-Run-Id": "r_render1",
                "Idempotency-Key": "r_render1"
            },
            "body": {"service": "svc-a", "version": "1.2.3", "replicas": 6}
        },
        "report": {"status": "SUCCESS", "link": "https://deployer.internal/runs/r_render1"},
        "port_calls": [
            logs("An action message has been received"),
            logs("Preparing the payload for the request"),
            logs("Sending the request"),
            logs("Action invocation has completed successfully with status code: 200"),
            {"method": "PATCH", "path": "/v1/actions/runs/r_render1/response", "body": {"response": {"ok": true}}},
            {"method": "PATCH", "path": "/v1/actions/runs/r_render1",
             "body": {"status": "SUCCESS", "link": "https://deployer.internal/runs/r_render1"}},
            logs("Port agent finished processing the action run")
        ],
        "signatures_verified": true
    });
    assert_eq!(stdout(&o).trim(), to_raw_string(&expected));
    assert!(!stdout(&o).contains("dep-secret-token"));
}

#[test]
fn render_text_explains_the_selection() {
    let o = agent(
        &[
            "render",
            "--mapping",
            "tests/fixtures/render-mapping.json",
            "--message",
            "tests/fixtures/render-message.json",
        ],
        &[("DEPLOY_TOKEN", "dep-secret-token")],
    );
    assert_eq!(o.status.code(), Some(0));
    let out = stdout(&o);
    assert!(
        out.contains("note: PORT_CLIENT_SECRET is not set: the signature was not verified"),
        "{out}"
    );
    assert!(
        out.contains("mapping #0 passed over: enabled yielded false"),
        "{out}"
    );
    assert!(out.contains("  decision: mapping #1"), "{out}");
    assert!(
        out.contains("  request:  POST http://deployer.internal/deploy?ref=1.2.3"),
        "{out}"
    );
    assert!(!out.contains("dep-secret-token"), "{out}");
}

#[test]
fn dry_run_over_the_examples() {
    let o = agent(
        &[
            "dry-run",
            "--input",
            "examples/recorded-topic.jsonl",
            "--mapping",
            "examples/mapping.json",
            "--format",
            "json",
        ],
        &[("PORT_CLIENT_SECRET", EXAMPLE_SECRET)],
    );
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let out = stdout(&o);
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(lines.len(), 21, "20 messages and a summary");
    let summary = &lines[20];
    assert_eq!(summary["signatures_verified"], true);
    assert_eq!(
        summary["summary"]["by_outcome"],
        json!({"bad_signature": 1, "delivered": 13, "missing_signature": 1, "no_mapping": 2, "not_for_agent": 2, "unparsable": 1})
    );
    // The first enabled mapping of examples/mapping.json wins, line by line:
    //   #0 GITLAB invocations:                      lines 3, 4            → 2
    //   #1 `.action == "deploy_service"`:           lines 1, 2, 20        → 3
    //      (13 is deploy_service too, but its signature is bad: no mapping)
    //   #2 run ids starting `wfnr_` (not unowned):  lines 8, 9            → 2
    //   #3 change-log events (`changelogDestination`): line 10           → 1
    //   #4 anything but `unowned_action`:           lines 5, 6, 7, 18, 19 → 5
    //   none: 11, 12 not for the agent; 13 bad and 14 missing signature;
    //         15, 16 `unowned_action` (no mapping); 17 unparsable         → 7
    assert_eq!(
        summary["summary"]["by_mapping"],
        json!({"0": 2, "1": 3, "2": 2, "3": 1, "4": 5, "none": 7})
    );
    // The derivation above, line by line.
    let by_line: Vec<(u64, Value)> = lines[..20]
        .iter()
        .map(|l| (l["line"].as_u64().unwrap(), l["mapping_index"].clone()))
        .collect();
    let expected_index = |line: u64| match line {
        3 | 4 => json!(0),
        1 | 2 | 20 => json!(1),
        8 | 9 => json!(2),
        10 => json!(3),
        5 | 6 | 7 | 18 | 19 => json!(4),
        _ => Value::Null,
    };
    for (line, index) in &by_line {
        assert_eq!(index, &expected_index(*line), "mapping of line {line}");
    }
    let outcome = |line: u64| {
        lines
            .iter()
            .find(|l| l["line"] == line)
            .map(|l| l["outcome"].clone())
            .unwrap()
    };
    assert_eq!(outcome(13), "bad_signature");
    assert_eq!(outcome(14), "missing_signature");
    assert_eq!(outcome(17), "unparsable");
    // kcat -J (line 18) and a bare object (line 19) are read like records.
    assert_eq!(lines[17]["run_id"], "r_ex18");
    assert_eq!(lines[18]["run_id"], "r_ex19");
    // The decrypted GitLab token never shows.
    assert_eq!(lines[2]["request"]["body"]["token"], "<redacted>");
    assert!(!out.contains("glptt-example-trigger-token"));
}

#[test]
fn dry_run_without_a_secret_says_signatures_were_not_verified() {
    let o = agent(
        &[
            "dry-run",
            "--input",
            "examples/recorded-topic.jsonl",
            "--mapping",
            "examples/mapping.json",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).starts_with("note: PORT_CLIENT_SECRET is not set: signatures were not verified"));
}

#[test]
fn malformed_lines_are_reported_and_the_rest_processed() {
    let run = |id: &str| {
        to_raw_string(&signed(
            action_run(id, "http://t.internal/x", "POST", false),
            SECRET,
            1,
        ))
    };
    let kcat = json!({"topic": "org_1.runs", "partition": 1, "offset": 7, "tstype": "create", "ts": 1,
                      "broker": 0, "key": null, "payload": run("r_kcat")});
    let own = json!({"topic": "org_1.runs", "partition": 2, "offset": 9, "timestamp": 1, "key": "k",
                     "headers": {}, "value": serde_json::from_str::<Value>(&run("r_own")).unwrap()});
    let text = format!("{}\n{}\nthis is not json\n{}\n[1,2]\n", kcat, run("r_bare"), own);
    let input = temp_file("mixed.jsonl", &text);
    let mapping = temp_file("catch-all.json", r#"[{"enabled": true}]"#);
    let o = agent(
        &[
            "dry-run",
            "--input",
            arg(&input),
            "--mapping",
            arg(&mapping),
            "--format",
            "json",
        ],
        &[("PORT_CLIENT_SECRET", SECRET), ("PORT_ORG_ID", "org_1")],
    );
    assert_eq!(o.status.code(), Some(1), "a malformed line makes the exit code 1");
    let lines: Vec<Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let delivered: Vec<(u64, &str, i64)> = lines
        .iter()
        .filter(|l| l["outcome"] == "delivered")
        .map(|l| {
            (
                l["line"].as_u64().unwrap(),
                l["run_id"].as_str().unwrap(),
                l["offset"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        delivered,
        vec![(1, "r_kcat", 7), (2, "r_bare", 2), (4, "r_own", 9)]
    );
    let malformed: Vec<u64> = lines
        .iter()
        .filter(|l| l["outcome"] == "malformed_line")
        .map(|l| l["line"].as_u64().unwrap())
        .collect();
    assert_eq!(malformed, vec![3, 5]);
    assert_eq!(lines.last().unwrap()["summary"]["malformed_lines"], 2);
}

#[test]
fn dry_run_makes_no_network_call() {
    // Everything points at a listener that records connections.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let msg = signed(
        action_run("r_net", &format!("{url}/target"), "POST", true),
        SECRET,
        1,
    );
    let input = temp_file("net.jsonl", &format!("{msg}\n"));
    let mapping = temp_file("net-mapping.json", r#"[{"enabled": true}]"#);
    let o = agent(
        &[
            "dry-run",
            "--input",
            arg(&input),
            "--mapping",
            arg(&mapping),
            "--format",
            "json",
        ],
        &[
            ("PORT_CLIENT_SECRET", SECRET),
            ("PORT_ORG_ID", "org_1"),
            ("PORT_CLIENT_ID", "id"),
            ("PORT_API_BASE_URL", &url),
            ("HTTP_PROXY", &url),
            ("HTTPS_PROXY", &url),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout(&o).contains(r#""outcome":"delivered""#));
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("dry-run connected to the network: {other:?}"),
    }
}
