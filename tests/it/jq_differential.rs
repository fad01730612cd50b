//! Differential test: a corpus of mapping-style expressions runs through the
//! agent's engine and through the `jq` binary (Debian's jq 1.6, what the
//! Python agent's pyjq runs; installed by the test set-up), and the first
//! outputs must be the same JSON text. When jq fails, the agent must fail in
//! the same way: both at compile time (jq exits 3) or both at run time.
//!
//! The corpus lives in `tests/jq_corpus.txt`, one expression per line
//! (`#` starts a comment). Every expression runs on `INPUT` below with the
//! environment `ENV`. A line `known-difference: EXPR ⇒ OURS` is a documented
//! difference (README, "Known differences of the jq engine"): the agent must
//! give `OURS` (a JSON text, `error` or `compile-error`) and jq 1.6
//! something else.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use port_agent::json_canon::to_raw_string;
use port_agent::mapping::jq::{from_val, to_val, Budget, JqEnv, JqProgram, EVAL_THREAD_STACK};
use serde_json::Value;

const INPUT: &str = r#"{"action":"deploy_service","resourceType":"run","status":"TRIGGERED",
"trigger":{"by":{"orgId":"org_42","userId":"u_7","user":{"email":"Ana.Lopez@example.com","firstName":"Ana","lastName":"Müller-Łukasz","nickname":"Zoë 🚀"}},"origin":"UI","at":"2026-11-01T12:00:00.000Z"},
"context":{"entity":"svc-a","blueprint":"microservice","runId":"r_abc123"},
"payload":{"entity":{"identifier":"svc-a","title":"Service A — prod","team":["platform","sre"],"properties":{"region":"eu-west-1","tier":2,"cost":12.5,"labels":{"app":"a","env":"prod","x-team":"core"}}},
"action":{"identifier":"deploy","invocationMethod":{"type":"WEBHOOK","agent":true,"synchronized":true,"method":"post","url":"http://deployer.internal:8080/deploy","groupName":"acme/platform","projectName":"svc-a"}},
"properties":{"version":"1.2.3","replicas":3,"ratio":0.5,"dry":false,"tags":["b","a","c"],"branch":null,"namespace":"prod","ports":[80,443,8080],"notes":"déjà vu ✓","items":[{"n":"x","v":2},{"n":"y","v":1},{"n":"x","v":5}],
"comment":"Naïve café: über-fast ✓ 日本語 — straße","mixed":[1,null,"a",true,2.5],"nums":{"zero":0,"neg":-3,"half":0.5,"negfrac":-0.25,"big":1234567890123,"tiny":1e-07,"exp":1.5e+300},"x-request-id":"req-9","my-key":{"inner-key":"v"},"empty":"","emptyArr":[],"emptyObj":{}}},
"headers":{}}"#;

const ENV: &[(&str, &str)] = &[
    ("GITLAB_URL", "https://gitlab.example.com/"),
    ("TF_TOKEN", "tf-tok"),
    ("acme_platform_svc-a", "trigger-tok"),
];

/// What an expression gave: its first output as compact JSON text (`null`
/// when there is none, as a mapping field), or the kind of failure.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Value(String),
    CompileError,
    RuntimeError,
}

fn jq_binary() -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("jq"))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!("the jq binary is not on PATH: run the README's test command, which installs it")
    })
}

/// Parse and reprint, so that both sides use one writer for strings;
/// numbers keep their text (arbitrary precision).
fn normalise(text: &str) -> String {
    serde_json::from_str::<Value>(text)
        .map(|v| to_raw_string(&v))
        .unwrap_or_else(|_| text.to_string())
}

