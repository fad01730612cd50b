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

use crate::support::agent::{claimable, offer, patches_of, peak_rss_kib, start_polling};
use crate::support::{action_run, encrypt, signed, FakePort, FakeTarget, SECRET};
use port_agent::cli::dry_run;
use port_agent::cli::recorded::parse_line;
use port_agent::mapping::jq::{to_val, JqEnv, JqProgram};
use port_agent::mapping::{Budget, MappingSet};
use port_agent::pipeline::Config;
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
        // Known limitation (SECURITY.md): a secret that starts with a `..`
        // path segment, right after another secret in a URL path, makes the
        // URL parser drop the segment before it (`\` is `/` in http
        // paths), so that part of the neighbouring secret is shown
        // ("Zq9Xk\\:" then "..\\Zq9Xk=" gives `/Zq9Xk/Zq9Xk=/`).
        let dot_segment = |s: &str| s.starts_with("..") || s.contains("/..") || s.contains("\\..");
        prop_assume!(!dot_segment(&decrypted) && !dot_segment(&env_secret));
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

// Resource bombs (issue 23, item 6): expressions that build deep and large
// values, against messages with large and deep fields. None may abort the
// process, run past the jq budget by more than 100 ms, or take a child
// agent over a memory ceiling.

/// The time budget of the in-process bomb property: short, so that a case
/// that runs to its deadline costs little.
const BOMB_TIME: Duration = Duration::from_millis(300);
/// How far past its deadline an evaluation may end (the issue's bound).
const OVERRUN: Duration = Duration::from_millis(100);
/// The same in a debug build, allowed because it must be: the meter reads
/// the clock every 64 checks, and the JSON writer checks once per value, so
/// 64 strings of 256 KiB written by `tojson` or an interpolation pass
/// between two readings; unoptimised, that took up to 182 ms past the
/// deadline (482 ms against 300, `--test-threads 2` beside the child
/// agents), and `explode | implode` of the 2 MB field 368 ms past it
/// (`--test-threads 4` on 2 shared cores). A release build is held to
/// [`OVERRUN`].
const DEBUG_OVERRUN: Duration = Duration::from_millis(500);
/// The stack of the thread that evaluates a bomb in process: a default
/// main-thread stack (the agent's workers have `EVAL_THREAD_STACK`, 64 MiB),
/// so that only the evaluation's own stack guard stands between a deep
/// value and an abort.
const SMALL_STACK: usize = 8 << 20;
/// The peak RSS a child agent (`run`) may reach over a bomb mapping and a
/// message of up to 2 MB (debug build; the issue asks 100 MiB of the
/// release build).
const CHILD_RSS_CEILING_KIB: u64 = 150 * 1024;

/// A repetition count, from tiny to far past any budget.
fn bomb_count() -> impl Strategy<Value = u32> {
    prop::sample::select(vec![2u32, 10, 30, 40, 64, 1000, 100_000])
}

/// A step that turns any value of the grammar into another (never an
/// error: no step yields a boolean, on which `+` and `length` fail),
/// growing it in depth or size.
fn bomb_step() -> impl Strategy<Value = String> {
    let fixed = prop::sample::select(vec![
        "[.]",
        "{a: .}",
        "{a: ., b: .}",
        "[., .]",
        ". + .",
        "tojson",
        "tostring",
        "walk(.)",
        "[.[]?]",
        "\"<\\(.)>\"",
    ])
    .prop_map(str::to_string);
    prop_oneof![
        fixed,
        bomb_count().prop_map(|n| format!("[limit({n}; repeat(.))]")),
        bomb_count().prop_map(|n| format!("[range({n})]")),
    ]
}

/// Where a bomb starts: the message, its large and deep fields, or a
/// literal.
fn bomb_seed() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        ".",
        "null",
        "\"xx\"",
        "{}",
        "[1]",
        ".payload.properties.big",
        ".payload.properties.deep",
        ".payload.properties.wide",
    ])
    .prop_map(str::to_string)
}

/// A value built from a seed by steps: a reduce over a range, a chain, or
/// a limited recursion.
fn bomb_builder() -> impl Strategy<Value = String> {
    prop_oneof![
        (bomb_count(), bomb_seed(), bomb_step())
            .prop_map(|(n, seed, step)| format!("reduce range({n}) as $i ({seed}; {step})")),
        (bomb_seed(), prop::collection::vec(bomb_step(), 1..4))
            .prop_map(|(seed, steps)| format!("{seed} | {}", steps.join(" | "))),
        (bomb_count(), bomb_seed(), bomb_step())
            .prop_map(|(n, seed, step)| format!("[limit({n}; {seed} | recurse({step}))] | length")),
    ]
}

