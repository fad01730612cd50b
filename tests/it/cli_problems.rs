//! Issue 28 (operator trial, round two), through the built binary: `check`
//! lists every error of a mapping file and refuses what `render` reports as
//! a failure for every message; one exit code for a missing mapping file in
//! every command; dry-run's warnings name their line and run id, and a field
//! that fails to decrypt shows in its message's block.

use std::path::PathBuf;

use crate::support::cli::{all_output, arg, run_cli as agent, stdout};
use crate::support::{action_run, signed, SECRET};
use port_agent::json_canon::to_raw_string;
use serde_json::{json, Value};

fn temp_file(name: &str, text: &str) -> PathBuf {
    crate::support::cli::temp_file("cli-problems", name, text)
}

/// Each of `lines` is in `out`, in this order.
fn assert_lines_in_order(out: &str, lines: &[String]) {
    let mut from = 0;
    for line in lines {
        let at = out[from..]
            .find(line.as_str())
            .unwrap_or_else(|| panic!("missing (or out of order) `{line}` in:\n{out}"));
        from += at + line.len();
    }
}

#[test]
fn check_lists_every_error_of_a_file_with_mapping_field_and_position() {
    let file = temp_file(
        "seven-errors.json",
        r#"[
  {"enabled": ".a ==", "url": 5},
  {"body": {"x": ".b |", "y": ".x | frobnicate"}},
  {"method": 5, "url": "\"not a url\""},
  {"url": {"host": ".h"}},
  {"enabled": true, "url": "\"https://fine.example.com/\""}
]"#,
    );
    let o = agent(&["check", "--mapping", arg(&file)], &[]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{}", all_output(&o));
    let at = |rest: &str| format!("error: {}: mapping #{rest}", file.display());
    assert_lines_in_order(
        &out,
        &[
            format!("{}: 7 error(s)", file.display()),
            at("0, field 'enabled': syntax error"),
            at("0, field 'url': the URL is a number (5), not a string"),
            at("1, field 'body.x': syntax error"),
            at("1, field 'body.y': undefined filter 'frobnicate' at position 5"),
            at("2, field 'method': the method must be a string, got 5"),
            at("2, field 'url': the URL 'not a url' is not a valid absolute http(s) URL"),
            at("3, field 'url': the URL is an object ({\"host\":\".h\"}), not a string"),
        ],
    );
    assert_eq!(
        out.lines().filter(|l| l.starts_with("error: ")).count(),
        7,
        "{out}"
    );
    assert!(!out.contains("#4"), "the good mapping has no error: {out}");
}

