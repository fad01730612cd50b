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
use jaq_std::ValT as _;
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

/// jaq natives that are replaced: `env` by `$ENV`; the rest by natives below
/// that behave like jq 1.6.
const REPLACED_NATIVES: &[(&str, usize)] = &[
    ("env", 0),
    ("fromjson", 0),
    ("ltrimstr", 1),
    ("rtrimstr", 1),
    ("encode_uri", 0),
    ("decode_base64", 0),
    ("floor", 0),
    ("ceil", 0),
    ("round", 0),
    ("nearbyint", 0),
    ("todateiso8601", 0),
    ("matches", 2),
    ("split_matches", 2),
    ("split_", 2),
];

/// Natives: jaq's, minus [`REPLACED_NATIVES`], with `range/3` and `limit/2`
/// renamed so that definitions can wrap them, plus ours.
fn natives() -> Vec<Fun<D>> {
    let mut funs: Vec<Fun<D>> = jaq_core::funs::<D>()
        .chain(jaq_std::funs::<D>())
        .chain(jaq_json::funs::<D>())
        .filter(|(name, args, _)| !REPLACED_NATIVES.contains(&(*name, args.len())))
        .map(|(name, args, f)| match (name, args.len()) {
            ("range", 3) => ("__range", args, f),
            ("limit", 2) => ("__limit", args, f),
            _ => (name, args, f),
        })
        .collect();
    funs.push(tick_native());
    funs.extend(compat_natives());
    funs
}

const PRELUDE: &str = r#"
def range($from; $upto; $by): __range($from; $upto; $by) | __tick;
def limit($n; f): if $n < 0 then f else __limit($n; f) end;
"#;

