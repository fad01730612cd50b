//! Compact JSON writers that reproduce other programs' bytes exactly.
//!
//! Signatures are computed over serialised JSON, so "the same JSON" is not
//! enough: the bytes must match the producer's. Two styles exist:
//!
//! * [`to_raw_string`] — like JavaScript's `JSON.stringify`: compact, keys in
//!   their original order, non-ASCII written raw, only `"`, `\` and control
//!   characters escaped. Port signs incoming messages this way.
//! * [`to_ascii_string`] — like Python's `json.dumps(..., separators=(",",
//!   ":"))`: the same, but every non-ASCII character (and DEL) escaped as
//!   `\uXXXX` (surrogate pairs above U+FFFF). The Python agent signs outgoing
//!   bodies this way.
//!
//! Numbers are written as they were read (`serde_json` is built with
//! `arbitrary_precision`), so `1e-07`, `-0.0` or a 30-digit integer survive.

use serde_json::Value;

/// Serialise like `JSON.stringify`: compact, non-ASCII raw.
pub fn to_raw_string(value: &Value) -> String {
    let mut out = String::with_capacity(256);
    write_value(&mut out, value, false);
    out
}

/// Serialise like Python's `json.dumps` with compact separators: non-ASCII
/// escaped as `\uXXXX`.
pub fn to_ascii_string(value: &Value) -> String {
    let mut out = String::with_capacity(256);
    write_value(&mut out, value, true);
    out
}

fn write_value(out: &mut String, value: &Value, ascii: bool) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => write_str(out, s, ascii),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item, ascii);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_str(out, k, ascii);
                out.push(':');
                write_value(out, v, ascii);
            }
            out.push('}');
        }
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn push_u16_escape(out: &mut String, unit: u16) {
    out.push_str("\\u");
    for shift in [12, 8, 4, 0] {
        out.push(HEX[((unit >> shift) & 0xf) as usize] as char);
    }
}

fn write_str(out: &mut String, s: &str, ascii: bool) {
    out.push('"');
    let bytes = s.as_bytes();
    let mut start = 0;
    // Fast path: copy runs of bytes that need no escaping in one go.
    for (i, c) in s.char_indices() {
        let needs = match c {
            '"' | '\\' => true,
            c if (c as u32) < 0x20 => true,
            c if ascii && (c as u32) >= 0x7f => true,
            _ => false,
        };
        if !needs {
            continue;
        }
        out.push_str(s.get(start..i).unwrap_or_default());
        start = i + c.len_utf8();
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    push_u16_escape(out, *unit);
                }
            }
        }
    }
    out.push_str(std::str::from_utf8(bytes.get(start..).unwrap_or_default()).unwrap_or_default());
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn raw_keeps_non_ascii_and_order() {
        let v: Value =
            serde_json::from_str(r#"{"z":1,"a":"déjà 🚀","c":"a\"b\\c/d\n\u0001\u007f"}"#).unwrap();
        assert_eq!(
            to_raw_string(&v),
            "{\"z\":1,\"a\":\"déjà 🚀\",\"c\":\"a\\\"b\\\\c/d\\n\\u0001\u{7f}\"}"
        );
    }

    #[test]
    fn ascii_escapes_like_python() {
        let v = json!({"m": "é東🚀\u{7f}", "t": "\t\u{1f}"});
        assert_eq!(
            to_ascii_string(&v),
            r#"{"m":"\u00e9\u6771\ud83d\ude80\u007f","t":"\t\u001f"}"#
        );
    }

    #[test]
    fn numbers_are_written_as_read() {
        let text = r#"[123456789012345678901234567890,9007199254740993,1e-07,-0.0,1.0,2.50]"#;
        let v: Value = serde_json::from_str(text).unwrap();
        assert_eq!(to_raw_string(&v), text);
        assert_eq!(to_ascii_string(&v), text);
    }
}