/// What is done with the built value: serialised, compared, sorted,
/// exploded, walked, or searched with a regex (every one defined on any
/// value of the grammar).
fn bomb_consumer() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "length",
        "tojson | length",
        "tostring | length",
        ". == .",
        "[., .] | sort | length",
        "[.[]?] | sort | length",
        "[.[]?] | unique | length",
        "tojson | explode | length",
        "walk(.) | tojson | length",
        "[paths] | length",
        "\"\\(.)\" | length",
        r#"tojson | gsub("\\["; "(") | length"#,
        r#"tojson | sub("[0-9]"; "n") | length"#,
        r#"tojson | test("a+b")"#,
        r#"tojson | [match("[0-9]+"; "g")] | length"#,
        r#"tojson | [splits(",")] | length"#,
        r#"tojson | [scan("[a-z]+")] | length"#,
        r#"tojson | [capture("(?<n>[0-9]+)"; "g")] | length"#,
    ])
    .prop_map(str::to_string)
}

/// A regex builtin over the large text field, as a mapping of a big log or
/// description would run it.
fn regex_over_big() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        r#"gsub("\n"; " ") | length"#,
        r#"sub("\n"; " ") | length"#,
        r#"gsub("(?<c>[a-z])"; "\(.c)\(.c)") | length"#,
        r#"test("x+y$")"#,
        r#"[match("\n"; "g")] | length"#,
        r#"[splits("\n")] | length"#,
        r#"[scan("[a-z]+")] | length"#,
        r#"[capture("(?<w>[a-z]+)\n"; "g")] | length"#,
        r#"explode | implode | length"#,
        r#"split("") | sort | length"#,
    ])
    .prop_map(|r| format!(".payload.properties.big | {r}"))
}

/// A resource bomb: never an ordinary error, so that any error is the
/// budget's.
fn bomb() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => (bomb_builder(), bomb_consumer()).prop_map(|(b, c)| format!("({b}) | {c}")),
        1 => regex_over_big(),
    ]
}

/// The fields a bomb feeds on: `big`, a text of `big_len` bytes in lines of
/// 5 bytes (the issue's 2 MB field has 400,000 lines); `deep`, arrays and
/// objects nested `depth` levels (within serde_json's 128, as a real
/// message must be); `wide`, an array of `wide_len` numbers.
fn bomb_fields(big_len: usize, depth: usize, wide_len: usize) -> Value {
    let big: String = "abcd\n".repeat(big_len / 5);
    let mut deep = json!("bottom");
    for level in 0..depth {
        deep = if level % 2 == 0 {
            json!([deep, level])
        } else {
            json!({"k": deep})
        };
    }
    let wide: Vec<Value> = (0..wide_len).map(|i| json!(i % 997)).collect();
    json!({"big": big, "deep": deep, "wide": wide})
}

fn bomb_sizes() -> impl Strategy<Value = (usize, usize, usize)> {
    (
        prop::sample::select(vec![0usize, 4 << 10, 256 << 10, 2_000_000]),
        prop::sample::select(vec![0usize, 16, 120]),
        prop::sample::select(vec![0usize, 1000, 100_000]),
    )
}

/// The sizes of the child property: nesting within what a claimed run may
/// hold (serde_json's 128 levels, the run's own five included).
fn child_bomb_sizes() -> impl Strategy<Value = (usize, usize, usize)> {
    (
        prop::sample::select(vec![0usize, 4 << 10, 256 << 10, 2_000_000]),
        prop::sample::select(vec![0usize, 16, 100]),
        prop::sample::select(vec![0usize, 1000, 100_000]),
    )
}

/// An action run (unsigned) whose properties are the bomb fields.
fn bomb_message(big_len: usize, depth: usize, wide_len: usize) -> Value {
    let mut m = action_run("r_bomb", "http://target.invalid/hook", "POST", false);
    m.as_object_mut().expect("object").remove("headers");
    m["payload"]["properties"] = bomb_fields(big_len, depth, wide_len);
    m
}

/// Evaluate `expr` on `input` with a [`BOMB_TIME`] budget on a thread of
/// [`SMALL_STACK`]: the outcome and how long the evaluation (with the drop
/// of its result) took.
fn evaluate_bomb(expr: &str, input: Value) -> (Result<bool, String>, Duration) {
    let program = JqProgram::compile(expr).unwrap_or_else(|e| panic!("the grammar compiles: {expr}: {e}"));
    let val = to_val(&input);
    drop(input);
    std::thread::Builder::new()
        .name("bomb".into())
        .stack_size(SMALL_STACK)
        .spawn(move || {
            let budget = Budget {
                time: BOMB_TIME,
                ..Budget::default()
            };
            let started = Instant::now();
            let result = program.first(&val, &JqEnv::default(), budget);
            let outcome = result.map(|out| out.is_some()).map_err(|e| e.0);
            (outcome, started.elapsed())
        })
        .expect("spawn the evaluating thread")
        .join()
        .unwrap_or_else(|_| panic!("the evaluation of {expr} panicked"))
}

/// The fake Port API and target the child agents of
/// [`resource_bombs_never_abort_a_child_agent_nor_exhaust_its_memory`] run
/// against, shared by its cases (each case offers its own run), on a
/// runtime of their own.
struct Fakes {
    _rt: tokio::runtime::Runtime,
    port: FakePort,
    target: FakeTarget,
}