/// Definitions that replace jaq's where jq 1.6 behaves differently, or add
/// what jaq lacks. A replacement takes the place of the original, so the
/// definitions after it (`with_entries` uses `from_entries`) see it; it may
/// only use what is defined before the original (`from_entries` and `join`
/// sit among jaq-core's definitions, before `type` and `add`; the regular
/// expression definitions before `match` only use `__match`; `null` is
/// defined after `error` and `join`, hence `[][0]`).
const JQ_COMPAT: &str = r#"
def error: if . == [][0] then empty else error_empty as $x | . end;
def error(msgs): msgs | error;
def join($x): reduce .[] as $i ([][0]; (if . == [][0] then "" else . + $x end) + ($i | if . == [][0] then "" elif . < "" then tojson else . end)) // "";
def delpaths($paths): reduce ($paths | sort | reverse)[] as $p (.; getpath($p) |= empty);
def del(f): delpaths([path(f)]);
def from_entries: reduce (.[] | {(.key // .k // .name // .Name // .K // .Key | if tojson == tostring then tojson else . end): (if has("value") then .value elif has("Value") then .Value else .v end)}) as $x ({}; . + $x);
def tonumber: if type == "number" then . elif type == "string" then __parse_number else error("cannot parse as number") end;
def flatten: if isarray or isobject then reduce .[] as $i ([]; if $i | isarray then . + ($i | flatten) else . + [$i] end) else error("Cannot iterate over \(type)") end;
def flatten($d): if $d < 0 then error("flatten depth must not be negative") elif isarray or isobject then reduce .[] as $i ([]; if ($i | isarray) and $d > 0 then . + ($i | flatten($d - 1)) else . + [$i] end) else error("Cannot iterate over \(type)") end;
def capture_of_match: reduce (.captures[] | select(.name != null)) as $c ({}; . + {($c.name): $c.string});
def test(re; flags): __match(re; flags; true);
def scan_(re; flags): __match(re; "g" + flags; false)[] | if (.captures | length) > 0 then [.captures[].string] else .string end;
def match(re; flags): __match(re; flags; false)[];
def capture(re; flags): match(re; flags) | capture_of_match;
def split(re; flags): . as $s | [match(re; "g" + flags) | (.offset, .offset + .length)] as $ms | [0] + $ms + [$s | length] | [range(0; length; 2) as $i | $s[.[$i]:.[$i + 1]]];
def splits(re; flags): split(re; flags)[];
def sub(re; str; flags): . as $in | reduce match(re; flags) as $m ({s: "", p: 0}; .s += $in[.p:$m.offset] + ($m | capture_of_match | first(str)) | .p = $m.offset + $m.length) | .s + $in[.p:];
def test($re): if ($re | isarray) then test($re[0]; $re[1]) else test($re; null) end;
def match($re): if ($re | isarray) then match($re[0]; $re[1]) else match($re; null) end;
def capture($re): if ($re | isarray) then capture($re[0]; $re[1]) else capture($re; null) end;
def scan(re): scan(re; null);
def splits(re): splits(re; null);
def sub(re; str): sub(re; str; "");
def gsub(re; str): sub(re; str; "g");
def @csv: if type != "array" then error("cannot be csv-formatted, only an array can be") else map(if type == "string" then "\"" + gsub("\""; "\"\"") + "\"" elif type == "null" then "" elif type == "boolean" or type == "number" then tostring else error("is not valid in a csv row") end) | join(",") end;
def @tsv: if type != "array" then error("cannot be tsv-formatted, only an array can be") else map(if type == "string" then gsub("\\\\"; "\\\\") | gsub("\t"; "\\t") | gsub("\n"; "\\n") | gsub("\r"; "\\r") elif type == "null" then "" elif type == "boolean" or type == "number" then tostring else error("is not valid in a tsv row") end) | join("\t") end;
def todateiso8601: (if type == "array" then mktime else floor end) | strftime("%Y-%m-%dT%H:%M:%SZ");
def todate: (if type == "array" then mktime else floor end) | strftime("%Y-%m-%dT%H:%M:%SZ");
def leaf_paths: paths(scalars);
def recurse_down: recurse;
def scalars_or_empty: select(. == null or . == true or . == false or type == "number" or type == "string" or ((type == "array" or type == "object") and length == 0));
def IN(s): any(s == .; .);
def IN(src; s): any(src == s; .);
def INDEX(stream; idx_expr): reduce stream as $row ({}; .[$row | idx_expr | if type != "string" then tojson else . end] |= $row);
def INDEX(idx_expr): INDEX(.[]; idx_expr);
def JOIN($idx; idx_expr): [.[] | [., $idx[idx_expr]]];
def JOIN($idx; stream; idx_expr): stream | [., $idx[idx_expr]];
def JOIN($idx; stream; idx_expr; join_expr): stream | [., $idx[idx_expr]] | join_expr;
def tostream: path(def r: (.[]? | r), .; r) as $p | getpath($p) | reduce path(.[]?) as $q ([$p, .]; [$p + $q]);
def fromstream(f): {x: null, e: false} as $init | foreach f as $i ($init; if .e then $init else . end | if $i | length == 2 then setpath(["e"]; $i[0] | length == 0) | setpath(["x"] + $i[0]; $i[1]) else setpath(["e"]; $i[0] | length == 1) end; if .e then .x else empty end);
def truncate_stream(stream): . as $n | null | stream | . as $input | if (.[0] | length) > $n then setpath([0]; .[0][$n:]) else empty end;
def nan: __nan;
def infinite: __infinite;
def lgamma_r: [lgamma, (if . > 0 or (floor % 2 == 0) then 1 else -1 end)];
def format($f): if $f == "text" then @text elif $f == "json" then @json elif $f == "csv" then @csv elif $f == "tsv" then @tsv elif $f == "html" then @html elif $f == "uri" then @uri elif $f == "sh" then @sh elif $f == "base64" then @base64 elif $f == "base64d" then @base64d else error("\($f) is not a valid format") end;
def input_filename: null;
def input_line_number: 0;
def gamma: lgamma;
def nearbyint: rint;
def @base32: error("base32 is not a valid format");
def @base32d: error("base32d is not a valid format");
def builtins: __BUILTINS__;
"#;
const POSTLUDE: &str = r#"
def env: $ENV;
"#;

/// `builtins`: jq 1.6's list, names and arities in jq's order.
pub const JQ16_BUILTINS: &str = "input_line_number/0 input_filename/0 now/0 localtime/0 gmtime/0 mktime/0 strflocaltime/1 strftime/1 strptime/1 stderr/0 debug/0 modulemeta/0 get_jq_origin/0 get_prog_origin/0 get_search_list/0 halt_error/1 halt/0 env/0 format/1 error/1 max/0 min/0 sort/0 nan/0 infinite/0 isnormal/0 isnan/0 isinfinite/0 type/0 utf8bytelength/0 length/0 contains/1 has/1 delpaths/1 getpath/1 setpath/2 implode/0 explode/0 split/1 rtrimstr/1 ltrimstr/1 endswith/1 startswith/1 keys_unsorted/0 keys/0 tostring/0 tonumber/0 fromjson/0 tojson/0 lgamma_r/0 modf/0 frexp/0 ldexp/2 trunc/0 significand/0 scalbln/2 scalb/2 round/0 rint/0 nexttoward/2 nextafter/2 nearbyint/0 logb/0 log1p/0 lgamma/0 gamma/0 fmod/2 fmin/2 fmax/2 fma/3 fdim/2 fabs/0 expm1/0 exp10/0 erfc/0 erf/0 drem/2 copysign/2 ceil/0 yn/2 jn/2 y1/0 y0/0 tgamma/0 tanh/0 tan/0 sqrt/0 sinh/0 sin/0 remainder/2 pow/2 log2/0 log10/0 log/0 j1/0 j0/0 hypot/2 floor/0 exp2/0 exp/0 cosh/0 cos/0 cbrt/0 atanh/0 atan2/2 atan/0 asinh/0 asin/0 acosh/0 acos/0 empty/0 not/0 path/1 range/2 halt_error/0 error/0 map/1 select/1 sort_by/1 group_by/1 unique/0 unique_by/1 max_by/1 min_by/1 add/0 del/1 map_values/1 recurse/1 recurse/2 recurse/0 recurse_down/0 to_entries/0 from_entries/0 with_entries/1 reverse/0 indices/1 index/1 rindex/1 paths/0 paths/1 any/2 any/1 any/0 all/2 all/1 all/0 isfinite/0 arrays/0 objects/0 iterables/0 booleans/0 numbers/0 normals/0 finites/0 strings/0 nulls/0 values/0 scalars/0 scalars_or_empty/0 leaf_paths/0 join/1 flatten/1 flatten/0 range/1 fromdateiso8601/0 todateiso8601/0 fromdate/0 todate/0 match/2 match/1 test/2 test/1 capture/2 capture/1 scan/1 splits/2 splits/1 split/2 sub/2 sub/3 gsub/3 gsub/2 range/3 while/2 until/2 limit/2 isempty/1 first/1 last/1 nth/2 first/0 last/0 nth/1 combinations/0 combinations/1 transpose/0 in/1 inside/1 input/0 repeat/1 inputs/0 ascii_downcase/0 ascii_upcase/0 truncate_stream/1 fromstream/1 tostream/0 bsearch/1 walk/1 INDEX/2 INDEX/1 JOIN/2 JOIN/3 JOIN/4 IN/1 IN/2 pow10/0 builtins/0";

/// Builtins of jq 1.6 that a mapping cannot use, and why. Every other
/// entry of [`JQ16_BUILTINS`] compiles (a unit test checks both).
pub const UNSUPPORTED_BUILTINS: &[(&str, &str)] = &[
    (
        "input/0",
        "reads further inputs; a mapping has one input, the message",
    ),
    (
        "inputs/0",
        "reads further inputs; a mapping has one input, the message",
    ),
    ("modulemeta/0", "modules cannot be loaded in a mapping"),
    ("get_search_list/0", "modules cannot be loaded in a mapping"),
    ("get_jq_origin/0", "modules cannot be loaded in a mapping"),
    ("get_prog_origin/0", "modules cannot be loaded in a mapping"),
];

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
    let mut compat = parse_defs(compat_source());
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

/// [`JQ_COMPAT`] with the `builtins` list filled in (built once).
fn compat_source() -> &'static str {
    static SOURCE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SOURCE.get_or_init(|| {
        let list: Vec<String> = JQ16_BUILTINS.split(' ').map(|b| format!("{b:?}")).collect();
        JQ_COMPAT.replace("__BUILTINS__", &format!("[{}]", list.join(", ")))
    })
}

fn fail<'a>(message: String) -> Exn<'a, Val> {
    Exn::from(JaqError::new(Val::from(message)))
}

fn once<'a>(r: Result<Val, String>) -> jaq_core::ValXs<'a, Val> {
    box_once(r.map_err(fail))
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

fn str_of(v: &Val) -> Option<&str> {
    match v {
        Val::TStr(b) | Val::BStr(b) => std::str::from_utf8(b).ok(),
        _ => None,
    }
}

/// A number as jq 1.6 holds it: a double. Integral doubles that an integer
/// holds exactly are stored as integers (they print the same); `-0` stays a
/// double so that it prints as `-0`.
fn jq_number(f: f64) -> Val {
    const EXACT: f64 = 9_007_199_254_740_992.0;
    if f.fract() == 0.0 && f.abs() <= EXACT && !(f == 0.0 && f.is_sign_negative()) {
        Val::Num(Num::Int(f as isize))
    } else {
        Val::Num(Num::Float(f))
    }
}

/// A JSON text parsed the way jq 1.6 parses it: every number a double.
fn jq16_val(value: &Value) -> Val {
    match value {
        Value::Number(n) => jq_number(n.as_str().parse::<f64>().unwrap_or(f64::NAN)),
        Value::Array(items) => items.iter().map(jq16_val).collect(),
        Value::Object(map) => Val::obj(
            map.iter()
                .map(|(k, v)| (Val::from(k.clone()), jq16_val(v)))
                .collect(),
        ),
        other => to_val(other),
    }
}

fn fromjson(v: &Val) -> Result<Val, String> {
    let text = str_of(v).ok_or_else(|| format!("{} ({v}) only strings can be parsed", type_name(v)))?;
    serde_json::from_str::<Value>(text)
        .map(|parsed| jq16_val(&parsed))
        .map_err(|e| format!("{e} (while parsing '{text}')"))
}

/// `tonumber` on a string: exactly one JSON number (jaq accepts `"1.2.3"`
/// as 1.2; jq refuses it), as a double like jq 1.6.
fn parse_number(v: &Val) -> Result<Val, String> {
    str_of(v)
        .map(str::trim)
        .filter(|s| s.parse::<Number>().is_ok())
        .and_then(|s| s.parse::<f64>().ok())
        .map(jq_number)
        .ok_or_else(|| format!("cannot parse {v} as number"))
}

fn rounded(v: &Val, round: fn(f64) -> f64) -> Result<Val, String> {
    match v {
        Val::Num(Num::Int(_)) => Ok(v.clone()),
        Val::Num(_) => Ok(jq_number(round(v.as_f64().unwrap_or(f64::NAN)))),
        _ => Err(format!("{} ({v}) number required", type_name(v))),
    }
}

/// `ltrimstr`/`rtrimstr`: anything that is not a string pair is returned
/// unchanged, as in jq.
fn trim_fix(v: Val, fix: &Val, prefix: bool) -> Val {
    let (Some(s), Some(f)) = (str_of(&v), str_of(fix)) else {
        return v;
    };
    let rest = if prefix {
        s.strip_prefix(f)
    } else {
        s.strip_suffix(f)
    };
    match rest {
        Some(rest) => Val::from(rest.to_string()),
        None => v,
    }
}

/// `@uri`: jq 1.6 keeps `A-Za-z0-9-_.!~*'()` and percent-encodes every other
/// byte.
fn encode_uri(v: &Val) -> Result<Val, String> {
    let s = str_of(v).ok_or_else(|| format!("{} ({v}) cannot be URI-encoded", type_name(v)))?;
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    Ok(Val::from(out))
}

/// `@base64d`: like jq 1.6, padding is optional and decoding stops at the
/// first `=`; bytes that are not UTF-8 become U+FFFD.
fn decode_base64(v: &Val) -> Result<Val, String> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    use base64::Engine;
    let s = str_of(v).ok_or_else(|| format!("{} ({v}) cannot be base64-decoded", type_name(v)))?;
    let data = s.split('=').next().unwrap_or_default();
    if data.len() % 4 == 1 {
        return Err(format!("string ({v}) trailing base64 byte found"));
    }
    let engine = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::RequireNone)
            .with_decode_allow_trailing_bits(true),
    );
    let bytes = engine
        .decode(data)
        .map_err(|_| format!("string ({v}) is not valid base64 data"))?;
    Ok(Val::from(String::from_utf8_lossy(&bytes).into_owned()))
}

