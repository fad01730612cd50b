//! Property tests as fuzzing (stable Rust has no cargo-fuzz): whatever a
//! message, a mapping expression or a recorded-topic line holds, the agent
//! neither panics, nor runs past the jq budget, nor shows a known secret in
//! what it prints (dry-run's per-message JSON, which carries the request,
//! the Port calls, the warnings and the errors).
//!
//! `PORT_AGENT_FUZZ_CASES` sets the number of cases of each property (the
//! default keeps the README's test command quick); a long run:
//! `PORT_AGENT_FUZZ_CASES=100000 cargo test --release --test it fuzz::`.

use std::time::{Duration, Instant};

use crate::support::{action_run, encrypt, signed, SECRET};
use port_agent::cli::dry_run;
use port_agent::mapping::jq::{to_val, JqEnv, JqProgram};
use port_agent::mapping::{Budget, MappingSet};
use port_agent::pipeline::Config;
use port_agent::source::recorded::parse_line;
use proptest::prelude::*;
use serde_json::{json, Value};

const RUNS: &str = "org_1.runs";
/// The decrypted value of the message's encrypted field.
const DECRYPTED: &str = "dec-Secr3t/with+odd=chars and space";
/// A secret-named environment variable's value, visible to jq as `env`.
const ENV_TOKEN: &str = "env-tok-5up3r/s3cret";

