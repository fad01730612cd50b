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
//! [`format_jq_float`] prints a computed `f64` the way jq 1.6 does.

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
        out.push_str(&s[start..i]);
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
    out.push_str(std::str::from_utf8(&bytes[start..]).unwrap_or_default());
    out.push('"');
}

/// Print a computed double the way jq 1.6 (and so the Python agent's pyjq)
/// prints it: shortest round-trip digits; integers without a fraction; an
/// exponent (`1e+17`, `1e-05`) when the decimal exponent is below -4 or more
/// than 15 places past the digits; NaN as `null`; infinities as the largest
/// finite double.
pub fn format_jq_float(x: f64) -> String {
    if x.is_nan() {
        return "null".into();
    }
    let x = if x.is_infinite() {
        f64::MAX.copysign(x)
    } else {
        x
    };
    if x == 0.0 {
        return if x.is_sign_negative() { "-0".into() } else { "0".into() };
    }
    // `{:e}` gives the shortest round-trip digits: "d.ddde[-]N".
    let sci = format!("{:e}", x.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let digits = digits.trim_end_matches('0');
    let digits = if digits.is_empty() { "0" } else { digits };
    let ndigits = digits.len() as i32;
    let decpt = exp + 1; // position of the decimal point after the first digit
    let mut out = String::new();
    if x.is_sign_negative() {
        out.push('-');
    }
    if decpt <= -4 || decpt > ndigits + 15 {
        out.push_str(&digits[..1]);
        if ndigits > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        let e = decpt - 1;
        out.push(if e < 0 { '-' } else { '+' });
        out.push_str(&format!("{:02}", e.abs()));
    } else if decpt <= 0 {
        out.push_str("0.");
        for _ in 0..(-decpt) {
            out.push('0');
        }
        out.push_str(digits);
    } else if decpt >= ndigits {
        out.push_str(digits);
        for _ in 0..(decpt - ndigits) {
            out.push('0');
        }
    } else {
        out.push_str(&digits[..decpt as usize]);
        out.push('.');
        out.push_str(&digits[decpt as usize..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn raw_keeps_non_ascii_and_order() {
        let v: Value = serde_json::from_str(r#"{"z":1,"a":"déjà 🚀","c":"a\"b\\c/d\n\u0001\u007f"}"#).unwrap();
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

    #[test]
    fn floats_print_like_jq_1_6() {
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
            assert_eq!(format_jq_float(x), want, "{x}");
        }
    }
}
