//! `check --messages FILE`: how a mapping file covers a recorded topic.
//! Per mapping, how many messages select it; per field, how many
//! evaluations failed and the first error; which messages no mapping
//! selects. Evaluation is the pipeline's own (selection, request building,
//! report mapping against an assumed `200` answer with an empty body); no
//! request is sent.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::recorded::{parse_all, LineError};
use crate::decrypt::decrypt_fields;
use crate::http::ResponseContext;
use crate::mapping::{build_request_from, jq, Defaults, EvalCtx, Mapping, MappingSet, Warning};
use crate::message::{Invocation, TopicKind};
use crate::redact::Redactor;
use crate::report::{apply_report_mapping, RunPatchBody};
use crate::signature::strip_signature_headers;

/// Failures of one field of one mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldFailures {
    /// Evaluations that failed.
    pub count: usize,
    /// The first error (redacted).
    pub first_error: String,
    /// Line of the message that gave the first error.
    pub first_line: usize,
}

/// One mapping's coverage.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MappingCoverage {
    /// Messages that select this mapping.
    pub selected: usize,
    /// Failed fields, by field path (`enabled`, `url`, `body.ref`, …).
    pub failures: BTreeMap<String, FieldFailures>,
}

/// A message that was not matched to a mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unmatched {
    /// Line in the file.
    pub line: usize,
    /// `.context.runId`, if any.
    pub run_id: Option<String>,
    /// `.action`, if any.
    pub action: Option<String>,
}

/// The coverage of a recorded topic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Coverage {
    /// Messages read (lines that gave a delivery).
    pub messages: usize,
    /// Messages evaluated (JSON objects the agent would consider).
    pub evaluated: usize,
    /// Messages not evaluated, with why (line, reason).
    pub not_evaluated: Vec<(usize, String)>,
    /// Lines that could not be read.
    pub bad_lines: Vec<LineError>,
    /// By mapping index.
    pub mappings: Vec<MappingCoverage>,
    /// Messages no mapping selects.
    pub unmatched: Vec<Unmatched>,
}

impl Coverage {
    /// Did any field evaluation fail?
    pub fn has_failures(&self) -> bool {
        self.mappings.iter().any(|m| !m.failures.is_empty())
    }

    /// One JSON object (the `--format json` of `check --messages`).
    pub fn to_json(&self) -> Value {
        let mappings: Vec<Value> = self
            .mappings
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let failures: serde_json::Map<String, Value> = m
                    .failures
                    .iter()
                    .map(|(f, x)| {
                        (
                            f.clone(),
                            json!({"failed": x.count, "first_error": x.first_error, "first_line": x.first_line}),
                        )
                    })
                    .collect();
                json!({"index": i, "selected": m.selected, "failures": failures})
            })
            .collect();
        json!({
            "messages": self.messages,
            "evaluated": self.evaluated,
            "not_evaluated": self.not_evaluated.iter().map(|(l, r)| json!({"line": l, "reason": r})).collect::<Vec<_>>(),
            "malformed_lines": self.bad_lines.iter().map(|b| json!({"line": b.line, "error": b.reason})).collect::<Vec<_>>(),
            "mappings": mappings,
            "unmatched": self.unmatched.iter().map(|u| json!({"line": u.line, "run_id": u.run_id, "action": u.action})).collect::<Vec<_>>(),
        })
    }
}

/// How topics are recognised: the configured names, or by suffix
/// (`….runs`, `….change.log`).
pub struct Topics<'a> {
    /// The runs topic.
    pub runs: &'a str,
    /// The change-log topic.
    pub change_log: &'a str,
}

impl Topics<'_> {
    fn kind(&self, topic: &str) -> TopicKind {
        if topic == self.runs || topic.ends_with(".runs") {
            TopicKind::Runs
        } else if topic == self.change_log || topic.ends_with(".change.log") {
            TopicKind::ChangeLog
        } else {
            TopicKind::Other
        }
    }
}

/// Evaluate `set` over every message of a recorded-topic `text`. `secret`
/// decrypts `fieldsToDecryptPaths` (empty: they stay encrypted); errors are
/// redacted with `redactor`.
pub fn coverage(
    set: &MappingSet,
    text: &[u8],
    topics: &Topics<'_>,
    default_topic: &str,
    ctx: &EvalCtx<'_>,
    secret: &str,
    redactor: &Redactor,
) -> Coverage {
    let (deliveries, bad_lines) = parse_all(text, default_topic);
    let mut cov = Coverage {
        messages: deliveries.len(),
        bad_lines,
        mappings: vec![MappingCoverage::default(); set.mappings.len()],
        ..Coverage::default()
    };
    for (line, d) in deliveries {
        let mut inv = match Invocation::parse(&d.payload, topics.kind(&d.topic)) {
            Ok(inv) => inv,
            Err(e) => {
                cov.not_evaluated.push((line, format!("unparsable: {e}")));
                continue;
            }
        };
        if !inv.for_agent() {
            cov.not_evaluated.push((line, "not for the agent".into()));
            continue;
        }
        let gitlab = inv.method_type() == Some("GITLAB");
        let _ = strip_signature_headers(&mut inv.message, gitlab);
        cov.evaluated += 1;
        let mut warnings: Vec<Warning> = Vec::new();
        let input = jq::to_val(&inv.message);
        let selection = set.select(&input, ctx, &mut warnings);
        let mapping = selection.index.and_then(|i| set.get(i));
        if let Some(mapping) = mapping {
            if let Some(m) = cov.mappings.get_mut(mapping.index) {
                m.selected += 1;
            }
            let redactor = evaluate(mapping, &mut inv, ctx, secret, redactor, &mut warnings);
            record(&mut cov, &warnings, line, &redactor);
        } else {
            record(&mut cov, &warnings, line, redactor);
            cov.unmatched.push(Unmatched {
                line,
                run_id: inv.run_id().map(str::to_string),
                action: inv
                    .message
                    .get("action")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            });
        }
    }
    cov
}