/// Natives that replace jaq's (see [`REPLACED_NATIVES`]) or add to them.
fn compat_natives() -> Vec<Fun<D>> {
    fn nat(name: &'static str, arity: usize, f: jaq_core::RunPtr<D>) -> Fun<D> {
        (name, v(arity), Native::<D>::new(f))
    }
    vec![
        nat("fromjson", 0, |cv| once(fromjson(&cv.1))),
        // jaq defines these as `0 / 0` and `1 / 0`, which are errors here.
        nat("__nan", 0, |_| box_once(Ok(Val::Num(Num::Float(f64::NAN))))),
        nat("__infinite", 0, |_| {
            box_once(Ok(Val::Num(Num::Float(f64::INFINITY))))
        }),
        nat("__parse_number", 0, |cv| once(parse_number(&cv.1))),
        nat("floor", 0, |cv| once(rounded(&cv.1, f64::floor))),
        nat("ceil", 0, |cv| once(rounded(&cv.1, f64::ceil))),
        nat("round", 0, |cv| once(rounded(&cv.1, f64::round))),
        nat("ltrimstr", 1, |mut cv| {
            let fix = cv.0.pop_var();
            box_once(Ok(trim_fix(cv.1, &fix, true)))
        }),
        nat("rtrimstr", 1, |mut cv| {
            let fix = cv.0.pop_var();
            box_once(Ok(trim_fix(cv.1, &fix, false)))
        }),
        nat("encode_uri", 0, |cv| once(encode_uri(&cv.1))),
        nat("decode_base64", 0, |cv| once(decode_base64(&cv.1))),
        nat("__match", 3, |mut cv| {
            let test = cv.0.pop_var();
            let flags = cv.0.pop_var();
            let re = cv.0.pop_var();
            once(regex::run(&cv.1, &re, &flags, matches!(test, Val::Bool(true))))
        }),
    ]
}

