//! Differential test: a corpus of mapping-style expressions runs through the
//! agent's engine and through the `jq` binary (Debian's jq 1.6, installed by
//! the test set-up), and the first outputs must be the same JSON text.
//!
//! The corpus lives in `tests/jq_corpus.txt`, one expression per line
//! (`#` starts a comment). Every expression runs on `INPUT` below with the
//! environment `ENV`.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use port_agent::json_canon::to_raw_string;
use port_agent::mapping::jq::{from_val, to_val, Budget, JqEnv, JqProgram};
use serde_json::Value;

const INPUT: &str = r#"{"action":"deploy_service","resourceType":"run","status":"TRIGGERED",
"trigger":{"by":{"orgId":"org_42","userId":"u_7","user":{"email":"Ana.Lopez@example.com","firstName":"Ana"}},"origin":"UI","at":"2026-11-01T12:00:00.000Z"},
"context":{"entity":"svc-a","blueprint":"microservice","runId":"r_abc123"},
"payload":{"entity":{"identifier":"svc-a","title":"Service A — prod","team":["platform","sre"],"properties":{"region":"eu-west-1","tier":2,"cost":12.5,"labels":{"app":"a","env":"prod"}}},
"action":{"invocationMethod":{"type":"WEBHOOK","agent":true,"synchronized":true,"method":"post","url":"http://deployer.internal:8080/deploy","groupName":"acme/platform","projectName":"svc-a"}},
"properties":{"version":"1.2.3","replicas":3,"ratio":0.5,"dry":false,"tags":["b","a","c"],"branch":null,"namespace":"prod","ports":[80,443,8080],"notes":"déjà vu ✓","items":[{"n":"x","v":2},{"n":"y","v":1},{"n":"x","v":5}]}},
"headers":{}}"#;

const ENV: &[(&str, &str)] = &[
    ("GITLAB_URL", "https://gitlab.example.com/"),
    ("TF_TOKEN", "tf-tok"),
    ("acme_platform_svc-a", "trigger-tok"),
];

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

/// jq's first output as compact JSON text, or None when jq fails.
fn reference(jq: &PathBuf, expr: &str) -> Option<String> {
    let mut child = Command::new(jq)
        .arg("-c")
        .arg(expr)
        .env_clear()
        .envs(ENV.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run jq");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(INPUT.as_bytes())
        .expect("write to jq");
    let out = child.wait_with_output().expect("jq output");
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).expect("jq prints UTF-8");
    Some(text.lines().next().unwrap_or("null").to_string())
}

fn ours(expr: &str, env: &JqEnv, input: &Value) -> Result<Option<String>, String> {
    let program = JqProgram::compile(expr).map_err(|e| e.message)?;
    match program.first(&to_val(input), env, Budget::default()) {
        Ok(Some(v)) => Ok(Some(to_raw_string(&from_val(&v).map_err(|e| e.0)?))),
        Ok(None) => Ok(Some("null".into())),
        Err(_) => Ok(None),
    }
}

#[test]
fn agent_engine_matches_jq() {
    let jq = jq_binary();
    let corpus_path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/jq_corpus.txt");
    let corpus = std::fs::read_to_string(&corpus_path).expect("read tests/jq_corpus.txt");
    let input: Value = serde_json::from_str(INPUT).expect("INPUT is JSON");
    let env = JqEnv::new(ENV.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let mut checked = 0;
    let mut failures = Vec::new();
    for expr in corpus
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        checked += 1;
        // jq prints nothing for `empty`; a mapping field then becomes null.
        let want = reference(&jq, expr).map(|t| if t.is_empty() { "null".to_string() } else { t });
        match ours(expr, &env, &input) {
            Err(compile) => failures.push(format!("{expr}\n    does not compile: {compile}")),
            Ok(got) => {
                // Compare parsed-and-reprinted text so that both sides use one
                // writer for strings; numbers keep their text (arbitrary precision).
                let norm = |t: Option<String>| {
                    t.map(|t| {
                        serde_json::from_str::<Value>(&t)
                            .map(|v| to_raw_string(&v))
                            .unwrap_or(t)
                    })
                };
                let (got, want) = (norm(got), norm(want));
                if got != want {
                    failures.push(format!("{expr}\n    ours: {got:?}\n    jq:   {want:?}"));
                }
            }
        }
    }
    assert!(
        checked >= 100,
        "the corpus should hold at least 100 expressions, has {checked}"
    );
    assert!(
        failures.is_empty(),
        "{} of {checked} expressions differ from jq:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