/// jq's outcome. Only the first output line is read, then jq is stopped, so
/// an expression with endless outputs (`repeat`) does not hang the test.
fn reference(jq: &PathBuf, expr: &str) -> Outcome {
    let mut child = Command::new(jq)
        .arg("-c")
        .arg(expr)
        .env_clear()
        .envs(ENV.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot run jq");
    // jq does not read its input when the expression does not compile.
    let _ = child.stdin.take().expect("stdin").write_all(INPUT.as_bytes());
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("read jq's output");
    if !first.trim().is_empty() {
        // Stopping jq after its first output is not a failure.
        let _ = child.kill();
        let _ = child.wait();
        return Outcome::Value(normalise(first.trim()));
    }
    let status = child.wait().expect("wait for jq");
    match status.code() {
        Some(0) => Outcome::Value("null".into()),
        Some(3) => Outcome::CompileError,
        _ => Outcome::RuntimeError,
    }
}

fn ours(expr: &str, env: &JqEnv, input: &Value) -> Outcome {
    let Ok(program) = JqProgram::compile(expr) else {
        return Outcome::CompileError;
    };
    match program.first(&to_val(input), env, Budget::default()) {
        Ok(Some(v)) => match from_val(&v) {
            Ok(v) => Outcome::Value(normalise(&to_raw_string(&v))),
            Err(_) => Outcome::RuntimeError,
        },
        Ok(None) => Outcome::Value("null".into()),
        Err(_) => Outcome::RuntimeError,
    }
}

/// Run every expression of `tests/<file>` through both engines; how many
/// were checked and what differs.
fn run_corpus(file: &str) -> (usize, Vec<String>) {
    let jq = jq_binary();
    let corpus_path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join(file);
    let corpus = std::fs::read_to_string(&corpus_path).unwrap_or_else(|e| panic!("read tests/{file}: {e}"));
    let input: Value = serde_json::from_str(INPUT).expect("INPUT is JSON");
    let env = JqEnv::new(ENV.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let mut checked = 0;
    let mut failures = Vec::new();
    for line in corpus
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        if let Some(rest) = line.strip_prefix("known-difference:") {
            let Some((expr, want)) = rest.split_once('⇒') else {
                failures.push(format!("{line}\n    a known difference needs `EXPR ⇒ OURS`"));
                continue;
            };
            let (expr, want) = (expr.trim(), want.trim());
            let want = match want {
                "error" => Outcome::RuntimeError,
                "compile-error" => Outcome::CompileError,
                text => Outcome::Value(normalise(text)),
            };
            let (got, jq_gives) = (ours(expr, &env, &input), reference(&jq, expr));
            if got != want {
                failures.push(format!("{expr}\n    ours: {got:?}\n    documented: {want:?}"));
            }
            if jq_gives == want {
                failures.push(format!(
                    "{expr}\n    jq 1.6 gives the documented output {want:?}: not a difference"
                ));
            }
            continue;
        }
        checked += 1;
        let (got, want) = (ours(line, &env, &input), reference(&jq, line));
        if got != want {
            failures.push(format!("{line}\n    ours: {got:?}\n    jq:   {want:?}"));
        }
    }
    (checked, failures)
}

/// [`run_corpus`] on a thread with the stack of the agent's runtime
/// workers, where the agent evaluates (a recursive definition may go deep).
fn run_corpus_on_eval_stack(file: &'static str) -> (usize, Vec<String>) {
    std::thread::Builder::new()
        .stack_size(EVAL_THREAD_STACK)
        .spawn(move || run_corpus(file))
        .expect("start the corpus thread")
        .join()
        .expect("the corpus thread panicked")
}

#[test]
fn agent_engine_matches_jq() {
    let (checked, failures) = run_corpus_on_eval_stack("jq_corpus.txt");
    assert!(
        checked >= 750,
        "the corpus should hold at least 750 expressions (README), has {checked}"
    );
    assert!(
        failures.is_empty(),
        "{} of the corpus's expressions differ from jq:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Issue 26: error texts caught with `try … catch .`, several generators in
/// one string, the entries functions, recursive definitions and the math
/// builtins, each on every JSON type or edge value
/// (`tests/jq_corpus_parity.txt`).
#[test]
fn error_texts_generators_entries_recursion_and_math_match_jq() {
    let (checked, failures) = run_corpus_on_eval_stack("jq_corpus_parity.txt");
    assert!(
        checked >= 300,
        "the parity corpus should hold at least 300 expressions, has {checked}"
    );
    assert!(
        failures.is_empty(),
        "{} of {checked} expressions differ from jq:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
