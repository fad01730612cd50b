//! What makes jaq behave like jq 1.6 for mappings: the natives that replace
//! jaq's, the definitions that replace or add to its standard library, and
//! the list of jq 1.6 builtins.

use jaq_core::box_iter::box_once;
use jaq_core::load;
use jaq_core::load::parse::Def;
use jaq_core::native::{v, Fun};
use jaq_core::{Bind, Error as JaqError, Exn, Native};
use jaq_json::jqerr::dump_trunc;
use jaq_json::Num;
use jaq_std::ValT as _;
use serde_json::{Number, Value};

use super::budget::tick_native;
use super::{regex, str_of, to_val, type_name, Thrown, Val, D};

/// jaq natives that are replaced: `env` by `$ENV`; the rest by natives below
/// that behave like jq 1.6.
pub(super) const REPLACED_NATIVES: &[(&str, usize)] = &[
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
pub(super) fn natives() -> Vec<Fun<D>> {
    let jq16 = super::jq16::jq16_natives();
    let ours: Vec<(&str, usize)> = jq16.iter().map(|(n, a, _)| (*n, a.len())).collect();
    let mut funs: Vec<Fun<D>> = jaq_core::funs::<D>()
        .chain(jaq_std::funs::<D>())
        .chain(jaq_json::funs::<D>())
        .filter(|(name, args, _)| !REPLACED_NATIVES.contains(&(*name, args.len())))
        .filter(|(name, args, _)| !ours.contains(&(*name, args.len())))
        .map(|(name, args, f)| match (name, args.len()) {
            ("range", 3) => ("__range", args, f),
            ("limit", 2) => ("__limit", args, f),
            ("explode", 0) => ("__explode", args, f),
            ("sort_by", 1) => ("__sort_by", args, f),
            ("fromdateiso8601", 0) => ("__fromdateiso8601", args, f),
            ("group_by", 1) => ("__group_by", args, f),
            _ => (name, args, f),
        })
        .collect();
    funs.push(tick_native());
    funs.extend(compat_natives());
    funs.extend(jq16);
    funs
}

pub(super) const PRELUDE: &str = r#"
def range($from; $upto; $by): __range($from; $upto; $by) | __tick;
def sort_by(f): [.[] | [f]] as $k | __array_or($k; "cannot be sorted, as they are not both arrays") | __sort_by(f);
def group_by(f): [.[] | [f]] as $k | __array_or($k; "cannot be sorted, as they are not both arrays") | __group_by(f);
def limit($n; f): if $n < 0 then f else __limit($n; f) end;
def explode: __explode_check | __reserve_codepoints | __explode;
"#;

/// Definitions that replace jaq's where jq 1.6 behaves differently, or add
/// what jaq lacks. A replacement takes the place of the original, so the
/// definitions after it (`with_entries` uses `from_entries`) see it; it may
/// only use what is defined before the original (`from_entries` and `join`
/// sit among jaq-core's definitions, before `type` and `add`; the regular
/// expression definitions before `match` only use `__match`; `null` is
/// defined after `error` and `join`, hence `[][0]`).
pub(super) const JQ_COMPAT: &str = r#"
def error: if . == [][0] then empty else error_empty as $x | . end;
def error(msgs): msgs | error;
def join($x): reduce .[] as $i ([][0]; (if . == [][0] then "" else . + $x end) + ($i | if . == [][0] then "" elif . < "" then tojson else . end)) // "";
def delpaths($paths): reduce ($paths | sort | reverse)[] as $p (.; getpath($p) |= empty);
def del(f): delpaths([path(f)]);
def range($from; $upto): __numeric_bounds($from; $upto) | range($from; $upto; 1);
def to_entries: [keys_unsorted[] as $k | {key: $k, value: .[$k]}];
def from_entries: map({(.key // .Key // .name // .Name): (if has("value") then .value else .Value end)}) | reduce .[] as $x ([][0]; . + $x) | . //= {};
def with_entries(f): to_entries | map(f) | from_entries;
def tonumber: if type == "number" then . elif type == "string" then __parse_number else __type_error("cannot be parsed as a number") end;
def flatten($x): if $x < 0 then error("flatten depth must not be negative") else def f($x): reduce .[] as $i ([]; if $i | type == "array" and $x != 0 then . + ($i | f($x - 1)) else . + [$i] end); f($x) end;
def flatten: def f($x): reduce .[] as $i ([]; if $i | type == "array" and $x != 0 then . + ($i | f($x - 1)) else . + [$i] end); f(-1);
def reverse: [.[length - 1 - range(0; length)]];
def @sh: (if type == "array" then . else [.] end) | map(if type == "string" then "'" + (split("'") | join("'\\''")) + "'" elif type == "array" or type == "object" then __type_error("can not be escaped for shell") else tostring end) | join(" ");
def min: __array_or(.; "cannot be iterated over") | min_by(.);
def max: __array_or(.; "cannot be iterated over") | max_by(.);
def min_by(f): map([f]) as $k | __array_or($k; "cannot be iterated over") | reduce min_by_or_empty(f) as $x ([][0]; $x);
def max_by(f): map([f]) as $k | __array_or($k; "cannot be iterated over") | reduce max_by_or_empty(f) as $x ([][0]; $x);
def capture_of_match: reduce (.captures[] | select(.name != null)) as $c ({}; . + {($c.name): $c.string});
def test(re; flags): __test(re; flags);
def scan_(re; flags): __matches(re; "g" + flags) | if (.captures | length) > 0 then [.captures[].string] else .string end;
def match(re; flags): __matches(re; flags);
def capture(re; flags): match(re; flags) | capture_of_match;
def split(re; flags): __split(re; "g" + flags);
def splits(re; flags): split(re; flags)[];
def sub(re; str; flags): __sub(re; str; flags);
def test($re): if ($re | isarray) then test($re[0]; $re[1]) else test($re; null) end;
def match($re): if ($re | isarray) then match($re[0]; $re[1]) else match($re; null) end;
def capture($re): if ($re | isarray) then capture($re[0]; $re[1]) else capture($re; null) end;
def scan(re): scan(re; null);
def splits(re): splits(re; null);
def sub(re; str): sub(re; str; "");
def gsub(re; str): sub(re; str; "g");
def @csv: if type != "array" then __type_error("cannot be csv-formatted, only array") else map(if type == "string" then "\"" + gsub("\""; "\"\"") + "\"" elif type == "null" then "" elif type == "boolean" or type == "number" then tostring else __type_error("is not valid in a csv row") end) | join(",") end;
def @tsv: if type != "array" then __type_error("cannot be tsv-formatted, only array") else map(if type == "string" then gsub("\\\\"; "\\\\") | gsub("\t"; "\\t") | gsub("\n"; "\\n") | gsub("\r"; "\\r") elif type == "null" then "" elif type == "boolean" or type == "number" then tostring else __type_error("is not valid in a csv row") end) | join("\t") end;
def fromdateiso8601: if type != "string" then error("strptime/1 requires string inputs and arguments") else . as $d | try __fromdateiso8601 catch error("date \"\($d)\" does not match format \"%Y-%m-%dT%H:%M:%SZ\"") end;
def fromdate: if type != "string" then error("strptime/1 requires string inputs and arguments") else . as $d | try __fromdateiso8601 catch error("date \"\($d)\" does not match format \"%Y-%m-%dT%H:%M:%SZ\"") end;
def todateiso8601: if type == "number" then (if . < 0 then -(-. | floor) else floor end) elif type == "array" then mktime else error("strftime/1 requires parsed datetime inputs") end | strftime("%Y-%m-%dT%H:%M:%SZ");
def todate: if type == "number" then (if . < 0 then -(-. | floor) else floor end) elif type == "array" then mktime else error("strftime/1 requires parsed datetime inputs") end | strftime("%Y-%m-%dT%H:%M:%SZ");
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
def format($f): if $f == "text" then @text elif $f == "json" then @json elif $f == "csv" then @csv elif $f == "tsv" then @tsv elif $f == "html" then @html elif $f == "uri" then @uri elif $f == "sh" then @sh elif $f == "base64" then @base64 elif $f == "base64d" then @base64d else error("\($f) is not a valid format") end;
def input_filename: null;
def input_line_number: 0;
def gamma: lgamma;
def nearbyint: rint;
def @base32: error("base32 is not a valid format");
def @base32d: error("base32d is not a valid format");
def builtins: __BUILTINS__;
"#;
pub(super) const POSTLUDE: &str = r#"
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

pub(super) fn parse_defs(code: &'static str) -> Vec<Def<&'static str>> {
    load::parse(code, |p| p.defs()).unwrap_or_default()
}

pub(super) fn prelude_defs() -> Vec<Def<&'static str>> {
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
    // A native of jq 1.6's (`jq16`) takes the place of jaq's definition of
    // the same builtin (`significand`, `logb`, `drem`, …).
    let natives: Vec<(&str, usize)> = super::jq16::jq16_natives()
        .iter()
        .map(|(n, a, _)| (*n, a.len()))
        .collect();
    defs.retain(|d| !natives.contains(&(d.name, d.args.len())));
    defs
}

/// [`JQ_COMPAT`] with the `builtins` list filled in (built once).
pub(super) fn compat_source() -> &'static str {
    static SOURCE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SOURCE.get_or_init(|| {
        let list: Vec<String> = JQ16_BUILTINS.split(' ').map(|b| format!("{b:?}")).collect();
        JQ_COMPAT.replace("__BUILTINS__", &format!("[{}]", list.join(", ")))
    })
}

pub(super) fn fail<'a>(message: impl Into<Thrown>) -> Exn<'a, Val> {
    Exn::from(JaqError::new(Val::from(message.into().0)))
}

pub(super) fn once<'a>(r: Result<Val, Thrown>) -> jaq_core::ValXs<'a, Val> {
    box_once(r.map_err(fail))
}

/// A number as jq 1.6 holds it: a double. Integral doubles that an integer
/// holds exactly are stored as integers (they print the same); `-0` stays a
/// double so that it prints as `-0`.
pub(super) fn jq_number(f: f64) -> Val {
    const EXACT: f64 = 9_007_199_254_740_992.0;
    if f.fract() == 0.0 && f.abs() <= EXACT && !(f == 0.0 && f.is_sign_negative()) {
        Val::Num(Num::Int(f as isize))
    } else {
        Val::Num(Num::Float(f))
    }
}

/// A JSON text parsed the way jq 1.6 parses it: every number a double.
pub(super) fn jq16_val(value: &Value) -> Val {
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

pub(super) fn fromjson(v: &Val) -> Result<Val, Thrown> {
    let text = str_of(v).ok_or_else(|| {
        Thrown(format!(
            "{} ({}) only strings can be parsed",
            type_name(v),
            dump_trunc(v)
        ))
    })?;
    // The parsed value, and jq's copy of it, take several times the text:
    // ask the evaluation's memory budget first (the parser cannot stop
    // half-way).
    jaq_core::meter::reserve(text.len().saturating_mul(4))
        .map_err(|why| format!("evaluation stopped: {why}"))?;
    serde_json::from_str::<Value>(text)
        .map(|parsed| jq16_val(&parsed))
        .map_err(|e| Thrown(format!("{e} (while parsing '{text}')")))
}

/// `tonumber` on a string: exactly one JSON number (jaq accepts `"1.2.3"`
/// as 1.2; jq refuses it), as a double like jq 1.6.
pub(super) fn parse_number(v: &Val) -> Result<Val, Thrown> {
    str_of(v)
        .map(str::trim)
        .filter(|s| s.parse::<Number>().is_ok())
        .and_then(|s| s.parse::<f64>().ok())
        .map(jq_number)
        .ok_or_else(|| Thrown(format!("cannot parse {v} as number")))
}

pub(super) fn rounded(v: &Val, round: fn(f64) -> f64) -> Result<Val, Thrown> {
    match v {
        Val::Num(Num::Int(_)) => Ok(v.clone()),
        Val::Num(_) => Ok(jq_number(round(v.as_f64().unwrap_or(f64::NAN)))),
        _ => Err(Thrown(format!(
            "{} ({}) number required",
            type_name(v),
            dump_trunc(v)
        ))),
    }
}

/// `ltrimstr`/`rtrimstr`: anything that is not a string pair is returned
/// unchanged, as in jq.
pub(super) fn trim_fix(v: Val, fix: &Val, prefix: bool) -> Val {
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
pub(super) fn encode_uri(v: &Val) -> Result<Val, Thrown> {
    let s = str_of(v).ok_or_else(|| {
        Thrown(format!(
            "{} ({}) cannot be URI-encoded",
            type_name(v),
            dump_trunc(v)
        ))
    })?;
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
pub(super) fn decode_base64(v: &Val) -> Result<Val, Thrown> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    use base64::Engine;
    let s = str_of(v).ok_or_else(|| {
        Thrown(format!(
            "{} ({}) cannot be base64-decoded",
            type_name(v),
            dump_trunc(v)
        ))
    })?;
    let data = s.split('=').next().unwrap_or_default();
    if data.len() % 4 == 1 {
        return Err(Thrown(format!(
            "string ({}) trailing base64 byte found",
            dump_trunc(v)
        )));
    }
    let engine = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::RequireNone)
            .with_decode_allow_trailing_bits(true),
    );
    let bytes = engine
        .decode(data)
        .map_err(|_| format!("string ({}) is not valid base64 data", dump_trunc(v)))?;
    Ok(Val::from(String::from_utf8_lossy(&bytes).into_owned()))
}

/// `__reserve_codepoints`: the identity, after asking the evaluation's
/// memory budget for the array `explode` will build from a string (sixteen
/// times the size of an ASCII text).
fn reserve_codepoints(v: Val) -> Result<Val, Thrown> {
    if let Some(text) = str_of(&v) {
        let size = text.chars().count().saturating_mul(std::mem::size_of::<Val>());
        jaq_core::meter::reserve(size).map_err(|why| format!("evaluation stopped: {why}"))?;
    }
    Ok(v)
}

/// Natives that replace jaq's (see [`REPLACED_NATIVES`]) or add to them.
pub(super) fn compat_natives() -> Vec<Fun<D>> {
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
        nat("__test", 2, |mut cv| {
            let flags = cv.0.pop_var();
            let re = cv.0.pop_var();
            once(regex::test(cv.1, &re, &flags))
        }),
        nat("__matches", 2, |mut cv| {
            let flags = cv.0.pop_var();
            let re = cv.0.pop_var();
            match regex::Scan::new(cv.1, &re, &flags) {
                Ok(scan) => Box::new(scan.map(|r| r.map_err(fail))),
                Err(e) => box_once(Err(fail(e))),
            }
        }),
        nat("__split", 2, |mut cv| {
            let flags = cv.0.pop_var();
            let re = cv.0.pop_var();
            once(regex::Scan::new(cv.1, &re, &flags).and_then(regex::split))
        }),
        nat("__reserve_codepoints", 0, |cv| once(reserve_codepoints(cv.1))),
        (
            "__sub",
            Box::new([Bind::Var(()), Bind::Fun(()), Bind::Var(())]),
            Native::<D>::new(|mut cv| {
                let flags = cv.0.pop_var();
                let (replace, ctx) = cv.0.pop_fun();
                let re = cv.0.pop_var();
                let scan = match regex::Scan::new(cv.1, &re, &flags) {
                    Ok(scan) => scan,
                    Err(e) => return box_once(Err(fail(e))),
                };
                let result = regex::sub(scan, |captures| replace.run((ctx.clone(), captures)).next());
                match result {
                    Ok(Some(v)) => box_once(Ok(v)),
                    Ok(None) => Box::new(std::iter::empty()),
                    Err(regex::SubError::Message(e)) => box_once(Err(fail(e))),
                    Err(regex::SubError::Exn(e)) => box_once(Err(e)),
                }
            }),
        ),
    ]
}
