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
//!   User definitions that call themselves are rejected at compile time,
//!   because the budget can only be checked inside the standard library.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jaq_core::box_iter::box_once;
use jaq_core::data::JustLut;
use jaq_core::load::parse::{BinaryOp, Def, Pattern, Term};
use jaq_core::load::{self, Arena, File, Loader};
use jaq_core::native::{v, Fun};
use jaq_core::path::Part;
use jaq_core::{Compiler, Ctx, Error as JaqError, Exn, Native, Vars};
use jaq_json::Num;
/// A jq value (what mappings evaluate on).
pub use jaq_json::Val;
use serde_json::{Map, Number, Value};

type D = JustLut<Val>;
type Filter = jaq_core::Filter<D>;

/// Limits of one evaluation.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Definition calls and `range` outputs.
    pub steps: u64,
    /// Wall-clock time.
    pub time: Duration,
    /// Stack bytes the evaluation may use below its starting point.
    pub stack_bytes: usize,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            steps: 250_000,
            time: Duration::from_secs(1),
            stack_bytes: 4 << 20,
        }
    }
}

/// Stack size of the threads that evaluate jq (the agent's runtime workers).
///
/// A runaway loop can build a value nested as deep as the step budget
/// (`[while(true; [.])]`), and dropping it recurses once per level; this
/// much stack (virtual memory, committed only when touched) absorbs that
/// with room to spare. Evaluating on a smaller stack (a default 2 MiB test
/// thread) is fine for ordinary expressions.
pub const EVAL_THREAD_STACK: usize = 64 << 20;

struct Meter {
    steps_left: u64,
    deadline: Instant,
    stack_base: usize,
    stack_bytes: usize,
    exceeded: Option<&'static str>,
}

thread_local! {
    static METER: Cell<Option<Meter>> = const { Cell::new(None) };
}

fn stack_position() -> usize {
    let marker = 0u8;
    std::hint::black_box(&marker) as *const u8 as usize
}

/// Spend one step of the current evaluation's budget.
fn tick() -> Result<(), &'static str> {
    METER.with(|cell| {
        let Some(mut m) = cell.take() else {
            return Ok(());
        };
        let result = if let Some(why) = m.exceeded {
            Err(why)
        } else if m.steps_left == 0 {
            Err("step limit exceeded")
        } else if m.stack_base.saturating_sub(stack_position()) > m.stack_bytes {
            Err("recursion too deep")
        } else if m.steps_left % 1024 == 0 && Instant::now() > m.deadline {
            Err("time limit exceeded")
        } else {
            m.steps_left -= 1;
            Ok(())
        };
        if let Err(why) = result {
            // Once exceeded, every later step fails too, so `try` cannot
            // keep a runaway loop alive.
            m.exceeded = Some(why);
        }
        cell.set(Some(m));
        result
    })
}

fn budget_error<'a>(why: &'static str) -> Exn<'a, Val> {
    Exn::from(JaqError::new(Val::from(format!("evaluation stopped: {why}"))))
}

/// The identity filter `__tick`, spending one step; usable in paths and
/// updates so that it can prefix any definition.
fn tick_native() -> Fun<D> {
    let native = Native::<D>::new(|cv| match tick() {
        Ok(()) => box_once(Ok(cv.1)),
        Err(why) => box_once(Err(budget_error(why))),
    })
    .with_paths(|cv| match tick() {
        Ok(()) => box_once(Ok(cv.1)),
        Err(why) => box_once(Err(budget_error(why))),
    })
    .with_update(|cv, f| match tick() {
        Ok(()) => f(cv.1),
        Err(why) => box_once(Err(budget_error(why))),
    });
    ("__tick", v(0), native)
}

/// Natives: jaq's, with `env` replaced by `$ENV` and `range/3` renamed so a
/// metered definition can wrap it.
fn natives() -> Vec<Fun<D>> {
    let mut funs: Vec<Fun<D>> = jaq_core::funs::<D>()
        .chain(jaq_std::funs::<D>())
        .chain(jaq_json::funs::<D>())
        .filter(|(name, _, _)| *name != "env")
        .map(|(name, args, f)| match (name, args.len()) {
            ("range", 3) => ("__range", args, f),
            _ => (name, args, f),
        })
        .collect();
    funs.push(tick_native());
    funs.push(parse_number_native());
    funs
}

const PRELUDE: &str = r#"
def range($from; $upto; $by): __range($from; $upto; $by) | __tick;
"#;

