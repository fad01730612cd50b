//! README: "Every command has `--help` with an example", and "`2` invalid
//! command line", for each command of the built binary.

use std::process::{Command, Output};

const COMMANDS: [&str; 5] = ["run", "check", "render", "dry-run", "record"];

fn agent(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_port-agent"))
        .args(args)
        .env_clear()
        .output()
        .expect("run port-agent")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn every_command_has_help_with_an_example() {
    for cmd in COMMANDS {
        let out = agent(&[cmd, "--help"]);
        let help = text(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{cmd} --help: {}", text(&out.stderr));
        assert!(
            help.contains(&format!("Usage: port-agent {cmd}")),
            "{cmd}: {help}"
        );
        // An example invocation of this very command after the options.
        let example = help
            .find("Example")
            .or_else(|| help.find("e.g."))
            .unwrap_or_else(|| panic!("{cmd}: no example in {help}"));
        let invocation = format!("port-agent {cmd}");
        assert!(
            help[example..]
                .lines()
                .any(|l| l.contains(&format!("{invocation} ")) || l.ends_with(&invocation)),
            "{cmd}: {help}"
        );
    }
    let out = agent(&["--help"]);
    let help = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0));
    for cmd in COMMANDS {
        assert!(help.contains(&format!("\n  {cmd} ")), "lists {cmd}: {help}");
    }
    assert!(help.contains("Exit codes: 0 success; 1 problems found"), "{help}");
    assert!(help.contains("Example: "), "{help}");
}

/// Issue 28: `run --help` shows a polling example as well as a Kafka one,
/// and says how `STREAMER_NAME` is spelled.
#[test]
fn run_help_has_a_kafka_and_a_polling_example() {
    let out = agent(&["run", "--help"]);
    let help = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let example = |needle: &str| {
        help.lines()
            .any(|l| l.contains(needle) && l.trim_end().ends_with("port-agent run"))
    };
    assert!(example("KAFKA_CONSUMER_GROUP_ID=org_1.agent"), "{help}");
    assert!(example("STREAMER_NAME=POLLING"), "{help}");
    assert!(help.contains("in upper case"), "{help}");
}

#[test]
fn an_invalid_command_line_exits_2_for_every_command() {
    let mut cases: Vec<Vec<&str>> = vec![vec!["no-such-command"], vec!["--no-such-flag"]];
    for cmd in COMMANDS {
        cases.push(vec![cmd, "--no-such-flag"]);
    }
    // Missing required options, and a value that does not parse.
    cases.push(vec!["render", "--message", "m.json"]);
    cases.push(vec!["dry-run"]);
    cases.push(vec!["record"]);
    cases.push(vec![
        "render",
        "--mapping",
        "a",
        "--message",
        "b",
        "--env",
        "NOEQUALS",
    ]);
    cases.push(vec!["dry-run", "--input", "x", "--assume-status", "many"]);
    cases.push(vec!["record", "--out", "x", "--max", "-1"]);
    for args in cases {
        let out = agent(&args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.starts_with("error: "), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}