/// Regular expressions as jq 1.6 (Oniguruma, Perl syntax) runs them, on
/// `fancy-regex`: Unicode-aware classes (`\w` matches `é`), look-around and
/// back-references; offsets and lengths in code points.
mod regex {
    use super::{str_of, type_name, Val};
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::rc::Rc;

    /// Compiled expressions kept per thread, so that a mapping does not
    /// compile its `gsub` pattern for every message.
    const CACHE_SIZE: usize = 64;

    thread_local! {
        static CACHE: RefCell<HashMap<String, Rc<fancy_regex::Regex>>> = RefCell::new(HashMap::new());
    }

    struct Flags {
        global: bool,
        no_empty: bool,
        prefix: String,
    }

    fn flags(v: &Val) -> Result<Flags, String> {
        let text = match v {
            Val::Null => "",
            other => str_of(other).ok_or_else(|| format!("{other} is not a string"))?,
        };
        let mut f = Flags {
            global: false,
            no_empty: false,
            prefix: String::new(),
        };
        let (mut i, mut s, mut x) = (false, false, false);
        for c in text.chars() {
            match c {
                'g' => f.global = true,
                'n' => f.no_empty = true,
                'i' => i = true,
                'x' => x = true,
                // Oniguruma's MULTILINE: `.` also matches a newline.
                'p' | 'm' => s = true,
                // SINGLELINE is already the Perl syntax's default; the
                // longest-match option has no equivalent (see README).
                's' | 'l' => {}
                _ => return Err(format!("{text} is not a valid modifier string")),
            }
        }
        for (on, flag) in [(i, "i"), (s, "s"), (x, "x")] {
            if on {
                f.prefix.push_str(&format!("(?{flag})"));
            }
        }
        Ok(f)
    }