fn fakes() -> &'static Fakes {
    static FAKES: std::sync::OnceLock<Fakes> = std::sync::OnceLock::new();
    FAKES.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let (port, target) = rt.block_on(async { (FakePort::start().await, FakeTarget::start().await) });
        target.answer_json(200, json!({"ok": true}));
        Fakes {
            _rt: rt,
            port,
            target,
        }
    })
}

/// [`resource_bombs_never_abort_a_child_agent_nor_exhaust_its_memory`]'s
/// case: the agent (`run`, polling) processes one run with the bomb
/// fields through a mapping of bombs `body` and `summary`.
fn child_agent_survives(
    body: &str,
    summary: &str,
    (big, depth, wide): (usize, usize, usize),
) -> Result<(), TestCaseError> {
    static CASE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let case = CASE.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let Fakes { port, target, .. } = fakes();
    let run_id = format!("r_bomb_{case}");
    let mapping = json!([{
        "enabled": true,
        "body": {"value": body},
        "report": {"summary": format!("({summary}) | tostring")},
    }]);
    offer(
        port,
        [claimable(
            &run_id,
            &target.url("/bomb"),
            true,
            bomb_fields(big, depth, wide),
        )],
    );
    let mut agent = start_polling(port, "fuzz-bomb", &mapping, &[("AGENT_JQ_TIMEOUT_MS", "300")]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while patches_of(port, &run_id).is_empty() {
        if let Some(status) = agent.exited().expect("the agent's status") {
            prop_assert!(
                false,
                "{body} / {summary}: the agent ended: {status:?}\n{}",
                agent.log_tail(20)
            );
        }
        prop_assert!(
            Instant::now() < deadline,
            "{body} / {summary}: no report within 60 s\n{}",
            agent.log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let rss_kib = peak_rss_kib(agent.pid());
    agent.signal("-TERM");
    let code = agent.wait(Duration::from_secs(30));
    prop_assert_eq!(code, Some(0), "{} / {}\n{}", body, summary, agent.log_tail(20));
    let report = patches_of(port, &run_id);
    prop_assert_eq!(
        &report[0]["status"],
        "SUCCESS",
        "{} / {}: {:?}",
        body,
        summary,
        report
    );
    prop_assert!(
        rss_kib <= CHILD_RSS_CEILING_KIB,
        "{body} / {summary} (big {big}, depth {depth}, wide {wide}): peak RSS {} MiB",
        rss_kib / 1024
    );
    Ok(())
}

fn bomb_config(default_cases: u32) -> ProptestConfig {
    ProptestConfig {
        // Generated values are shrunk; keep the shrinking short, each case
        // can take the whole budget.
        max_shrink_iters: 32,
        ..fuzz_config(default_cases)
    }
}

proptest! {
    #![proptest_config(bomb_config(24))]

    /// In process, on an 8 MiB stack: a bomb ends in a result or in
    /// "evaluation stopped: …" (the grammar has no other error), never in
    /// a panic or an abort, and at most 100 ms after the budget's deadline.
    #[test]
    fn resource_bombs_end_within_the_budget_in_process(expr in bomb(), (big, depth, wide) in bomb_sizes()) {
        let (outcome, took) = evaluate_bomb(&expr, bomb_message(big, depth, wide));
        if let Err(e) = &outcome {
            prop_assert!(e.starts_with("evaluation stopped: "), "{expr}: an error that is not the budget's: {e}");
        }
        let allowed = BOMB_TIME + if cfg!(debug_assertions) { DEBUG_OVERRUN } else { OVERRUN };
        prop_assert!(
            took <= allowed, "{expr} (big {big}, depth {depth}, wide {wide}) took {took:?}: {outcome:?}");
    }
}

proptest! {
    // Each case starts a process.
    #![proptest_config(bomb_config(12))]

    /// Through the built binary (`run`, polling the fake Port API): a run
    /// with large and deep fields through a mapping of bombs is reported
    /// (SUCCESS, its failed fields null with a warning), the agent neither
    /// aborts nor dies of a signal (it is alive after the report and exits 0
    /// on SIGTERM), and its peak RSS stays under the ceiling.
    #[test]
    fn resource_bombs_never_abort_a_child_agent_nor_exhaust_its_memory(
        body in bomb(),
        summary in bomb(),
        (big, depth, wide) in child_bomb_sizes(),
    ) {
        child_agent_survives(&body, &summary, (big, depth, wide))?;
    }
}

/// Found by the child property: `split("")` of the 2 MB field builds its
/// two million one-character strings inside one native, past
/// AGENT_JQ_MAX_BYTES (32 MiB): the agent peaked at about 170 MiB (45 MiB
/// with the same message and a trivial mapping).
#[test]
fn a_split_of_a_2_mb_field_keeps_the_agent_under_the_memory_ceiling() {
    let split = r#".payload.properties.big | split("") | length"#;
    child_agent_survives(split, "1", (2_000_000, 0, 0)).unwrap_or_else(|e| panic!("{e}"));
}
