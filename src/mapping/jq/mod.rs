//! The jq engine (jaq) behind one small interface: compile, first output, env.
//!
//! Mappings are written for jq; we run them with jaq (`jaq-core`, `jaq-std`,
//! `jaq-json`). This module hides jaq's types and makes three adjustments so
//! results match what mappings expect:
//!
//! * **Numbers.** Message numbers reach jaq as integers or as their original
//!   decimal text, so a number that only passes through keeps its exact form.
//!   Numbers jaq computes as doubles are printed the way jq 1.6 prints them
//!   ([`crate::json_canon::format_jq_float`]): `5`, not `5.0`.
//! * **Environment.** `env`, `env.X`, `env["X"]` and `$ENV` read a snapshot
//!   taken once ([`JqEnv`]), not the live process environment on every call.
//! * **Bounded evaluation.** Every call of a definition (the only way jq
//!   loops or recurses) and every output of `range` passes a budget check:
//!   a step count, a wall-clock deadline and a stack-depth limit. A
//!   pathological expression (`def f: f; f`, `[repeat(1)]`, `[range(1e12)]`)
//!   therefore ends in an error instead of hanging or overflowing the stack.
//!   The interpreter spends the steps (vendored jaq-core, `meter`), so user
//!   definitions may recurse as in jq: `def f: 1 + f; f` ends in `nesting
//!   too deep`, `def f: f; f` in `step limit exceeded`.

mod budget;
mod compat;
mod jq16;
mod regex;
mod syntax;

use std::collections::BTreeMap;
use std::sync::Arc;

use jaq_core::data::JustLut;
use jaq_core::load::{self, Arena, File, Loader};
use jaq_core::{Compiler, Ctx, Exn, Vars};
use jaq_json::Num;
/// A jq value (what mappings evaluate on).
pub use jaq_json::Val;
use serde_json::{Map, Number, Value};

pub use budget::{set_max_bytes, Budget, MeteredAlloc, DEFAULT_MAX_BYTES, EVAL_THREAD_STACK, SHARED_BUDGETS};
use compat::{natives, prelude_defs};
pub use compat::{JQ16_BUILTINS, UNSUPPORTED_BUILTINS};
use syntax::{reject_constant_division_by_zero, with_locations};

type D = JustLut<Val>;
type Filter = jaq_core::Filter<D>;

/// A compile error, with the position in the expression when known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CompileError {
    /// Human-readable description, including the position.
    pub message: String,
    /// Byte offset in the expression where the problem was found.
    pub offset: Option<usize>,
}

/// A runtime error of one evaluation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RunError(pub String);

/// The agent's own secrets: never visible to mappings (`env`, `$ENV`).
pub const HIDDEN_FROM_MAPPINGS: [&str; 2] = ["PORT_CLIENT_SECRET", "KAFKA_CONSUMER_PASSWORD"];

/// The environment visible to expressions (`env`, `$ENV`).
#[derive(Clone)]
pub struct JqEnv {
    vars: Val,
    /// Values of variables whose names look secret (for redaction).
    sensitive: Arc<[String]>,
}

impl JqEnv {
    /// Snapshot the given variables, without the agent's own secrets
    /// ([`HIDDEN_FROM_MAPPINGS`]).
    pub fn new(vars: impl IntoIterator<Item = (String, String)>) -> Self {
        let sorted: BTreeMap<String, String> = vars
            .into_iter()
            .filter(|(k, _)| !HIDDEN_FROM_MAPPINGS.contains(&k.as_str()))
            .collect();
        let sensitive = sorted
            .iter()
            .filter(|(k, v)| crate::redact::sensitive_name(k) && v.len() >= crate::redact::MIN_ENV_SECRET_LEN)
            .map(|(_, v)| v.clone())
            .collect();
        let map = sorted.into_iter().map(|(k, v)| (Val::from(k), Val::from(v)));
        JqEnv {
            vars: Val::obj(map.collect()),
            sensitive,
        }
    }

    /// Values of the variables whose names look secret
    /// ([`crate::redact::sensitive_name`]), to be redacted wherever shown.
    pub fn sensitive_values(&self) -> &[String] {
        &self.sensitive
    }
}

impl Default for JqEnv {
    fn default() -> Self {
        Self::new(Vec::new())
    }
}