/// Definitions that replace jaq's where jq 1.6 behaves differently, or add
/// what jaq lacks. A replacement takes the place of the original, so the
/// definitions after it (`with_entries` uses `from_entries`) see it; it may
/// only use what is defined before the original (`from_entries` sits among
/// jaq-core's definitions, before `type` and `add`).
const JQ_COMPAT: &str = r#"
def from_entries: reduce (.[] | {(.key // .k // .name // .Name // .K // .Key | if tojson == tostring then tojson else . end): (if has("value") then .value elif has("Value") then .Value else .v end)}) as $x ({}; . + $x);
def tonumber: if type == "number" then . elif type == "string" then __parse_number else error("cannot parse as number") end;
def @csv: if type != "array" then error("cannot be csv-formatted, only an array can be") else map(if type == "string" then "\"" + gsub("\""; "\"\"") + "\"" elif type == "null" then "" elif type == "boolean" or type == "number" then tostring else error("is not valid in a csv row") end) | join(",") end;
def @tsv: if type != "array" then error("cannot be tsv-formatted, only an array can be") else map(if type == "string" then gsub("\\\\"; "\\\\") | gsub("\t"; "\\t") | gsub("\n"; "\\n") | gsub("\r"; "\\r") elif type == "null" then "" elif type == "boolean" or type == "number" then tostring else error("is not valid in a tsv row") end) | join("\t") end;
"#;
const POSTLUDE: &str = r#"
def env: $ENV;
"#;

fn parse_defs(code: &'static str) -> Vec<Def<&'static str>> {
    load::parse(code, |p| p.defs()).unwrap_or_default()
}

/// Prefix `body` with `__tick |`.
fn tick_first(body: &mut Term<&'static str>) {
    let inner = std::mem::take(body);
    *body = Term::BinOp(
        Box::new(Term::Call("__tick", Vec::new())),
        BinaryOp::Pipe(None),
        Box::new(inner),
    );
}

/// Meter a definition and every definition nested in it (`repeat` loops
/// through a local `def rec`).
fn metered(mut def: Def<&'static str>) -> Def<&'static str> {
    walk(&mut def.body, &mut |t| {
        if let Term::Def(defs, _) = t {
            defs.iter_mut().for_each(|d| tick_first(&mut d.body));
        }
    });
    tick_first(&mut def.body);
    def
}

fn prelude_defs() -> Vec<Def<&'static str>> {
    let mut compat = parse_defs(JQ_COMPAT);
    let mut defs: Vec<Def<&'static str>> = parse_defs(PRELUDE)
        .into_iter()
        .chain(jaq_core::defs())
        .chain(jaq_std::defs())
        .chain(jaq_json::defs())
        .map(|d| {
            let same = |c: &Def<&'static str>| c.name == d.name && c.args.len() == d.args.len();
            match compat.iter().position(same) {
                Some(i) => compat.remove(i),
                None => d,
            }
        })
        .collect();
    defs.extend(compat);
    defs.extend(parse_defs(POSTLUDE));
    defs.into_iter().map(metered).collect()
}

/// `__parse_number`: a string holding exactly one JSON number, strictly
/// (jaq's `tonumber` accepts `"1.2.3"` as 1.2; jq refuses it).
fn parse_number_native() -> Fun<D> {
    let native = Native::<D>::new(|cv| {
        let parsed = match &cv.1 {
            Val::TStr(b) | Val::BStr(b) => std::str::from_utf8(b)
                .ok()
                .filter(|s| s.trim().parse::<Number>().is_ok())
                .and_then(|s| {
                    // jq 1.6 makes every parsed number a double; integers
                    // that fit stay exact (they print the same).
                    let s = s.trim();
                    s.parse::<isize>()
                        .map(|i| Val::Num(Num::Int(i)))
                        .or_else(|_| s.parse::<f64>().map(|f| Val::Num(Num::Float(f))))
                        .ok()
                }),
            _ => None,
        };
        match parsed {
            Some(v) => box_once(Ok(v)),
            None => box_once(Err(Exn::from(JaqError::new(Val::from(format!(
                "cannot parse {} as number",
                cv.1
            )))))),
        }
    });
    ("__parse_number", v(0), native)
}

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

/// The environment visible to expressions (`env`, `$ENV`).
#[derive(Clone)]
pub struct JqEnv(Val);

impl JqEnv {
    /// Snapshot the given variables.
    pub fn new(vars: impl IntoIterator<Item = (String, String)>) -> Self {
        let sorted: BTreeMap<String, String> = vars.into_iter().collect();
        let map = sorted.into_iter().map(|(k, v)| (Val::from(k), Val::from(v)));
        JqEnv(Val::obj(map.collect()))
    }

    /// Snapshot the process environment.
    pub fn from_process() -> Self {
        Self::new(std::env::vars())
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
            .with_global_vars(["$ENV"])
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
            reject_recursion(&mut term)?;
        }
        Ok(JqProgram {
            filter: Arc::new(filter),
            source: code.into(),
        })
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Run on `input`; the first output, `None` when there is none.
    pub fn first(&self, input: &Val, env: &JqEnv, budget: Budget) -> Result<Option<Val>, RunError> {
        let previous = METER.with(|cell| {
            cell.replace(Some(Meter {
                steps_left: budget.steps,
                deadline: Instant::now() + budget.time,
                stack_base: stack_position(),
                stack_bytes: budget.stack_bytes,
                exceeded: None,
            }))
        });
        let ctx = Ctx::<D>::new(&self.filter.lut, Vars::new([env.0.clone()]));
        let result = {
            let mut outputs = self.filter.id.run((ctx, input.clone()));
            match outputs.next() {
                None => Ok(None),
                Some(Ok(v)) => Ok(Some(v)),
                Some(Err(e)) => Err(RunError(exn_message(e))),
            }
        };
        METER.with(|cell| cell.set(previous));
        result
    }
}

fn exn_message(e: Exn<Val>) -> String {
    let r: Result<Val, JaqError<Val>> = jaq_core::unwrap_valr(Err(e));
    match r {
        Ok(_) => "unexpected control flow".into(),
        Err(err) => {
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

/// Reject definitions that call themselves: the budget cannot be checked
/// inside user code, and a mapping never needs recursion.
fn reject_recursion(term: &mut Term<&str>) -> Result<(), CompileError> {
    let mut found = None;
    walk(term, &mut |t| {
        if let Term::Def(defs, _) = t {
            for d in defs {
                if found.is_none() && calls(&mut d.body, d.name) {
                    found = Some(d.name.to_string());
                }
            }
        }
    });
    match found {
        Some(name) => Err(CompileError {
            message: format!("recursive definition '{name}' is not allowed in a mapping"),
            offset: None,
        }),
        None => Ok(()),
    }
}

fn calls(term: &mut Term<&str>, name: &str) -> bool {
    let mut hit = false;
    walk(term, &mut |t| {
        if let Term::Call(n, _) = t {
            hit |= *n == name;
        }
    });
    hit
}

/// Visit `term` and every term inside it, parents first.
fn walk<'s>(term: &mut Term<&'s str>, f: &mut dyn FnMut(&mut Term<&'s str>)) {
    f(term);
    match term {
        Term::Id | Term::Recurse | Term::Num(_) | Term::Break(_) | Term::Var(_) => {}
        Term::Str(_, parts) => {
            for p in parts {
                if let jaq_core::load::lex::StrPart::Term(t) = p {
                    walk(t, f);
                }
            }
        }
        Term::Arr(t) => {
            if let Some(t) = t {
                walk(t, f);
            }
        }
        Term::Obj(kvs) => {
            for (k, v) in kvs {
                walk(k, f);
                if let Some(v) = v {
                    walk(v, f);
                }
            }
        }
        Term::Neg(t) | Term::Label(_, t) => walk(t, f),
        Term::BinOp(l, op, r) => {
            walk(l, f);
            if let BinaryOp::Pipe(Some(p)) = op {
                walk_pattern(p, f);
            }
            walk(r, f);
        }
        Term::Fold(_, xs, pat, args) => {
            walk(xs, f);
            walk_pattern(pat, f);
            for a in args {
                walk(a, f);
            }
        }
        Term::TryCatch(t, c) => {
            walk(t, f);
            if let Some(c) = c {
                walk(c, f);
            }
        }
        Term::IfThenElse(branches, els) => {
            for (c, t) in branches {
                walk(c, f);
                walk(t, f);
            }
            if let Some(e) = els {
                walk(e, f);
            }
        }
        Term::Def(defs, rest) => {
            for d in defs {
                walk(&mut d.body, f);
            }
            walk(rest, f);
        }
        Term::Call(_, args) => {
            for a in args {
                walk(a, f);
            }
        }
        Term::Path(t, path) => {
            walk(t, f);
            for (part, _) in &mut path.0 {
                match part {
                    Part::Index(i) => walk(i, f),
                    Part::Range(a, b) => {
                        for x in [a, b].into_iter().flatten() {
                            walk(x, f);
                        }
                    }
                }
            }
        }
    }
}

fn walk_pattern<'s>(p: &mut Pattern<&'s str>, f: &mut dyn FnMut(&mut Term<&'s str>)) {
    match p {
        Pattern::Var(_) => {}
        Pattern::Arr(ps) => ps.iter_mut().for_each(|p| walk_pattern(p, f)),
        Pattern::Obj(kvs) => {
            for (k, p) in kvs {
                walk(k, f);
                walk_pattern(p, f);
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
        let e = JqProgram::compile("def f: f; f").unwrap_err();
        assert!(e.message.contains("recursive definition 'f'"), "{e}");
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
    fn the_budget_does_not_leak_between_evaluations() {
        assert!(eval("[repeat(1)]", json!(0)).is_err());
        assert_eq!(eval("[range(5)] | length", json!(0)).unwrap(), Some(json!(5)));
    }
}
