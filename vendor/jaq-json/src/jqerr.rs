//! port-agent patch: error texts as jq 1.6 words them (`src/builtin.c`
//! `type_error`, `src/jv_aux.c` `jv_get`, `src/execute.c`), so that
//! `try … catch .` gives a mapping the text the Python agent's pyjq gave.

use crate::{Error, Val};
use alloc::{format, string::String};

/// jq's name of a value's kind.
pub fn kind_name(v: &Val) -> &'static str {
    match v {
        Val::Null => "null",
        Val::Bool(_) => "boolean",
        Val::Num(_) => "number",
        Val::TStr(_) | Val::BStr(_) => "string",
        Val::Arr(_) => "array",
        Val::Obj(_) => "object",
    }
}

/// A value as jq 1.6 shows it in an error (`jv_dump_string_trunc` with a
/// 15-byte buffer): its compact JSON text, cut to 11 bytes followed by
/// `...` when longer than 14 bytes. A character cut in two becomes U+FFFD.
pub fn dump_trunc(v: &Val) -> String {
    let text = format!("{v}");
    let bytes = text.as_bytes();
    if bytes.len() <= 14 {
        return text;
    }
    let mut cut = bytes[..11].to_vec();
    cut.extend_from_slice(b"...");
    String::from_utf8_lossy(&cut).into_owned()
}

/// `KIND (VALUE) MESSAGE`, as jq 1.6's `type_error`.
pub fn type_error(v: &Val, msg: &str) -> Error {
    Error::str(format!("{} ({}) {msg}", kind_name(v), dump_trunc(v)))
}

/// `KIND (VALUE) and KIND (VALUE) MESSAGE`, as jq 1.6's `type_error2`.
pub fn type_error2(a: &Val, b: &Val, msg: &str) -> Error {
    Error::str(format!(
        "{} ({}) and {} ({}) {msg}",
        kind_name(a),
        dump_trunc(a),
        kind_name(b),
        dump_trunc(b)
    ))
}

/// Indexing `t` with `k` failed (`jv_get`).
pub fn index_error(t: &Val, k: &Val) -> Error {
    match k {
        Val::TStr(s) | Val::BStr(s) if s.len() < 30 => Error::str(format!(
            "Cannot index {} with string \"{}\"",
            kind_name(t),
            String::from_utf8_lossy(s)
        )),
        _ => Error::str(format!("Cannot index {} with {}", kind_name(t), kind_name(k))),
    }
}

/// Iterating over `v` (`.[]`) failed.
pub fn iterate_error(v: &Val) -> Error {
    Error::str(format!("Cannot iterate over {} ({})", kind_name(v), dump_trunc(v)))
}
