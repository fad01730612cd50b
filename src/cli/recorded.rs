//! Recorded topics (SPEC §2.3): a file of JSON lines, read for dry-run and
//! replay. Three line formats are accepted:
//!
//! * the agent's own: `{"topic","partition","offset","timestamp","key","headers","value"}`
//!   where `value` is the message (an object, or a string holding JSON);
//! * `kcat -C -J` output: the same with `payload` instead of `value`;
//! * a bare message object (its topic is the `--topic` given, by default
//!   the runs topic).
//!
//! A malformed line is reported with its line number and skipped. Every
//! delivery read here is [`Trust::Signed`]: checked as Kafka's would be.

use serde_json::{Map, Value};

use crate::delivery::Delivery;
use crate::delivery::Trust;

/// One line that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct LineError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

/// A record of the agent's own format, as `record` writes it.
pub fn to_record_line(d: &Delivery, timestamp_ms: Option<i64>, headers: &[(String, String)]) -> String {
    let mut m = Map::new();
    m.insert("topic".into(), Value::from(d.topic.clone()));
    m.insert("partition".into(), Value::from(d.partition));
    m.insert("offset".into(), Value::from(d.offset));
    m.insert(
        "timestamp".into(),
        timestamp_ms.map(Value::from).unwrap_or(Value::Null),
    );
    m.insert(
        "key".into(),
        d.key
            .as_ref()
            .map(|k| Value::from(String::from_utf8_lossy(k).into_owned()))
            .unwrap_or(Value::Null),
    );
    m.insert(
        "headers".into(),
        Value::Object(
            headers
                .iter()
                .map(|(k, v)| (k.clone(), Value::from(v.clone())))
                .collect(),
        ),
    );
    // Keep the message's own bytes when they are text: signatures depend on them.
    let value = match std::str::from_utf8(&d.payload) {
        Ok(text) => serde_json::from_str::<Value>(text).unwrap_or_else(|_| Value::from(text)),
        Err(_) => Value::from(String::from_utf8_lossy(&d.payload).into_owned()),
    };
    m.insert("value".into(), value);
    Value::Object(m).to_string()
}

fn payload_bytes(v: &Value) -> Vec<u8> {
    match v {
        // A string holds the message text as produced.
        Value::String(s) => s.clone().into_bytes(),
        Value::Null => Vec::new(),
        other => other.to_string().into_bytes(),
    }
}

/// Parse one line (1-based `line`) into a delivery.
pub fn parse_line(text: &str, line: usize, default_topic: &str) -> Result<Delivery, LineError> {
    let err = |reason: String| LineError { line, reason };
    let value: Value = serde_json::from_str(text).map_err(|e| err(format!("not JSON: {e}")))?;
    let obj = value
        .as_object()
        .ok_or_else(|| err("expected a JSON object".into()))?;
    let is_record = obj.get("topic").is_some_and(Value::is_string)
        && (obj.contains_key("value") || obj.contains_key("payload"));
    if !is_record {
        return Ok(Delivery {
            topic: default_topic.to_string(),
            partition: -1,
            offset: line as i64,
            key: None,
            payload: text.trim().as_bytes().to_vec(),
            trust: Trust::Signed,
        });
    }
    let payload = obj
        .get("value")
        .or_else(|| obj.get("payload"))
        .map(payload_bytes)
        .unwrap_or_default();
    let int = |k: &str, default: i64| obj.get(k).and_then(Value::as_i64).unwrap_or(default);
    Ok(Delivery {
        topic: obj
            .get("topic")
            .and_then(Value::as_str)
            .unwrap_or(default_topic)
            .to_string(),
        partition: int("partition", -1) as i32,
        offset: int("offset", line as i64),
        key: obj
            .get("key")
            .and_then(Value::as_str)
            .map(|k| k.as_bytes().to_vec()),
        payload,
        trust: Trust::Signed,
    })
}

/// Read every line of `text`: deliveries with their line numbers, and
/// errors (a line that is not UTF-8 is one, like a line that is not JSON).
pub fn parse_all(text: impl AsRef<[u8]>, default_topic: &str) -> (Vec<(usize, Delivery)>, Vec<LineError>) {
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    let text = text.as_ref();
    let text = text.strip_suffix(b"\n").unwrap_or(text);
    for (i, line) in text.split(|b| *b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let line = match std::str::from_utf8(line) {
            Ok(line) => line,
            Err(e) => {
                bad.push(LineError {
                    line: i + 1,
                    reason: format!("not UTF-8: invalid byte at column {}", e.valid_up_to() + 1),
                });
                continue;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        match parse_line(line, i + 1, default_topic) {
            Ok(d) => ok.push((i + 1, d)),
            Err(e) => bad.push(e),
        }
    }
    (ok, bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_formats() {
        let own = r#"{"topic":"o.runs","partition":2,"offset":9,"timestamp":1,"key":"k","headers":{},"value":{"a":1}}"#;
        let d = parse_line(own, 1, "x").unwrap();
        assert_eq!((d.topic.as_str(), d.partition, d.offset), ("o.runs", 2, 9));
        assert_eq!(d.payload, br#"{"a":1}"#);
        assert_eq!(d.key.as_deref(), Some(&b"k"[..]));

        let kcat = r#"{"topic":"o.change.log","partition":0,"offset":3,"tstype":"create","ts":5,"broker":1,"key":null,"payload":"{\"b\": 2}"}"#;
        let d = parse_line(kcat, 2, "x").unwrap();
        assert_eq!((d.topic.as_str(), d.offset), ("o.change.log", 3));
        assert_eq!(d.payload, br#"{"b": 2}"#, "a string payload keeps its exact text");

        let bare = r#"{"context":{"runId":"r_1"}}"#;
        let d = parse_line(bare, 3, "o.runs").unwrap();
        assert_eq!((d.topic.as_str(), d.offset), ("o.runs", 3));
    }

    #[test]
    fn malformed_lines_are_reported_with_their_number() {
        let (ok, bad) = parse_all("{\"a\":1}\n\nnot json\n[1]\n{\"b\":2}\n", "t");
        let (_, not_utf8) = parse_all(b"{\"a\":1}\r\n{\"b\":\"\xff\"}\n{\"c\":3}", "t");
        assert_eq!(not_utf8.len(), 1);
        assert_eq!(not_utf8[0].line, 2);
        assert!(not_utf8[0].reason.contains("not UTF-8") && not_utf8[0].reason.contains("column 7"));
        assert_eq!(ok.iter().map(|(l, _)| *l).collect::<Vec<_>>(), [1, 5]);
        assert_eq!(bad.iter().map(|e| e.line).collect::<Vec<_>>(), [3, 4]);
        assert!(bad[0].to_string().starts_with("line 3: not JSON"));
    }

    #[test]
    fn record_lines_round_trip() {
        let d = Delivery {
            topic: "t".into(),
            partition: 1,
            offset: 4,
            key: Some(b"k".to_vec()),
            payload: br#"{"z":1,"a":2}"#.to_vec(),
            trust: Trust::Signed,
        };
        let line = to_record_line(&d, Some(10), &[]);
        let back = parse_line(&line, 1, "x").unwrap();
        assert_eq!(
            (back.topic, back.partition, back.offset, back.key),
            (d.topic, 1, 4, d.key)
        );
        assert_eq!(back.payload, d.payload);
    }
}