    /// Oniguruma's Perl syntax in fancy-regex's: `$` and `\Z` match at the
    /// end or before a final newline; `^` only at the start (already so).
    fn translate(re: &str) -> String {
        let mut out = String::with_capacity(re.len() + 8);
        let mut chars = re.chars();
        let mut class_depth = 0usize;
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('Z') if class_depth == 0 => out.push_str(r"(?=\n?\z)"),
                    Some(n) => {
                        out.push('\\');
                        out.push(n);
                    }
                    None => out.push('\\'),
                },
                '[' => {
                    class_depth += 1;
                    out.push(c);
                }
                ']' if class_depth > 0 => {
                    class_depth -= 1;
                    out.push(c);
                }
                '$' if class_depth == 0 => out.push_str(r"(?=\n?\z)"),
                _ => out.push(c),
            }
        }
        out
    }

    fn compile(re: &str, prefix: &str) -> Result<Rc<fancy_regex::Regex>, String> {
        let key = format!("{prefix}\u{0}{re}");
        if let Some(found) = CACHE.with(|c| c.borrow().get(&key).cloned()) {
            return Ok(found);
        }
        let compiled = fancy_regex::Regex::new(&format!("{prefix}{}", translate(re)))
            .map(Rc::new)
            .map_err(|e| format!("{re} (at offset 0) is not a valid regex: {e}"))?;
        CACHE.with(|c| {
            let mut cache = c.borrow_mut();
            if cache.len() >= CACHE_SIZE {
                cache.clear();
            }
            cache.insert(key, compiled.clone());
        });
        Ok(compiled)
    }

    fn chars(text: &str, from: usize, to: usize) -> usize {
        text.get(from..to).map_or(0, |s| s.chars().count())
    }

    /// `_match_impl`: with `test`, whether there is a match; otherwise the
    /// array of match objects jq builds.
    pub(super) fn run(input: &Val, re: &Val, flags_v: &Val, test: bool) -> Result<Val, String> {
        let text = str_of(input).ok_or_else(|| {
            format!(
                "{} ({input}) cannot be matched, as it is not a string",
                type_name(input)
            )
        })?;
        let pattern = str_of(re).ok_or_else(|| {
            format!(
                "{} ({re}) cannot be matched, as it is not a string",
                type_name(re)
            )
        })?;
        let f = flags(flags_v)?;
        let regex = compile(pattern, &f.prefix)?;
        let names: Vec<Option<String>> = regex.capture_names().map(|n| n.map(str::to_string)).collect();
        let mut found = Vec::new();
        let mut start = 0;
        // As jq 1.6: after an empty match the search goes on one character
        // further, and it stops at the end of the text, so an empty match
        // at the very end is only found when it is the first search.
        loop {
            let caps = regex
                .captures_from_pos(text, start)
                .map_err(|e| format!("regex failure: {e}"))?;
            let Some(caps) = caps else { break };
            let Some(whole) = caps.get(0) else { break };
            let empty = whole.start() == whole.end();
            if !(f.no_empty && empty) {
                if test {
                    return Ok(Val::Bool(true));
                }
                let mut captures = Vec::new();
                for (i, name) in names.iter().enumerate().skip(1) {
                    let name = name.clone().map_or(Val::Null, Val::from);
                    let fields: Vec<(Val, Val)> = match caps.get(i) {
                        Some(m) => vec![
                            (
                                Val::from("offset".to_string()),
                                Val::from(chars(text, 0, m.start())),
                            ),
                            (
                                Val::from("length".to_string()),
                                Val::from(chars(text, m.start(), m.end())),
                            ),
                            (Val::from("string".to_string()), Val::from(m.as_str().to_string())),
                            (Val::from("name".to_string()), name),
                        ],
                        None => vec![
                            (Val::from("offset".to_string()), Val::from(-1isize)),
                            (Val::from("string".to_string()), Val::Null),
                            (Val::from("length".to_string()), Val::from(0usize)),
                            (Val::from("name".to_string()), name),
                        ],
                    };
                    captures.push(Val::obj(fields.into_iter().collect()));
                }
                let fields = [
                    (
                        Val::from("offset".to_string()),
                        Val::from(chars(text, 0, whole.start())),
                    ),
                    (
                        Val::from("length".to_string()),
                        Val::from(chars(text, whole.start(), whole.end())),
                    ),
                    (
                        Val::from("string".to_string()),
                        Val::from(whole.as_str().to_string()),
                    ),
                    (Val::from("captures".to_string()), captures.into_iter().collect()),
                ];
                found.push(Val::obj(fields.into_iter().collect()));
            }
            if !f.global {
                break;
            }
            start = if empty {
                match text.get(whole.end()..).and_then(|rest| rest.chars().next()) {
                    Some(c) => whole.end() + c.len_utf8(),
                    None => break,
                }
            } else {
                whole.end()
            };
            if start >= text.len() {
                break;
            }
        }
        if test {
            return Ok(Val::Bool(false));
        }
        Ok(found.into_iter().collect())
    }
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
            reject_recursion(&mut term)?;
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
        let previous = METER.with(|cell| {
            cell.replace(Some(Meter {
                steps_left: budget.steps,
                deadline: Instant::now() + budget.time,
                stack_base: stack_position(),
                stack_bytes: budget.stack_bytes,
                exceeded: None,
            }))
        });
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
        METER.with(|cell| cell.set(previous));
        result
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