/// Build the request and map the report of one selected message against an
/// assumed `200` answer with an empty body, collecting warnings; the
/// redactor returned also knows the message's decrypted values.
fn evaluate(
    mapping: &Mapping,
    inv: &mut Invocation,
    ctx: &EvalCtx<'_>,
    secret: &str,
    redactor: &Redactor,
    warnings: &mut Vec<Warning>,
) -> Redactor {
    let assumed = ResponseContext {
        status: 200,
        headers: Vec::new(),
        text: String::new(),
    };
    let decrypted = decrypt_fields(&mut inv.message, &mapping.decrypt_paths, secret);
    let input = jq::to_val(&inv.message);
    let defaults = Defaults {
        method: inv.method.get("method").and_then(Value::as_str),
        url: inv.method.get("url").and_then(Value::as_str),
    };
    let redactor = {
        let mut r = redactor.clone();
        r.extend(&decrypted.plaintexts);
        r
    };
    match build_request_from(mapping, &inv.message, &input, &defaults, ctx, warnings) {
        Ok(spec) => {
            apply_report_mapping(
                mapping,
                RunPatchBody::default(),
                &inv.message,
                &spec,
                &assumed,
                ctx,
                warnings,
            );
        }
        Err(e) => warnings.push(Warning {
            index: mapping.index,
            field: e.field().to_string(),
            message: e.to_string(),
        }),
    }
    redactor
}

fn record(cov: &mut Coverage, warnings: &[Warning], line: usize, redactor: &Redactor) {
    for w in warnings {
        let Some(m) = cov.mappings.get_mut(w.index) else {
            continue;
        };
        m.failures
            .entry(w.field.clone())
            .and_modify(|f| f.count += 1)
            .or_insert_with(|| FieldFailures {
                count: 1,
                first_error: redactor.text(&w.message),
                first_line: line,
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::jq::{Budget, JqEnv};

    #[test]
    fn counts_selection_failures_and_unmatched() {
        let set = MappingSet::from_value(&json!([
            {"enabled": ".action == \"a\"", "url": "\"http://t/\" + .x", "body": {"n": ".n | tonumber"}},
            {"enabled": ".action | test(1)"},
            {"enabled": ".action == \"b\"", "url": "12"}
        ]))
        .unwrap();
        let m = |action: &str, n: &str| {
            json!({"action": action, "x": "p", "n": n, "context": {"runId": format!("r_{action}{n}")},
                   "payload": {"action": {"invocationMethod": {"type": "WEBHOOK", "agent": true, "url": "http://t/"}}}})
            .to_string()
        };
        let not_ours = json!({"action": "a", "payload": {"action": {"invocationMethod": {"agent": false}}}});
        let text = [
            m("a", "1"),
            m("a", "x"),
            m("b", "1"),
            m("c", "1"),
            not_ours.to_string(),
        ]
        .join("\n");
        let env = JqEnv::new([]);
        let ctx = EvalCtx {
            env: &env,
            budget: Budget::default(),
        };
        let topics = Topics {
            runs: "o.runs",
            change_log: "o.change.log",
        };
        let cov = coverage(
            &set,
            text.as_bytes(),
            &topics,
            "o.runs",
            &ctx,
            "",
            &Redactor::new([""; 0]),
        );
        assert_eq!((cov.messages, cov.evaluated), (5, 4));
        assert_eq!(cov.not_evaluated, vec![(5, "not for the agent".to_string())]);
        assert_eq!(
            cov.mappings.iter().map(|m| m.selected).collect::<Vec<_>>(),
            [2, 0, 1]
        );
        assert_eq!(cov.mappings[0].failures.keys().collect::<Vec<_>>(), ["body.n"]);
        assert_eq!(cov.mappings[0].failures["body.n"].count, 1);
        assert_eq!(cov.mappings[0].failures["body.n"].first_line, 2);
        // `test(1)` fails for the two messages that reach mapping #1.
        assert_eq!(cov.mappings[1].failures["enabled"].count, 2);
        assert_eq!(
            cov.mappings[2].failures["url"].first_error,
            "the URL is a number (12), not a string: write it as a jq string such as \"\\\"https://ci.example.com/hook\\\"\" or an expression that yields one"
        );
        assert_eq!(
            cov.unmatched,
            vec![Unmatched {
                line: 4,
                run_id: Some("r_c1".into()),
                action: Some("c".into())
            }]
        );
        assert!(cov.has_failures());
    }
}