/// A compiled jq expression, cheap to share across tasks.
#[derive(Clone)]
pub struct JqProgram {
    filter: Arc<Filter>,
    source: Arc<str>,
    /// Values of the `$__loc__` stand-ins (see [`with_locations`]).
    locations: Vec<Val>,
}

impl std::fmt::Debug for JqProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JqProgram({:?})", self.source)
    }
}

fn position(code: &str, part: &str) -> Option<usize> {
    let start = (part.as_ptr() as usize).checked_sub(code.as_ptr() as usize)?;
    (start <= code.len()).then_some(start)
}

fn describe_at(code: &str, what: String, found: &str) -> CompileError {
    let offset = position(code, found);
    let near: String = found.chars().take(20).collect();
    let message = match offset {
        Some(at) if near.is_empty() => format!("{what} at position {at} (end of expression)"),
        Some(at) => format!("{what} at position {at}, near '{near}'"),
        None => what,
    };
    CompileError { message, offset }
}

impl JqProgram {
    /// Compile `code`. Errors name what was expected and where.
    pub fn compile(code: &str) -> Result<JqProgram, CompileError> {
        let original = code;
        let (code, locations) = with_locations(code);
        let code = code.as_str();
        let arena = Arena::default();
        let loader = Loader::new(prelude_defs());
        let modules = loader.load(&arena, File { code, path: () }).map_err(|errs| {
            let first = errs.into_iter().next().map(|(_, e)| e);
            match first {
                Some(load::Error::Lex(es)) => match es.into_iter().next() {
                    Some((expect, found)) => {
                        describe_at(code, format!("lex error: expected {}", expect.as_str()), found)
                    }
                    None => CompileError {
                        message: "lex error".into(),
                        offset: None,
                    },
                },
                Some(load::Error::Parse(es)) => match es.into_iter().next() {
                    Some((expect, found)) => {
                        let mut e =
                            describe_at(code, format!("syntax error: expected {}", expect.as_str()), found);
                        if found.is_empty() {
                            e.message = format!(
                                "syntax error: expected {} at the end of the expression",
                                expect.as_str()
                            );
                            e.offset = Some(code.len());
                        }
                        e
                    }
                    None => CompileError {
                        message: "syntax error".into(),
                        offset: None,
                    },
                },
                Some(load::Error::Io(es)) => CompileError {
                    message: format!(
                        "modules cannot be loaded in a mapping: {}",
                        es.into_iter()
                            .map(|(p, e)| format!("{p}: {e}"))
                            .collect::<Vec<_>>()
                            .join("; ")
                    ),
                    offset: None,
                },
                None => CompileError {
                    message: "cannot parse the expression".into(),
                    offset: None,
                },
            }
        })?;
        let filter = Compiler::default()
            .with_funs(natives())
            .with_global_vars(std::iter::once("$ENV").chain(locations.iter().map(|(n, _)| n.as_str())))
            .compile(modules)
            .map_err(|errs| {
                let undefined: Vec<CompileError> = errs
                    .into_iter()
                    .flat_map(|(_, es)| es)
                    .map(|(name, kind)| {
                        describe_at(code, format!("undefined {} '{}'", kind.as_str(), name), name)
                    })
                    .collect();
                undefined.into_iter().next().unwrap_or(CompileError {
                    message: "cannot compile the expression".into(),
                    offset: None,
                })
            })?;
        if let Some(mut term) = load::parse(code, |p| p.term()) {
            reject_constant_division_by_zero(code, &mut term)?;
        }
        Ok(JqProgram {
            filter: Arc::new(filter),
            source: original.into(),
            locations: locations.into_iter().map(|(_, v)| v).collect(),
        })
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Run on `input`; the first output, `None` when there is none.
    pub fn first(&self, input: &Val, env: &JqEnv, budget: Budget) -> Result<Option<Val>, RunError> {
        let metered = budget::Metered::start(budget);
        let vars = std::iter::once(env.vars.clone()).chain(self.locations.iter().cloned());
        let ctx = Ctx::<D>::new(&self.filter.lut, Vars::new(vars));
        let result = {
            let mut outputs = self.filter.id.run((ctx, input.clone()));
            match outputs.next() {
                None => Ok(None),
                Some(Ok(v)) => Ok(Some(v)),
                Some(Err(e)) => Err(RunError(exn_message(e))),
            }
        };
        // A stopped evaluation fails whatever it returned: an operation that
        // saw the budget run out may have cut its work short.
        match metered.finish() {
            Err(why) => Err(RunError(format!("evaluation stopped: {why}"))),
            Ok(()) => result,
        }
    }
}

fn exn_message(e: Exn<Val>) -> String {
    // Not `jaq_core::unwrap_valr`: on `halt` it exits the process.
    match e.get_err() {
        Err(other) => match other.get_halt() {
            Ok(code) => {
                format!("the expression called halt (exit code {code}); a mapping cannot stop the agent")
            }
            Err(_) => "unexpected control flow".into(),
        },
        Ok(err) => {
            let text = err.to_string();
            let text = text.strip_prefix("error: ").map(str::to_string).unwrap_or(text);
            // A string error value prints quoted; show its content.
            match serde_json::from_str::<String>(&text) {
                Ok(inner) => inner,
                Err(_) => text,
            }
        }
    }
}

/// Convert a message value for jaq. Numbers keep their text unless they are
/// plain integers.
pub fn to_val(value: &Value) -> Val {
    match value {
        Value::Null => Val::Null,
        Value::Bool(b) => Val::Bool(*b),
        Value::Number(n) => {
            let text = n.as_str();
            let integral = !text.contains(['.', 'e', 'E']);
            match integral.then(|| Num::from_str_radix(text, 10)).flatten() {
                Some(num) => Val::Num(num),
                None => Val::Num(Num::Dec(jaq_json::Rc::new(text.to_string()))),
            }
        }
        Value::String(s) => Val::from(s.clone()),
        Value::Array(items) => items.iter().map(to_val).collect(),
        Value::Object(map) => Val::obj(
            map.iter()
                .map(|(k, v)| (Val::from(k.clone()), to_val(v)))
                .collect(),
        ),
    }
}

/// Deepest nesting accepted when converting results back.
const MAX_DEPTH: usize = 512;

fn number(text: &str) -> Value {
    text.parse::<Number>().map(Value::Number).unwrap_or(Value::Null)
}

/// Convert a jaq result to JSON, printing computed numbers like jq.
pub fn from_val(val: &Val) -> Result<Value, RunError> {
    from_val_at(val, 0)
}

fn string_of(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn from_val_at(val: &Val, depth: usize) -> Result<Value, RunError> {
    if depth > MAX_DEPTH {
        return Err(RunError(format!("result nested deeper than {MAX_DEPTH} levels")));
    }
    Ok(match val {
        Val::Null => Value::Null,
        Val::Bool(b) => Value::Bool(*b),
        Val::Num(Num::Int(i)) => Value::Number(Number::from(*i as i64)),
        // Doubles print as jq prints them (patched jaq-json), decimals from
        // the message as they were written.
        Val::Num(n) => number(&n.to_string()),
        Val::BStr(b) | Val::TStr(b) => Value::String(string_of(b)),
        Val::Arr(items) => Value::Array(
            items
                .iter()
                .map(|v| from_val_at(v, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        Val::Obj(map) => {
            let mut out = Map::with_capacity(map.len());
            for (k, v) in map.iter() {
                let key = match k {
                    Val::TStr(b) | Val::BStr(b) => string_of(b),
                    other => crate::json_canon::to_raw_string(&from_val_at(other, depth + 1)?),
                };
                out.insert(key, from_val_at(v, depth + 1)?);
            }
            Value::Object(out)
        }
    })
}

/// Is `val` exactly `true`?
pub fn is_true(val: &Val) -> bool {
    matches!(val, Val::Bool(true))
}

/// The text a builtin throws as a jq error value (jq 1.6's words).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Thrown(String);

impl From<String> for Thrown {
    fn from(text: String) -> Thrown {
        Thrown(text)
    }
}

impl From<&str> for Thrown {
    fn from(text: &str) -> Thrown {
        Thrown(text.to_string())
    }
}

/// jq's name of a value's type, for error messages.
fn type_name(v: &Val) -> &'static str {
    match v {
        Val::Null => "null",
        Val::Bool(_) => "boolean",
        Val::Num(_) => "number",
        Val::TStr(_) | Val::BStr(_) => "string",
        Val::Arr(_) => "array",
        Val::Obj(_) => "object",
    }
}

/// The text of a string value (`None` for other values and invalid UTF-8).
fn str_of(v: &Val) -> Option<&str> {
    match v {
        Val::TStr(b) | Val::BStr(b) => std::str::from_utf8(b).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::{Duration, Instant};

    fn eval(code: &str, input: Value) -> Result<Option<Value>, RunError> {
        let p = JqProgram::compile(code).unwrap();
        let env = JqEnv::new([("HOME_X".to_string(), "h".to_string())]);
        p.first(&to_val(&input), &env, Budget::default())
            .map(|o| o.map(|v| from_val(&v).unwrap()))
    }

    #[test]
    fn first_output_or_none() {
        assert_eq!(eval(".a, .b", json!({"a": 1, "b": 2})).unwrap(), Some(json!(1)));
        assert_eq!(eval("empty", json!({})).unwrap(), None);
        assert!(eval("error(\"boom\")", json!({})).is_err());
    }

    #[test]
    fn the_agents_own_secrets_are_not_in_the_environment_of_mappings() {
        let env = JqEnv::new(
            [
                ("PORT_CLIENT_SECRET", "client-secret-value"),
                ("KAFKA_CONSUMER_PASSWORD", "kafka-password"),
                ("GITLAB_TOKEN", "glpat-123"),
                ("SHORT_TOKEN", "abc"),
                ("REGION", "eu-west-1"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        let run = |code: &str| {
            let p = JqProgram::compile(code).unwrap();
            p.first(&to_val(&json!(null)), &env, Budget::default())
                .map(|o| o.map(|v| from_val(&v).unwrap()))
                .unwrap()
        };
        assert_eq!(run("env.PORT_CLIENT_SECRET"), Some(json!(null)));
        assert_eq!(run("$ENV.KAFKA_CONSUMER_PASSWORD"), Some(json!(null)));
        assert_eq!(
            run("env | keys"),
            Some(json!(["GITLAB_TOKEN", "REGION", "SHORT_TOKEN"]))
        );
        assert_eq!(env.sensitive_values(), ["glpat-123".to_string()]);
    }

    #[test]
    fn env_forms_read_the_snapshot() {
        assert_eq!(eval("env.HOME_X", json!({})).unwrap(), Some(json!("h")));
        assert_eq!(eval("env[\"HOME_X\"]", json!({})).unwrap(), Some(json!("h")));
        assert_eq!(eval("$ENV.HOME_X", json!({})).unwrap(), Some(json!("h")));
        assert_eq!(eval("env.PATH", json!({})).unwrap(), Some(json!(null)));
    }

    #[test]
    fn passthrough_numbers_keep_their_form() {
        let input: Value = serde_json::from_str(
            r#"{"a":123456789012345678901234567890,"b":9007199254740993,"c":1e-07,"d":-0.0}"#,
        )
        .unwrap();
        let out = eval(".", input).unwrap().unwrap();
        assert_eq!(
            crate::json_canon::to_raw_string(&out),
            r#"{"a":123456789012345678901234567890,"b":9007199254740993,"c":1e-07,"d":-0.0}"#
        );
    }

    #[test]
    fn compile_errors_say_where() {
        let e = JqProgram::compile(".a | ").unwrap_err();
        assert!(e.message.contains("syntax error"), "{e}");
        let e = JqProgram::compile(".a | nosuchfn(1)").unwrap_err();
        assert!(
            e.message.contains("undefined") && e.message.contains("nosuchfn"),
            "{e}"
        );
        assert_eq!(e.offset, Some(5));
        assert!(JqProgram::compile("def inc: . + 1; inc | inc").is_ok());
    }

    #[test]
    fn pathological_expressions_stop_with_an_error() {
        for code in [
            "[repeat(1)]",
            "[range(1e12)]",
            "last(range(1e12))",
            "[recurse(. + 1)] | length",
            "def f: try ([recurse(. + 1)] | error) catch (. | error); f",
            "[limit(1e9; repeat(.))] | length",
            "until(false; . + 1)",
            "[while(true; [.])] | length",
        ] {
            // Evaluate on a thread like the agent's runtime workers.
            let (r, took) = std::thread::Builder::new()
                .stack_size(EVAL_THREAD_STACK)
                .spawn(move || {
                    let started = Instant::now();
                    (eval(code, json!(0)), started.elapsed())
                })
                .unwrap()
                .join()
                .unwrap();
            let message = r.expect_err(code).0;
            assert!(message.starts_with("evaluation stopped: "), "{code}: {message}");
            assert!(took < Duration::from_secs(5), "{code} took {took:?}");
        }
    }

    /// Evaluate on a thread with `stack` bytes of stack; the result and how
    /// long it took.
    fn eval_on_stack(
        code: &'static str,
        input: Value,
        budget: Budget,
        stack: usize,
    ) -> (Result<Option<Value>, RunError>, Duration) {
        std::thread::Builder::new()
            .stack_size(stack)
            .spawn(move || {
                let p = JqProgram::compile(code).unwrap();
                let started = Instant::now();
                let r = p.first(&to_val(&input), &JqEnv::default(), budget);
                let took = started.elapsed();
                (r.map(|o| o.map(|v| from_val(&v).unwrap())), took)
            })
            .unwrap()
            .join()
            .unwrap()
    }

    #[test]
    fn resource_bombs_stop_with_an_error_within_their_budget() {
        let budget = Budget {
            time: Duration::from_millis(500),
            ..Budget::default()
        };
        for (code, why) in [
            // Issue 23's four: a deep value serialised, a string doubled,
            // a value whose parts are shared printed, a large field
            // through a regular expression (below).
            (
                "reduce range(100000) as $i (null; [.]) | tojson | length",
                "nesting too deep",
            ),
            (
                "reduce range(40) as $i (\"xx\"; . + .) | length",
                "memory limit exceeded",
            ),
            (
                "reduce range(30) as $i ({}; {a: ., b: .}) | tojson | length",
                "memory limit exceeded|time limit exceeded",
            ),
            (
                "[range(2) | reduce range(30) as $i ({}; {a: ., b: .})] | .[0] == .[1]",
                "time limit exceeded",
            ),
            (
                "[range(2) | reduce range(30) as $i ([]; [., .])] | sort | length",
                "time limit exceeded",
            ),
            (
                "reduce range(100000) as $i (null; [.]) | \"\\(.)\" | length",
                "nesting too deep",
            ),
            (
                "reduce range(100000) as $i (null; {a: .}) | tostring | length",
                "memory limit exceeded|nesting too deep|time limit exceeded",
            ),
            (
                "reduce range(60000) as $i (null; {a: .}) | tostring | length",
                "nesting too deep",
            ),
            ("\"x\" * 1e12 | length", "memory limit exceeded"),
            (
                "[range(200000)] | . + . + . + . + . + . | length",
                "memory limit exceeded",
            ),
            ("\"ab\" * 1000000 | explode | length", "memory limit exceeded"),
            ("\"ab\" * 2000000 | split(\"\") | length", "memory limit exceeded"),
            (
                "\"[\" + (\"0,\" * 5000000) + \"0]\" | fromjson | length",
                "memory limit exceeded",
            ),
            (
                "reduce ([range(200000)] | .[]) as $x (0; . + 1) | [range(.)] | [.[] | [.]] | length",
                // 400,000 outputs of range: the step limit when the
                // machine is fast enough to reach it within the time.
                "memory limit exceeded|time limit exceeded|step limit exceeded",
            ),
            (
                "reduce range(25) as $i ([0]; . + .) | sort | length",
                "memory limit exceeded",
            ),
        ] {
            // Time is not what a depth or memory bomb should meet first,
            // even on a loaded machine: give those more of it.
            let budget = if why.contains("time") {
                budget
            } else {
                Budget {
                    time: Duration::from_secs(10),
                    ..budget
                }
            };
            // The stack of a main thread, not the runtime workers' 64 MiB.
            let (r, took) = eval_on_stack(code, json!(null), budget, 8 << 20);
            let message = r.expect_err(code).0;
            assert!(
                why.split('|')
                    .any(|w| message == format!("evaluation stopped: {w}")),
                "{code}: {message}"
            );
            eprintln!("{code}: {took:?}");
        }
    }

    #[test]
    fn recursive_definitions_run_as_in_jq() {
        for (code, want) in [
            (
                "def fact: if . <= 1 then 1 else . * (. - 1 | fact) end; [range(8) | fact]",
                json!([1, 1, 2, 6, 24, 120, 720, 5040]),
            ),
            (
                "def f(n): def g(m): if m == 0 then 0 else f(m - 1) + 1 end; if n == 0 then 0 else g(n - 1) + 1 end; f(9)",
                json!(9),
            ),
            (
                "def depth: if type == \"array\" then 1 + ([.[] | depth] | max // 0) else 0 end; depth",
                json!(3),
            ),
            // Deeper than a message nests (128 levels), inside the stack
            // budget even in a debug build.
            ("def f: if . == 0 then 0 else (. - 1 | f) + 1 end; 130 | f", json!(130)),
        ] {
            let (r, _) = eval_on_stack(code, json!([[1, [2]], 3]), Budget::default(), 8 << 20);
            assert_eq!(r.expect(code), Some(want), "{code}");
        }
    }

    #[test]
    #[ignore = "measurement: cargo test --release --lib recursion_depth -- --ignored --nocapture"]
    fn recursion_depth_within_the_stack_budget() {
        let code = "def f: if . == 0 then 0 else (. - 1 | f) + 1 end; f";
        let (mut ok, mut bad) = (1u64, 1u64 << 20);
        while bad - ok > 1 {
            let mid = (ok + bad) / 2;
            let (r, _) = eval_on_stack(code, json!(mid), Budget::default(), EVAL_THREAD_STACK);
            if r.is_ok() {
                ok = mid
            } else {
                bad = mid
            }
        }
        eprintln!("deepest recursion within the default budget: {ok}");
    }

    #[test]
    fn runaway_recursion_stops_with_an_error_not_a_stack_overflow() {
        for (code, why) in [
            ("def f: 1 + f; f", "nesting too deep"),
            ("def f: [f]; f", "nesting too deep"),
            ("def f: {a: f}; f", "nesting too deep"),
            ("def f: \"\\(f)\"; f", "nesting too deep"),
            ("try (def f: 1 + f; f) catch .", "nesting too deep"),
            ("def f(g): g | f(g) | . + 1; 0 | f(. + 1)", "nesting too deep"),
            // Tail calls loop without growing the stack: the steps end them.
            ("def f: f; f", "step limit exceeded|time limit exceeded"),
            (
                "def f: . + 1 | f; 0 | f",
                "step limit exceeded|time limit exceeded",
            ),
            (
                "def f: if . > 0 then . else f end; 0 | f",
                "step limit exceeded|time limit exceeded",
            ),
        ] {
            // A main thread's stack and the runtime workers'.
            for stack in [8 << 20, EVAL_THREAD_STACK] {
                let budget = Budget {
                    time: Duration::from_secs(10),
                    ..Budget::default()
                };
                let (r, took) = eval_on_stack(code, json!(0), budget, stack);
                let message = r.expect_err(code).0;
                assert!(
                    why.split('|')
                        .any(|w| message == format!("evaluation stopped: {w}")),
                    "{code}: {message}"
                );
                assert!(took < Duration::from_secs(10), "{code} took {took:?}");
            }
        }
        // The step budget alone ends a tail-recursive loop.
        let budget = Budget {
            steps: 1000,
            time: Duration::from_secs(10),
            ..Budget::default()
        };
        let (r, _) = eval_on_stack("def f: . + 1 | f; 0 | f", json!(0), budget, 8 << 20);
        assert_eq!(r.unwrap_err().0, "evaluation stopped: step limit exceeded");
    }

    /// A string of quotes and backslashes serialised again and again: each
    /// `tojson` doubles it, and one string's escaping checked no deadline,
    /// so the evaluation ran 2.6 s past a 500 ms budget (debug build) until
    /// the memory limit stopped it. Now the time limit stops it.
    #[test]
    fn one_long_string_written_keeps_the_deadline() {
        let budget = Budget {
            time: Duration::from_millis(300),
            ..Budget::default()
        };
        let code = "(reduce range(30) as $i (.; tojson)) | length";
        let (r, took) = eval_on_stack(code, json!({"a": 1}), budget, 8 << 20);
        let message = r.expect_err(code).0;
        // A fast machine may fill the memory budget first; either way the
        // evaluation ends in time.
        assert!(
            message == "evaluation stopped: time limit exceeded"
                || message == "evaluation stopped: memory limit exceeded",
            "{code}: {message}"
        );
        // The fuzzing's allowance for a debug build on a loaded machine.
        let allowed = budget.time + Duration::from_millis(if cfg!(debug_assertions) { 500 } else { 100 });
        assert!(took <= allowed, "{code} took {took:?}");
    }

    #[test]
    fn regular_expressions_are_linear_in_their_input() {
        // A 2 MB field of 400,000 lines: quadratic before (15-43 s, 1 GiB);
        // the time limit is the bound here, the speed is measured in
        // benches/micro.rs.
        let text = "line\n".repeat(400_000);
        let budget = Budget {
            time: Duration::from_secs(20),
            // 400,001 strings of jaq's take about 36 MB.
            max_bytes: 128 << 20,
            ..Budget::default()
        };
        let (r, _) = eval_on_stack(r#"gsub("\n"; " ") | length"#, json!(text), budget, 8 << 20);
        assert_eq!(r.unwrap(), Some(json!(text.len())));
        let (r, _) = eval_on_stack(r#"[splits("\n")] | length"#, json!(text), budget, 8 << 20);
        assert_eq!(r.unwrap(), Some(json!(400_001)));
        // Matches stream: 400,000 match objects are not held at once.
        let (r, _) = eval_on_stack(r#"last(match("e"; "g")) | .offset"#, json!(text), budget, 8 << 20);
        assert_eq!(r.unwrap(), Some(json!(text.len() - 2)));
        // A match list too large for the memory budget stops cleanly.
        let budget = Budget {
            max_bytes: DEFAULT_MAX_BYTES,
            ..budget
        };
        let (r, _) = eval_on_stack(r#"[match("."; "g")] | length"#, json!(text), budget, 8 << 20);
        assert_eq!(r.unwrap_err().0, "evaluation stopped: memory limit exceeded");
    }

    #[test]
    fn sub_keeps_jq_1_6_semantics() {
        for (code, input, want) in [
            (r#"sub("(?<x>b+)"; "[\(.x)]")"#, json!("abbcb"), json!("a[bb]cb")),
            (
                r#"gsub("(?<x>b+)"; "[\(.x)]")"#,
                json!("abbcb"),
                json!("a[bb]c[b]"),
            ),
            (r#"gsub("é"; "e")"#, json!("café é"), json!("cafe e")),
            (r#"gsub("x"; "y")"#, json!("abc"), json!("abc")),
            (r#"[gsub("b"; "1", "2")]"#, json!("abc"), json!(["a1c"])),
            (r#"[sub("b"; empty)]"#, json!("abc"), json!([])),
            (r#"gsub("(?<d>\\d)"; null)"#, json!("a1b2"), json!("ab")),
            (r#"try gsub("b"; 1) catch "err""#, json!("abc"), json!("err")),
            (r#"[splits(", *")]"#, json!("a, b,c"), json!(["a", "b", "c"])),
            (r#"split("b"; null)"#, json!("abcb"), json!(["a", "c", ""])),
            (
                r#"[match("(a)|(b)"; "g") | .captures[1].offset]"#,
                json!("ab"),
                json!([-1, 1]),
            ),
        ] {
            assert_eq!(eval(code, input).unwrap(), Some(want), "{code}");
        }
    }

    #[test]
    fn computed_floats_print_like_jq_1_6() {
        // Expected strings are jq 1.6's output for the same computation
        // (`jq -n '<expr>'`), e.g. `jq -n '1e17'` prints 1e+17.
        for (x, want) in [
            (0.1 + 0.2, "0.30000000000000004"),
            (1.0 / 3.0, "0.3333333333333333"),
            (1e17, "1e+17"),
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (1e300, "1e+300"),
            (-0.0, "-0"),
            (123456789012345678.0, "123456789012345680"),
            (1.5e16, "15000000000000000"),
            (2.0 / 3.0 * 1e20, "66666666666666660000"),
            (1e-7, "1e-07"),
            (f64::INFINITY, "1.7976931348623157e+308"),
            (f64::NAN, "null"),
            (3.0, "3"),
            (1e15 + 0.5, "1000000000000000.5"),
            (1e16 + 0.5, "1e+16"),
            (0.001, "0.001"),
            (-2.5, "-2.5"),
        ] {
            assert_eq!(Num::Float(x).to_string(), want, "{x}");
        }
    }

    #[test]
    fn every_jq_1_6_builtin_a_mapping_can_use_compiles() {
        let unsupported: Vec<&str> = UNSUPPORTED_BUILTINS.iter().map(|(b, _)| *b).collect();
        for builtin in JQ16_BUILTINS.split(' ') {
            let (name, arity) = builtin.split_once('/').unwrap();
            let arity: usize = arity.parse().unwrap();
            let call = match arity {
                0 => name.to_string(),
                n => format!("{name}({})", vec!["."; n].join("; ")),
            };
            let compiled = JqProgram::compile(&call);
            if unsupported.contains(&builtin) {
                assert!(
                    compiled.is_err(),
                    "{builtin} is listed as unsupported but compiles"
                );
            } else {
                assert!(compiled.is_ok(), "{builtin}: {:?}", compiled.err());
            }
        }
        assert_eq!(
            eval("builtins | length", json!(null)).unwrap(),
            Some(json!(JQ16_BUILTINS.split(' ').count()))
        );
    }

    #[test]
    fn halt_is_an_error_and_does_not_stop_the_process() {
        for code in ["halt", "halt_error", "\"bye\" | halt_error(1)"] {
            let e = eval(code, json!(1)).expect_err(code);
            assert!(e.0.contains("halt"), "{code}: {e}");
        }
    }

    #[test]
    fn global_regex_with_empty_matches_terminates() {
        // jq 1.6 loops until it runs out of memory on these.
        assert_eq!(
            eval(r#"gsub(""; "-")"#, json!("abc")).unwrap(),
            Some(json!("-a-b-c"))
        );
        assert_eq!(
            eval(r#"gsub("x*"; "-")"#, json!("abc")).unwrap(),
            Some(json!("-a-b-c"))
        );
        assert_eq!(
            eval(r#"[match("$"; "g") | .offset]"#, json!("aaa")).unwrap(),
            Some(json!([3]))
        );
    }

    #[test]
    fn surrogate_escapes_in_string_literals() {
        assert_eq!(eval(r#""\ud83d\ude80""#, json!(null)).unwrap(), Some(json!("🚀")));
        assert_eq!(
            eval(r#""\ude80x""#, json!(null)).unwrap(),
            Some(json!("\u{fffd}x"))
        );
        let e = JqProgram::compile(r#""\ud83d x""#).unwrap_err();
        assert!(e.message.contains("lex error"), "{e}");
    }

    #[test]
    fn loc_names_the_line_and_keeps_error_positions() {
        assert_eq!(
            eval("1 |\n$__loc__", json!(null)).unwrap(),
            Some(json!({"file": "<top-level>", "line": 2}))
        );
        assert_eq!(
            eval("[$__loc__.line, $ENV.HOME_X,\n $__loc__.line]", json!(null)).unwrap(),
            Some(json!([1, "h", 2]))
        );
        let e = JqProgram::compile("$__loc__ | nosuchfn").unwrap_err();
        assert_eq!(e.offset, Some(11));
    }

    #[test]
    fn message_numbers_keep_their_text_through_tostring() {
        // A documented difference: jq 1.6 would print "1".
        let input: Value = serde_json::from_str(r#"{"x":1.0}"#).unwrap();
        assert_eq!(eval(".x | tostring", input).unwrap(), Some(json!("1.0")));
    }

    #[test]
    fn a_panic_inside_an_evaluation_ends_its_meter() {
        let panicked = std::panic::catch_unwind(|| {
            let _m = budget::Metered::start(Budget::default());
            assert!(jaq_core::meter::is_active());
            panic!("inside the evaluation");
        });
        assert!(panicked.is_err());
        // The thread is not metered any more: its allocations are nobody's.
        assert!(!jaq_core::meter::is_active());
        let _big = vec![0u8; 64 << 20];
        assert_eq!(eval("1 + 1", json!(null)).unwrap(), Some(json!(2)));
    }

    #[test]
    fn the_budget_does_not_leak_between_evaluations() {
        assert!(eval("[repeat(1)]", json!(0)).is_err());
        assert_eq!(eval("[range(5)] | length", json!(0)).unwrap(), Some(json!(5)));
    }
}
