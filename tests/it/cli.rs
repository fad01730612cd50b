//! The command line end to end: the built binary's output and exit codes for
//! `check`, `render` and `dry-run`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::support::{action_run, signed, SECRET};
use port_agent::json_canon::to_raw_string;
use serde_json::{json, Value};

const EXAMPLE_SECRET: &str = "example-client-secret-0123456789abcdef";

use crate::support::cli::{arg, run_cli as agent, stdout};

fn temp_file(name: &str, text: &str) -> PathBuf {
    crate::support::cli::temp_file("cli", name, text)
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

    // A file that cannot be read is exit 3, as in every command (issue 28).
    let o = agent(&["check", "--mapping", "/nonexistent/mapping.json"], &[]);
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot read mapping file /nonexistent/mapping.json"));
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
            // The Python agent's lines about the response, around its call.
            logs("Reporting the run response"),
            {"method": "PATCH", "path": "/v1/actions/runs/r_render1/response", "body": {"response": {"ok": true}}},
            logs("The run response was reported successfully "),
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
    let (lines, o) = crate::support::cli::dry_run_json(
        Path::new("examples/recorded-topic.jsonl"),
        Path::new("examples/mapping.json"),
        &[],
        &[("PORT_CLIENT_SECRET", EXAMPLE_SECRET)],
    );
    let out = stdout(&o);
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

/// The message of `crate::support::action_run` without signature headers, as a
/// newcomer writes it by hand.
fn unsigned_message(url: &str) -> PathBuf {
    let mut m = action_run("r_hand1", url, "POST", false);
    m.as_object_mut().expect("object").remove("headers");
    temp_file(&format!("unsigned-{}.json", url.len()), &m.to_string())
}

/// `render --format json` of `msg` with `mapping` and no settings: the
/// output and its one JSON object.
fn render_json(mapping: &Path, msg: &Path) -> (Output, Value) {
    let args = [
        "render",
        "--mapping",
        arg(mapping),
        "--message",
        arg(msg),
        "--format",
        "json",
    ];
    let o = agent(&args, &[]);
    let j = serde_json::from_str(stdout(&o).trim()).expect("one JSON object");
    (o, j)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn render_of_an_unsigned_message_without_a_secret_renders_and_says_so() {
    let msg = unsigned_message("http://t.local/hook");
    let o = agent(
        &[
            "render",
            "--mapping",
            "mappings/generic-webhook.json",
            "--message",
            arg(&msg),
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.starts_with("note: PORT_CLIENT_SECRET is not set: the signature was not verified\n"),
        "{out}"
    );
    assert!(out.contains("  decision: mapping #0\n"), "{out}");
    assert!(out.contains("  request:  POST http://t.local/hook\n"), "{out}");
    // Logs at warn by default: a clean render logs nothing.
    assert_eq!(stderr(&o), "");
}

#[test]
fn no_verify_skips_verification_even_with_the_secret_set() {
    let msg = unsigned_message("http://t.local/hook");
    let args = [
        "render",
        "--mapping",
        "mappings/generic-webhook.json",
        "--message",
        arg(&msg),
    ];
    let env = [("PORT_CLIENT_SECRET", EXAMPLE_SECRET)];
    let verified = agent(&args, &env);
    assert!(
        stdout(&verified).contains("  decision: skipped (missing signature headers)\n"),
        "{}",
        stdout(&verified)
    );
    let o = agent(&[&args[..], &["--no-verify", "--format", "json"]].concat(), &env);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let j: Value = serde_json::from_str(stdout(&o).trim()).expect("one JSON object");
    assert_eq!(j["mapping_index"], 0);
    assert_eq!(j["signatures_verified"], false);
    assert_eq!(j["request"]["url"], "http://t.local/hook");
    let text = agent(&[&args[..], &["--no-verify"]].concat(), &env);
    assert!(stdout(&text).starts_with("note: --no-verify: the signature was not verified\n"));
}

#[test]
fn an_injected_header_fails_in_render_as_it_fails_in_run() {
    let mapping = temp_file(
        "inject.json",
        r#"[{"enabled": true, "headers": {"X-A": "\"a\r\nInjected: yes\""}}]"#,
    );
    let msg = unsigned_message("http://t.local/inject");
    let (o, j) = render_json(&mapping, &msg);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // The same text HttpInvoker gives (both call invoke::validate).
    let why = "invalid value for header 'X-A': it contains a line break or another control character, \
               which HTTP does not allow (fix the mapping's headers)";
    assert_eq!(j["request"], Value::Null, "nothing was sent");
    assert_eq!(
        j["report"],
        json!({"status": "FAILURE", "summary": format!("Failed to invoke the webhook: {why}")})
    );
    let err = stderr(&o);
    assert!(!err.contains("target answered"), "{err}");
}

#[test]
fn logs_say_recorded_not_answered_and_follow_log_level() {
    let msg = unsigned_message("http://t.local/hook");
    let args = [
        "render",
        "--mapping",
        "mappings/generic-webhook.json",
        "--message",
        arg(&msg),
    ];
    let o = agent(&args, &[("LOG_LEVEL", "DEBUG")]);
    assert_eq!(o.status.code(), Some(0));
    let err = stderr(&o);
    assert!(
        err.contains("request recorded, not sent; the assumed answer is used"),
        "{err}"
    );
    assert!(!err.contains("target answered"), "{err}");
    assert!(!stdout(&o).contains("\"level\""), "logs stay off stdout");
}

#[test]
fn a_numeric_url_is_named_as_a_number() {
    let mapping = temp_file("url12.json", r#"[{"enabled": true, "url": 12}]"#);
    let msg = unsigned_message("http://t.local/x");
    let (_, j) = render_json(&mapping, &msg);
    assert_eq!(
        j["report"]["summary"],
        "Failed to build the request: the URL is a number (12), not a string: write it as a jq string \
         such as \"\\\"https://ci.example.com/hook\\\"\" or an expression that yields one"
    );
}

/// Counts over examples/recorded-topic.jsonl with examples/mapping.json,
/// worked out from the file (line: action, agent?):
/// - not evaluated: 11 (change log, agent false), 12 (deploy_service,
///   agent missing), 17 (value is not JSON): 20 - 3 = 17 evaluated;
/// - #0 GITLAB: lines 3, 4 → 2;
/// - #1 deploy_service: 1, 2, 13, 14, 20 → 5; `.payload.properties.replicas
///   | tonumber` fails on 13 (null), 14 (null), 20 ("many") → 3, first 13;
/// - #2 wfnr_ and not unowned: 8, 9 → 2; #3 change log: 10 → 1;
/// - #4 everything else but unowned_action: 5, 6, 7, 18, 19 → 5;
/// - no mapping: 15 (r_ex15), 16 (wfnr_ex16), both unowned_action.
#[test]
fn check_messages_reports_coverage_of_the_example_topic() {
    let o = agent(
        &[
            "check",
            "--mapping",
            "examples/mapping.json",
            "--messages",
            "examples/recorded-topic.jsonl",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1), "a field fails: exit 1");
    let out = stdout(&o);
    let report = out
        .split_once("examples/recorded-topic.jsonl:")
        .map(|(_, r)| r)
        .expect("the coverage report");
    assert_eq!(
        report,
        " 20 message(s), 17 evaluated, 0 malformed line(s)
  #0: selected by 2 message(s)
  #1: selected by 5 message(s)
  #1: field 'body.replicas': 3 evaluation(s) failed; first (line 13): null (null) cannot be parsed as a number
  #2: selected by 2 message(s)
  #3: selected by 1 message(s)
  #4: selected by 5 message(s)
  selected by no mapping: 2 message(s)
    line 15: run r_ex15 action unowned_action
    line 16: run wfnr_ex16 action unowned_action
  line 11: not evaluated: not for the agent
  line 12: not evaluated: not for the agent
  line 17: not evaluated: unparsable: message is not valid JSON: expected ident at line 1 column 2
"
    );
    // Without failing fields: exit 0.
    let ok = agent(
        &[
            "check",
            "--mapping",
            "mappings/generic-webhook.json",
            "--messages",
            "examples/recorded-topic.jsonl",
        ],
        &[],
    );
    assert_eq!(ok.status.code(), Some(0), "{}", stdout(&ok));
}

/// A recorded topic whose second of three lines is not UTF-8 (a Latin-1
/// `é`, byte 0xE9, in a value), written as bytes.
fn topic_with_a_latin1_line() -> PathBuf {
    let run = |id: &str| {
        to_raw_string(&signed(
            action_run(id, "http://t.internal/x", "POST", false),
            SECRET,
            1,
        ))
    };
    let mut bytes = format!("{}\n", run("r_utf8_1")).into_bytes();
    bytes.extend_from_slice(b"{\"value\": \"caf\xe9\"}\n");
    bytes.extend_from_slice(format!("{}\n", run("r_utf8_3")).as_bytes());
    let path = temp_file("latin1.jsonl", "");
    std::fs::write(&path, bytes).expect("write the topic");
    path
}

/// Issue 23, item 5: `dry-run` reports a line that is not UTF-8 with its
/// number, processes the others and exits 1 (it ended with exit 3,
/// "stream did not contain valid UTF-8", before reading any line).
#[test]
fn dry_run_reports_a_line_that_is_not_utf8_and_processes_the_others() {
    let input = topic_with_a_latin1_line();
    let mapping = temp_file("utf8-mapping.json", r#"[{"enabled": true}]"#);
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
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let lines: Vec<Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let delivered: Vec<(u64, &str)> = lines
        .iter()
        .filter(|l| l["outcome"] == "delivered")
        .map(|l| (l["line"].as_u64().unwrap(), l["run_id"].as_str().unwrap()))
        .collect();
    assert_eq!(delivered, [(1, "r_utf8_1"), (3, "r_utf8_3")]);
    let bad: Vec<&Value> = lines
        .iter()
        .filter(|l| l["outcome"] == "malformed_line")
        .collect();
    assert_eq!(bad.len(), 1, "{lines:?}");
    assert_eq!(bad[0]["line"], 2);
    let error = bad[0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("not UTF-8"), "{error}");
    assert_eq!(lines.last().unwrap()["summary"]["malformed_lines"], 1);
    // Text output names the line the same way.
    let o = agent(
        &["dry-run", "--input", arg(&input), "--mapping", arg(&mapping)],
        &[("PORT_CLIENT_SECRET", SECRET), ("PORT_ORG_ID", "org_1")],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("line 2: malformed, skipped: not UTF-8"),
        "{}",
        stdout(&o)
    );
}

/// Issue 23, item 5: `check --messages` reports the line that is not UTF-8
/// and exits 1, after evaluating the other lines.
#[test]
fn check_messages_reports_a_line_that_is_not_utf8() {
    let input = topic_with_a_latin1_line();
    let mapping = temp_file("utf8-check-mapping.json", r#"[{"enabled": true}]"#);
    let o = agent(
        &["check", "--mapping", arg(&mapping), "--messages", arg(&input)],
        &[("PORT_ORG_ID", "org_1")],
    );
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains(": 2 message(s), 2 evaluated, 1 malformed line(s)"),
        "{out}"
    );
    assert!(out.contains("  line 2: malformed, skipped: not UTF-8"), "{out}");
}