fn cases(default: u32) -> u32 {
    std::env::var("PORT_AGENT_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn config() -> Config {
    Config {
        idempotency_headers: true,
        fixed_timestamp: Some(1_700_000_000),
        ..crate::support::pipeline::config()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Run one payload through dry-run's pipeline with `mapping`; the printed
/// entry as text.
fn dry_run_one(rt: &tokio::runtime::Runtime, mapping: &Value, payload: Vec<u8>) -> String {
    let set = MappingSet::from_value(mapping).expect("the mapping compiles");
    let env = JqEnv::new([("MY_API_TOKEN".to_string(), ENV_TOKEN.to_string())]);
    let p = dry_run::pipeline(config(), set, env, 200, r#"{"ok":true}"#);
    let delivery = crate::support::pipeline::delivery(RUNS, payload, 1);
    rt.block_on(dry_run::run_one(&p, 1, delivery))
        .to_json()
        .to_string()
}

/// No form of a known secret in `shown`.
fn assert_no_secret(shown: &str) -> Result<(), TestCaseError> {
    let encoded: String = url::form_urlencoded::byte_serialize(DECRYPTED.as_bytes()).collect();
    for secret in [DECRYPTED, ENV_TOKEN, SECRET, encoded.as_str()] {
        prop_assert!(!shown.contains(secret), "{secret:?} shown in {shown}");
    }
    Ok(())
}

/// A JSON value of real-looking shape: scalars of every kind (non-ASCII
/// text, big and odd numbers), arrays and objects, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "[a-zA-Z0-9 _./:-]{0,12}".prop_map(Value::from),
        "\\PC{0,8}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-z_-]{1,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A jq expression of the kinds mappings use, from a small grammar.
fn jq_expr() -> impl Strategy<Value = String> {
    let path = prop_oneof![
        Just(".".to_string()),
        "[a-z]{1,5}".prop_map(|k| format!(".{k}")),
        Just(".payload.properties".to_string()),
        Just(".payload.properties.token".to_string()),
        Just(".context.runId".to_string()),
        Just(".trigger.by.user.email".to_string()),
        Just("env.MY_API_TOKEN".to_string()),
        Just("$ENV.PORT_CLIENT_SECRET".to_string()),
        (0..5usize).prop_map(|i| format!(".[{i}]")),
        Just(".[]?".to_string()),
    ];
    let literal = prop_oneof![
        Just("null".to_string()),
        (-1000i64..1000).prop_map(|n| n.to_string()),
        "[a-z ]{0,6}".prop_map(|s| format!("{s:?}")),
        Just("1e308".to_string()),
        Just("0".to_string()),
    ];
    let atom = prop_oneof![path, literal];
    atom.prop_recursive(4, 32, 3, |e| {
        let unary = [
            "tostring",
            "tonumber",
            "length",
            "keys",
            "to_entries",
            "from_entries",
            "ascii_downcase",
            "fromjson",
            "tojson",
            "@base64",
            "@base64d",
            "@uri",
            "@sh",
            "not",
            "type",
            "add",
            "reverse",
            "sort",
            "unique",
            "flatten",
            "first",
            "last",
            "paths",
            "leaf_paths",
            "splits(\",\")",
            "split(\"/\")",
            "join(\"-\")",
            "test(\"a+\"; \"x\")",
            "ltrimstr(\"a\")",
            "error",
            "repeat(.)",
            "range(100000000)",
            "recurse",
            "env",
        ];
        prop_oneof![
            (e.clone(), prop::sample::select(unary.to_vec())).prop_map(|(a, f)| format!("({a}) | {f}")),
            (e.clone(), e.clone()).prop_map(|(a, b)| format!("({a}) // ({b})")),
            (e.clone(), e.clone()).prop_map(|(a, b)| format!("({a}) + ({b})")),
            (e.clone(), e.clone()).prop_map(|(a, b)| format!("({a}) / ({b})")),
            (e.clone(), e.clone()).prop_map(|(a, b)| format!("({a}) % ({b})")),
            (e.clone(), e.clone()).prop_map(|(a, b)| format!("[({a}), ({b})]")),
            (e.clone(), e.clone()).prop_map(|(a, b)| format!("{{\"k\": ({a}), \"v\": ({b})}}")),
            (e.clone(), e.clone(), e.clone())
                .prop_map(|(c, a, b)| format!("if ({c}) then ({a}) else ({b}) end")),
            (e.clone(), e.clone()).prop_map(|(a, b)| format!("\"x\\({a})y\\({b})\"")),
            e.clone().prop_map(|a| format!("[({a})] | map(. | tostring)")),
            e.clone().prop_map(|a| format!("try ({a}) catch .")),
            e.clone().prop_map(|a| format!("({a})?")),
            (e.clone(), e).prop_map(|(a, b)| format!("({a}) as $x | ({b}) | select($x != null)")),
        ]
    })
}

/// A signed action run carrying an encrypted token and `props`.
fn message_with(props: Value) -> Value {
    let mut m = action_run("r_fuzz", "http://target.invalid/hook", "POST", true);
    let mut properties = match props {
        Value::Object(o) => o,
        other => [("value".to_string(), other)].into_iter().collect(),
    };
    properties.insert("token".into(), Value::String(encrypt(DECRYPTED)));
    m["payload"]["properties"] = Value::Object(properties);
    signed(m, SECRET, 1_700_000_000)
}

/// A mapping that puts `expr` (and the decrypted token) everywhere a
/// mapping can.
fn mapping_with(expr: &str) -> Value {
    json!([{
        "enabled": format!("({expr}) | true"),
        "fieldsToDecryptPaths": ["payload.properties.token"],
        "url": format!("\"http://target.invalid/\" + ((({expr}) | tostring) | @uri)"),
        "headers": {"Authorization": ".payload.properties.token", "X-Value": format!("({expr}) | tostring")},
        "query": {"q": format!("({expr})"), "t": ".payload.properties.token"},
        "body": {"value": expr, "token": ".payload.properties.token", "dec": ".payload.properties.token | fromjson"},
        "report": {"summary": format!("({expr}) | tostring"), "link": ".payload.properties.token"}
    }])
}

fn fuzz_config(default_cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases: cases(default_cases),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(fuzz_config(1000))]

    /// Bytes of any kind as a message value: never a panic, never a secret.
    #[test]
    fn arbitrary_bytes_as_a_message(payload in prop::collection::vec(any::<u8>(), 0..512)) {
        let rt = runtime();
        let shown = dry_run_one(&rt, &json!([{"enabled": true}]), payload);
        assert_no_secret(&shown)?;
    }

    /// Expressions from the grammar compile or fail cleanly, and evaluate
    /// within the budget, on any input.
    #[test]
    fn arbitrary_expressions_end_within_the_budget(expr in jq_expr(), input in json_value()) {
        let Ok(program) = JqProgram::compile(&expr) else { return Ok(()) };
        let budget = Budget::default();
        let env = JqEnv::new([("MY_API_TOKEN".to_string(), ENV_TOKEN.to_string())]);
        let started = Instant::now();
        let result = program.first(&to_val(&input), &env, budget);
        // The budget's own time bound plus generous slack for a loaded
        // machine: a hang would be minutes.
        prop_assert!(started.elapsed() < budget.time + Duration::from_secs(5), "{expr} took {:?}", started.elapsed());
        // Error texts may hold values (jq's do); the pipeline redacts them
        // where they are shown, which the property above checks.
        drop(result);
    }

    /// Recorded-topic lines of any shape parse or give a line error.
    #[test]
    fn arbitrary_recorded_lines(line in prop_oneof![
        "\\PC{0,200}",
        json_value().prop_map(|v| v.to_string()),
        (json_value(), json_value()).prop_map(|(v, h)| json!({"topic": RUNS, "partition": 0, "offset": 1, "headers": h, "value": v}).to_string()),
        json_value().prop_map(|v| json!({"topic": RUNS, "payload": v.to_string(), "key": v}).to_string()),
    ]) {
        let _ = parse_line(&line, 1, RUNS);
    }
}

proptest! {
    // Each case runs the whole dry-run pipeline: fewer of them.
    #![proptest_config(fuzz_config(300))]

    /// Signed runs of real-looking shapes through a mapping that uses the
    /// decrypted token in the URL, headers, query, body and report.
    #[test]
    fn arbitrary_runs_through_a_mapping_that_uses_a_secret(props in json_value(), expr in jq_expr()) {
        let rt = runtime();
        let mapping = mapping_with(&expr);
        if MappingSet::from_value(&mapping).is_err() {
            // Expressions the compiler rejects are the next property's.
            return Ok(());
        }
        let shown = dry_run_one(&rt, &mapping, message_with(props).to_string().into_bytes());
        assert_no_secret(&shown)?;
    }
}

/// The unique middle of each generated secret: what no output may show,
/// in any decoding.
const MARKER: &str = "Zq9Xk";

/// A secret made of the characters URLs, JSON and base64 treat specially
/// (`/ + = : @ % # \`, spaces, dots) around [`MARKER`].
fn odd_secret() -> impl Strategy<Value = String> {
    ("[a-z/+=:@%# \\\\.]{0,8}", "[a-z/+=:@%# \\\\.]{0,8}").prop_map(|(a, b)| format!("{a}{MARKER}{b}"))
}

/// `text` percent-decoded (no `+` rule), lossily.
fn pct_decoded(text: &str) -> String {
    let b = text.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16);
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

proptest! {
    #![proptest_config(fuzz_config(300))]

    /// Generated secrets with `/ + = : @ % # \` and spaces, as a decrypted
    /// field and a secret-named environment value, in URL paths (raw, as
    /// the URL parser leaves them), queries, headers and bodies, raw and
    /// `@uri`, `@base64`, `@json`-encoded, and echoed by the assumed answer:
    /// dry-run's output (request, Port calls, warnings, errors) shows no
    /// secret in any decoding.
    #[test]
    fn generated_secrets_in_url_paths_never_show(env_secret in odd_secret(), decrypted in odd_secret()) {
        let rt = runtime();
        let mapping = json!([{
            "enabled": true,
            "fieldsToDecryptPaths": ["payload.properties.token"],
            "url": "\"http://target.invalid/hook/\" + env.MY_API_TOKEN + \"/\" + .payload.properties.token + \"/x\"",
            "headers": {"X-A": "env.MY_API_TOKEN | @base64", "X-B": ".payload.properties.token | @uri"},
            "query": {"q": "env.MY_API_TOKEN", "t": ".payload.properties.token"},
            "body": {"a": "env.MY_API_TOKEN | @json", "b": ".payload.properties.token | @base64",
                     "c": "(.payload.properties.token | @uri) + \"/\" + (env.MY_API_TOKEN | tojson)"},
            "report": {"summary": "\"failed: \" + .response.text"}
        }]);
        let set = MappingSet::from_value(&mapping).expect("the mapping compiles");
        let env = JqEnv::new([("MY_API_TOKEN".to_string(), env_secret.clone())]);
        let in_path = |s: &str| url::Url::parse(&format!("http://t.example/p/{s}/x"))
            .map(|u| u.to_string())
            .unwrap_or_default();
        let echo = json!({"path": in_path(&env_secret), "dec": in_path(&decrypted), "raw": [&env_secret, &decrypted]});
        let p = dry_run::pipeline(config(), set, env, 500, &echo.to_string());
        let mut m = action_run("r_odd", "http://target.invalid/hook", "POST", true);
        m["payload"]["properties"]["token"] = json!(encrypt(&decrypted));
        let delivery = crate::support::pipeline::delivery(RUNS, signed(m, SECRET, 1_700_000_000).to_string(), 1);
        let shown = rt.block_on(dry_run::run_one(&p, 1, delivery)).to_json().to_string();
        let unescaped = shown.replace("\\\\", "\\").replace("\\\"", "\"");
        for view in [shown.clone(), pct_decoded(&shown), pct_decoded(&pct_decoded(&shown)), unescaped.clone(), pct_decoded(&unescaped)] {
            prop_assert!(!view.contains(MARKER), "{env_secret:?} / {decrypted:?} shown in {shown}");
        }
        prop_assert!(shown.contains("<redacted>"), "{shown}");
    }
}