/// `[{"url": 5}]` passed `check` while `render` reported FAILURE "the URL
/// is a number (5)" for every message: `check` now refuses it with the same
/// words.
#[test]
fn check_refuses_a_literal_url_or_method_render_reports_as_failure() {
    let message = temp_file(
        "message.json",
        &to_raw_string(&action_run("r_lit", "http://t.internal/x", "POST", false)),
    );
    for (name, mapping, field) in [
        ("url-number.json", r#"[{"url": 5}]"#, "url"),
        ("url-bool.json", r#"[{"url": "true"}]"#, "url"),
        (
            "url-ftp.json",
            r#"[{"url": "\"ftp://files.example.com/x\""}]"#,
            "url",
        ),
        ("method-number.json", r#"[{"method": 5}]"#, "method"),
        ("method-list.json", r#"[{"method": "[\"POST\"]"}]"#, "method"),
    ] {
        let file = temp_file(name, mapping);
        let checked = agent(&["check", "--mapping", arg(&file)], &[]);
        let out = stdout(&checked);
        assert_eq!(
            checked.status.code(),
            Some(1),
            "{mapping}: {}",
            all_output(&checked)
        );
        let prefix = format!("error: {}: mapping #0, field '{field}': ", file.display());
        let reason = out
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .unwrap_or_else(|| panic!("{mapping}: no `{prefix}…` in:\n{out}"))
            .to_string();
        let rendered = agent(
            &[
                "render",
                "--mapping",
                arg(&file),
                "--message",
                arg(&message),
                "--format",
                "json",
            ],
            &[],
        );
        assert_eq!(rendered.status.code(), Some(0), "{}", all_output(&rendered));
        let shown: Value = serde_json::from_slice(&rendered.stdout).expect("render JSON");
        assert_eq!(shown["report"]["status"], "FAILURE", "{mapping}: {shown}");
        let summary = shown["report"]["summary"].as_str().unwrap_or_default();
        assert!(
            summary.contains(&reason),
            "{mapping}: render said {summary:?}, check {reason:?}"
        );
    }
    // A URL or method from the message is not known before a message: fine.
    let file = temp_file(
        "from-message.json",
        r#"[{"url": ".payload.url", "method": ".m"}]"#,
    );
    let o = agent(&["check", "--mapping", arg(&file)], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", all_output(&o));
}

/// The settings of `run` (Kafka) with `mapping`; Port is a closed port on
/// 127.0.0.1, so nothing leaves the machine, even if start-up calls Port.
fn run_env(mapping: &str) -> Vec<(&'static str, String)> {
    vec![
        ("PORT_ORG_ID", "org_1".to_string()),
        ("PORT_CLIENT_ID", "id".to_string()),
        ("PORT_CLIENT_SECRET", SECRET.to_string()),
        ("KAFKA_CONSUMER_GROUP_ID", "org_1.g".to_string()),
        ("AGENT_HTTP_PORT", "0".to_string()),
        ("PORT_API_BASE_URL", "http://127.0.0.1:9".to_string()),
        ("CONTROL_THE_PAYLOAD_CONFIG_PATH", mapping.to_string()),
    ]
}

/// README's exit-code table: a mapping file that cannot be read is exit 3
/// in every command; one that does not compile is exit 1 in `check` (a
/// problem found) and 3 in the commands that cannot run with it, which
/// name every error too (runbook: "a mapping that stopped compiling").
#[test]
fn exit_codes_for_a_missing_or_broken_mapping_are_one_table() {
    let missing = "/nonexistent/port-agent/mapping.json";
    let broken = temp_file("broken.json", r#"[{"method": "if"}, {"url": ".x |"}]"#);
    let message = temp_file(
        "exit-message.json",
        &to_raw_string(&action_run("r_exit", "http://t.internal/x", "POST", false)),
    );
    let broken = arg(&broken).to_string();
    for (mapping, check, others) in [(missing, 3, 3), (broken.as_str(), 1, 3)] {
        let no_env = Vec::new;
        let table = [
            ("check", vec!["check", "--mapping", mapping], no_env(), check),
            (
                "render",
                vec!["render", "--mapping", mapping, "--message", arg(&message)],
                no_env(),
                others,
            ),
            (
                "dry-run",
                vec![
                    "dry-run",
                    "--mapping",
                    mapping,
                    "--input",
                    "examples/recorded-topic.jsonl",
                ],
                no_env(),
                others,
            ),
            ("run", vec!["run"], run_env(mapping), others),
        ];
        for (command, args, env, code) in table {
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let o = agent(&args, &env);
            let text = all_output(&o);
            assert_eq!(o.status.code(), Some(code), "{command} with {mapping}: {text}");
            if mapping == missing {
                assert!(
                    String::from_utf8_lossy(&o.stderr)
                        .contains(&format!("error: cannot read mapping file {missing}")),
                    "{command}: {text}"
                );
            } else {
                // Every error, in `check` one a line, elsewhere in one.
                assert!(text.contains("mapping #0, field 'method'"), "{command}: {text}");
                assert!(text.contains("mapping #1, field 'url'"), "{command}: {text}");
            }
        }
    }
}

/// A recorded topic of three runs: delivered, a bad signature, and a token
/// that does not decrypt; and a mapping that decrypts the token.
fn topic_with_a_bad_signature_and_a_bad_token() -> (PathBuf, PathBuf) {
    let run = |id: &str, token: &str, secret: &str| {
        let mut m = action_run(id, "http://t.internal/x", "POST", false);
        m["payload"]["properties"]["token"] = json!(token);
        to_raw_string(&signed(m, secret, 1))
    };
    let lines = [
        run("r_good", &crate::support::encrypt("tok-plain-1"), SECRET),
        run(
            "r_badsig",
            &crate::support::encrypt("tok-plain-2"),
            "another-secret-0123456789abcdefghij",
        ),
        run("r_badtok", "not base64 at all!", SECRET),
    ];
    let input = temp_file("warn-topic.jsonl", &(lines.join("\n") + "\n"));
    let mapping = temp_file(
        "warn-mapping.json",
        r#"[{"fieldsToDecryptPaths": ["payload.properties.token"], "body": {"run": ".context.runId"}}]"#,
    );
    (input, mapping)
}

const DECRYPT_WARNING: &str = "mapping #0, fieldsToDecryptPaths 'payload.properties.token': could not decrypt: value is not valid base64; the field is left unchanged";

/// dry-run's warnings on stderr named neither the line nor the run, and a
/// field that did not decrypt showed in neither its block nor the JSON
/// `warnings`.
#[test]
fn dry_run_warnings_name_their_line_and_run_and_show_a_failed_decryption() {
    let (input, mapping) = topic_with_a_bad_signature_and_a_bad_token();
    let env = [
        ("PORT_CLIENT_SECRET", SECRET),
        ("PORT_ORG_ID", "org_1"),
        ("AGENT_LOG_FORMAT", "text"),
    ];
    let o = agent(
        &["dry-run", "--input", arg(&input), "--mapping", arg(&mapping)],
        &env,
    );
    assert_eq!(o.status.code(), Some(0), "{}", all_output(&o));
    let out = stdout(&o);
    // The block of line 3 has its warning; line 1's has none.
    let block = |n: usize| {
        out.split("\n\n")
            .find(|b| b.starts_with(&format!("line {n} ")))
            .unwrap_or_else(|| panic!("no block of line {n} in:\n{out}"))
            .to_string()
    };
    assert!(
        block(3).contains(&format!("  warning:  {DECRYPT_WARNING}")),
        "{}",
        block(3)
    );
    assert!(!block(1).contains("warning"), "{}", block(1));
    assert!(!out.contains("tok-plain"), "{out}");
    // Every WARN line on stderr names its line and run.
    let err = String::from_utf8_lossy(&o.stderr);
    let warns: Vec<&str> = err.lines().filter(|l| l.contains("WARN")).collect();
    assert!(warns.len() >= 2, "{err}");
    for w in &warns {
        let named = [(2, "r_badsig"), (3, "r_badtok")]
            .iter()
            .any(|(line, run)| w.contains(&format!("line={line}")) && w.contains(&format!("run_id={run}")));
        assert!(named, "a WARN line without its line and run: {w}\n{err}");
    }
    assert!(
        warns
            .iter()
            .any(|w| w.contains("signature does not match") && w.contains("line=2")),
        "{err}"
    );
    assert!(
        warns
            .iter()
            .any(|w| w.contains("could not decrypt") && w.contains("line=3")),
        "{err}"
    );

    // JSON: the warning in line 3's object; JSON log lines carry the line.
    let env = [
        ("PORT_CLIENT_SECRET", SECRET),
        ("PORT_ORG_ID", "org_1"),
        ("AGENT_LOG_FORMAT", "json"),
    ];
    let (objects, o) = crate::support::cli::dry_run_json(&input, &mapping, &[], &env);
    let of_line = |n: u64| {
        objects
            .iter()
            .find(|v| v["line"] == n)
            .expect("the line's object")
    };
    assert_eq!(of_line(3)["warnings"], json!([DECRYPT_WARNING]));
    assert_eq!(of_line(3)["run_id"], "r_badtok");
    assert_eq!(of_line(1)["warnings"], json!([]));
    let summary = &objects.last().expect("summary")["summary"]["errors"];
    assert!(
        summary
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["line"] == 3 && e["run_id"] == "r_badtok")),
        "{summary}"
    );
    let logs: Vec<Value> = String::from_utf8_lossy(&o.stderr)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON log line"))
        .collect();
    assert!(logs.len() >= 2, "{logs:?}");
    for l in &logs {
        let spans = l["spans"].as_array().cloned().unwrap_or_default();
        let dry = spans.iter().find(|s| s["name"] == "dry_run");
        let named = dry.is_some_and(|s| {
            [(2, "r_badsig"), (3, "r_badtok")]
                .iter()
                .any(|(line, run)| s["line"] == *line && s["run_id"] == *run)
        });
        assert!(named, "a log line without its line and run: {l}");
    }
}

/// README's exit-code table: Port failing to hand out the Kafka credentials
/// at start-up (here: Port unreachable) is exit 5, a service that failed,
/// not 3, "invalid settings".
#[test]
fn run_exits_5_when_port_does_not_hand_out_the_kafka_credentials() {
    // Nothing listens at Port's address: every Port call fails at once.
    let mut env = run_env("examples/mapping.json");
    env.push(("AGENT_PORT_RETRY_MAX_ATTEMPTS", "1".to_string()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let o = agent(&["run"], &env);
    let text = all_output(&o);
    assert_eq!(o.status.code(), Some(5), "{text}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("error: cannot fetch Kafka credentials from Port: "),
        "{text}"
    );
}

/// The README's exit-code table lists exactly the codes of `cli::Exit`, in
/// its order.
#[test]
fn the_readme_lists_every_exit_code_and_no_other() {
    let readme = std::fs::read_to_string(crate::support::cli::root().join("README.md")).expect("README.md");
    let table: Vec<u8> = readme
        .lines()
        .skip_while(|l| !l.starts_with("| code | meaning |"))
        .skip(2)
        .take_while(|l| l.starts_with("| `"))
        .map(|l| {
            let code = l.trim_start_matches("| `").split('`').next().unwrap_or("");
            code.parse().unwrap_or_else(|_| panic!("not an exit code: {l}"))
        })
        .collect();
    let codes: Vec<u8> = port_agent::cli::Exit::ALL.iter().map(|e| e.code()).collect();
    assert_eq!(table, codes);
}