/// `$__loc__` is `{"file":"<top-level>","line":N}` with the line it is
/// written on. Each occurrence is replaced by a variable of the same length
/// (`$__l0001` for line 1), so positions in error messages stay right, and
/// the variable is bound to that line's value.
fn with_locations(code: &str) -> (String, Vec<(String, Val)>) {
    const LOC: &str = "$__loc__";
    let mut text = code.to_string();
    let mut vars: Vec<(String, Val)> = Vec::new();
    if !code.contains(LOC) {
        return (text, vars);
    }
    let Some(mut term) = load::parse(code, |p| p.term()) else {
        return (text, vars);
    };
    let mut offsets = Vec::new();
    walk(&mut term, &mut |t| {
        if let Term::Var(name) = t {
            if *name == LOC {
                offsets.extend(position(code, name));
            }
        }
    });
    for at in offsets {
        let line = code.get(..at).unwrap_or(code).matches('\n').count() + 1;
        if line > 9999 {
            continue;
        }
        let name = format!("$__l{line:04}");
        text.replace_range(at..at + LOC.len(), &name);
        if !vars.iter().any(|(n, _)| *n == name) {
            let loc = [
                (
                    Val::from("file".to_string()),
                    Val::from("<top-level>".to_string()),
                ),
                (Val::from("line".to_string()), Val::from(line)),
            ];
            vars.push((name, Val::obj(loc.into_iter().collect())));
        }
    }
    (text, vars)
}

/// jq 1.6 folds constant arithmetic when it compiles, so `1 / 0` is a
/// compile error there; it is here too.
fn reject_constant_division_by_zero(code: &str, term: &mut Term<&str>) -> Result<(), CompileError> {
    use jaq_core::ops::Math;
    let mut found = None;
    walk(term, &mut |t| {
        if let Term::BinOp(l, BinaryOp::Math(Math::Div), r) = t {
            if let (Term::Num(l), Term::Num(r)) = (&**l, &**r) {
                let zero = |n: &str| n.parse::<f64>().is_ok_and(|z| z == 0.0);
                // jq 1.6 folds `0 / 0` to NaN instead (see README).
                if found.is_none() && zero(r) && !zero(l) {
                    found = Some(describe_at(code, "Division by zero".to_string(), r));
                }
            }
        }
    });
    found.map_or(Ok(()), Err)
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
    fn the_budget_does_not_leak_between_evaluations() {
        assert!(eval("[repeat(1)]", json!(0)).is_err());
        assert_eq!(eval("[range(5)] | length", json!(0)).unwrap(), Some(json!(5)));
    }
}
