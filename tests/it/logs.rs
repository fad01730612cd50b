//! The agent's logs, from the built binary (README "Observability" and
//! "Settings"): text on a terminal (a pseudo-terminal from `script`) and
//! with `AGENT_LOG_FORMAT=text`, JSON when forced on a terminal, `RUST_LOG`
//! over `LOG_LEVEL`, and no secret in the output: not a mapped
//! `Authorization` header at debug level, not in start-up errors. (JSON on
//! a pipe is `observability.rs`; a SASL password at debug level is
//! `kafka_claims.rs`.)

use std::process::{Command, Output};
use std::time::Duration;

use crate::support::agent::mapping_file;
use crate::support::broker::{eventually, produce, run_ids, AgentProcess, Tansu};
use crate::support::{action_run, closed_port, signed, FakePort, FakeTarget, SECRET};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_port-agent");
const KAFKA_PASSWORD: &str = "kafka-password-never-printed-0123";

/// Settings that make `run` log one warning (a group id without the
/// organisation's prefix) and then stop at start-up: the mapping file
/// does not parse.
fn warn_then_stop(extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let broken = std::env::temp_dir().join(format!("logs-broken-{}.json", std::process::id()));
    std::fs::write(&broken, "[{\"enabled\": ").expect("write");
    let mut env: Vec<(String, String)> = [
        ("PORT_ORG_ID", "org_1"),
        ("PORT_CLIENT_ID", "client-id"),
        ("PORT_CLIENT_SECRET", SECRET),
        ("USING_LOCAL_PORT_INSTANCE", "true"),
        ("KAFKA_CONSUMER_BOOTSTRAP_SERVERS", "127.0.0.1:9"),
        ("KAFKA_CONSUMER_GROUP_ID", "other-group"),
        ("AGENT_HTTP_PORT", "0"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    env.push((
        "CONTROL_THE_PAYLOAD_CONFIG_PATH".into(),
        broken.display().to_string(),
    ));
    for (k, v) in extra {
        env.retain(|(key, _)| key != k);
        env.push((k.to_string(), v.to_string()));
    }
    env
}

const WARNING: &str =
    "KAFKA_CONSUMER_GROUP_ID 'other-group' does not start with 'org_1.'; Port's Kafka only authorises groups with that prefix";

/// `port-agent run` with `env` only; stdout and stderr are pipes.
fn run_piped(env: &[(String, String)]) -> Output {
    Command::new(BIN)
        .arg("run")
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("run the agent")
}

/// `port-agent run` on a pseudo-terminal (`script`); what the terminal
/// showed, and the exit code.
fn run_on_terminal(env: &[(String, String)]) -> (String, Option<i32>) {
    let out = Command::new("script")
        .args(["-q", "-e", "-c", &format!("{BIN} run"), "/dev/null"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("script (util-linux) runs the agent on a pseudo-terminal");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out.status.code(),
    )
}

/// Text without ANSI colour sequences.
fn plain(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The warning as a text line: `<timestamp>  WARN port_agent: <message>`.
fn assert_text_warning(output: &str) {
    let line = output
        .lines()
        .find(|l| l.contains(WARNING))
        .unwrap_or_else(|| panic!("no warning line in: {output}"));
    assert!(serde_json::from_str::<Value>(line).is_err(), "not JSON: {line}");
    let (timestamp, rest) = line.split_once(' ').expect("timestamp first");
    assert!(timestamp.ends_with('Z') && timestamp.contains('T'), "{line}");
    assert_eq!(rest.trim_start(), format!("WARN port_agent: {WARNING}"));
}

#[test]
fn on_a_terminal_logs_are_coloured_text() {
    let (shown, code) = run_on_terminal(&warn_then_stop(&[]));
    assert_eq!(code, Some(3), "{shown}");
    assert!(shown.contains("\u{1b}["), "ANSI colours on a terminal: {shown:?}");
    assert_text_warning(&plain(&shown).replace('\r', ""));
}

#[test]
fn agent_log_format_text_gives_plain_text_on_a_pipe_and_json_wins_on_a_terminal() {
    let out = run_piped(&warn_then_stop(&[("AGENT_LOG_FORMAT", "text")]));
    assert_eq!(out.status.code(), Some(3));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains('\u{1b}'), "no colours on a pipe: {stdout:?}");
    assert_text_warning(&stdout);

    let (shown, _) = run_on_terminal(&warn_then_stop(&[("AGENT_LOG_FORMAT", "json")]));
    let line = shown
        .lines()
        .find(|l| l.contains("does not start with"))
        .unwrap_or_else(|| panic!("{shown}"));
    let v: Value = serde_json::from_str(line.trim_end_matches('\r')).expect("a JSON line");
    assert_eq!(v["level"], "WARN");
    assert_eq!(v["message"], WARNING);
}

#[test]
fn rust_log_wins_over_log_level() {
    let warned = |extra: &[(&str, &str)]| {
        let out = run_piped(&warn_then_stop(extra));
        assert_eq!(out.status.code(), Some(3));
        String::from_utf8_lossy(&out.stdout).contains("does not start with")
    };
    assert!(warned(&[("LOG_LEVEL", "warn")]), "LOG_LEVEL alone");
    assert!(!warned(&[("LOG_LEVEL", "error")]), "LOG_LEVEL alone");
    assert!(
        warned(&[("LOG_LEVEL", "error"), ("RUST_LOG", "warn")]),
        "RUST_LOG=warn wins over LOG_LEVEL=error"
    );
    assert!(
        !warned(&[("LOG_LEVEL", "warn"), ("RUST_LOG", "error")]),
        "RUST_LOG=error wins over LOG_LEVEL=warn"
    );
}

#[test]
fn start_up_errors_print_no_secret() {
    let port_down = format!("http://127.0.0.1:{}", closed_port());
    // (what, settings, the start of the error line, the exit code)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str, i32);
    let cases: Vec<Case> = vec![
        ("a broken mapping", vec![], "error: mapping file ", 3),
        (
            "an invalid setting",
            vec![("AGENT_MAX_IN_FLIGHT", "many")],
            "error: AGENT_MAX_IN_FLIGHT: expected a whole number of messages, got 'many'",
            3,
        ),
        (
            "Kafka credentials that cannot be fetched",
            vec![
                ("USING_LOCAL_PORT_INSTANCE", "false"),
                ("KAFKA_CONSUMER_BOOTSTRAP_SERVERS", ""),
                ("KAFKA_CONSUMER_GROUP_ID", "org_1.agent"),
                ("PORT_API_BASE_URL", port_down.as_str()),
                ("AGENT_PORT_RETRY_MAX_ATTEMPTS", "1"),
            ],
            "error: cannot fetch Kafka credentials from Port: ",
            // A service that failed, not invalid settings.
            5,
        ),
        (
            "a SASL mechanism librdkafka refuses",
            vec![
                ("USING_LOCAL_PORT_INSTANCE", "false"),
                ("KAFKA_CONSUMER_BROKERS", "127.0.0.1:9"),
                ("KAFKA_CONSUMER_USERNAME", "user"),
                ("KAFKA_CONSUMER_SECURITY_PROTOCOL", "SASL_PLAINTEXT"),
                ("KAFKA_CONSUMER_AUTHENTICATION_MECHANISM", "NOT-A-MECHANISM"),
                ("KAFKA_CONSUMER_GROUP_ID", "org_1.agent"),
                ("PORT_API_BASE_URL", port_down.as_str()),
                ("AGENT_PORT_RETRY_MAX_ATTEMPTS", "1"),
            ],
            "error: Kafka consumer failed: Client creation error: Unsupported SASL mechanism: NOT-A-MECHANISM",
            3,
        ),
    ];
    for (what, extra, error, code) in cases {
        let mut extra = extra;
        extra.extend([
            ("LOG_LEVEL", "debug"),
            ("KAFKA_CONSUMER_PASSWORD", KAFKA_PASSWORD),
        ]);
        let mut env = warn_then_stop(&extra);
        if what != "a broken mapping" {
            let good = mapping_file("logs-good", &json!([{"enabled": true}]));
            env.retain(|(k, _)| k != "CONTROL_THE_PAYLOAD_CONFIG_PATH");
            env.push((
                "CONTROL_THE_PAYLOAD_CONFIG_PATH".into(),
                good.display().to_string(),
            ));
        }
        let out = run_piped(&env);
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(code), "{what}: {all}");
        assert!(
            String::from_utf8_lossy(&out.stderr).starts_with(error),
            "{what}: {all}"
        );
        for secret in [SECRET, KAFKA_PASSWORD] {
            assert!(!all.contains(secret), "{what}: {secret} printed: {all}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mapped_authorization_header_is_not_logged_at_debug_level() {
    let tansu = Tansu::start();
    tansu.create_topic("org_1.runs", 1).await;
    tansu.create_topic("org_1.change.log", 1).await;
    let (port, target) = (FakePort::start().await, FakeTarget::start().await);
    let token = "deploy-token-never-logged-0123456789";
    let mapping = mapping_file(
        "logs-authorization",
        &json!([{"enabled": true, "headers": {"Authorization": "\"Bearer \" + env.DEPLOY_TOKEN"}}]),
    );
    let msg = signed(action_run("r_auth", &target.url("/x"), "POST", true), SECRET, 1);
    produce(&tansu.bootstrap, "org_1.runs", vec![(0, msg)]).await;
    let env = crate::support::broker::agent_env(
        &tansu.bootstrap,
        &port.base(),
        &mapping,
        "org_1.logs",
        &[("LOG_LEVEL", "debug"), ("DEPLOY_TOKEN", token)],
    );
    let mut agent = AgentProcess::start(&env, "logs-authorization");
    eventually("the run delivered and reported", Duration::from_secs(60), || {
        run_ids(&target).contains_key("r_auth")
            && port
                .accepted()
                .iter()
                .any(|c| c.method == "PATCH" && c.path() == "/v1/actions/runs/r_auth")
    })
    .await;
    let sent = target.requests();
    assert_eq!(
        sent[0].header("authorization"),
        Some(format!("Bearer {token}").as_str())
    );
    agent.signal("-TERM");
    assert_eq!(agent.wait(Duration::from_secs(30)), Some(0));
    let log = agent.log_text();
    assert!(log.contains("\"level\":\"DEBUG\""), "debug level is on");
    for secret in [token, SECRET, "token-1"] {
        assert!(!log.contains(secret), "`{secret}` appears in the log");
    }
}
