//! `check --messages FILE`: how a mapping file covers a recorded topic.
//! Per mapping, how many messages select it; per field, how many
//! evaluations failed and the first error; which messages no mapping
//! selects. Evaluation is the pipeline's own steps
//! ([`crate::pipeline::Pipeline::evaluate`]: admission, selection,
//! decryption, request building, report mapping against an assumed `200`
//! answer with an empty body); no request is sent.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::dry_run::DryPipeline;
use super::recorded::{parse_all, LineError};
use crate::http::ResponseContext;
use crate::mapping::Warning;
use crate::outcome::Skip;
use crate::redact::Redactor;

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

/// The answer `check --messages` assumes of the target: `200`, empty.
fn assumed_answer() -> ResponseContext {
    ResponseContext {
        status: 200,
        headers: Vec::new(),
        text: String::new(),
    }
}

/// Why a message was not evaluated, in the words of `check --messages`.
fn not_evaluated(skip: &Skip) -> String {
    match skip {
        Skip::Unparsable(e) => format!("unparsable: {e}"),
        Skip::NotForAgent => "not for the agent".to_string(),
        other => other.to_string(),
    }
}

/// Evaluate every message of a recorded-topic `text` with `pipeline`'s own
/// steps ([`crate::pipeline::Pipeline::evaluate`]): nothing is sent, the
/// target is assumed to answer `200` with an empty body, and errors are
/// redacted with the secrets each message met. Signatures are not checked
/// (build `pipeline` with `skip_signature_check`).
pub fn coverage(pipeline: &DryPipeline, text: &[u8], default_topic: &str) -> Coverage {
    let (deliveries, bad_lines) = parse_all(text, default_topic);
    let mappings = pipeline.mapping_slot().current().mappings.len();
    let mut cov = Coverage {
        messages: deliveries.len(),
        bad_lines,
        mappings: vec![MappingCoverage::default(); mappings],
        ..Coverage::default()
    };
    let assumed = assumed_answer();
    for (line, d) in deliveries {
        // The pipeline's own log lines (a message skipped, a request built)
        // are not what `check` reports.
        let e = tracing::subscriber::with_default(tracing::subscriber::NoSubscriber::default(), || {
            pipeline.evaluate(&d, &assumed)
        });
        if let Some(skip) = &e.skipped {
            cov.not_evaluated.push((line, not_evaluated(skip)));
            continue;
        }
        cov.evaluated += 1;
        record(&mut cov, &e.warnings, line, &e.redactor);
        match e.mapping.and_then(|i| cov.mappings.get_mut(i)) {
            Some(m) => m.selected += 1,
            None => cov.unmatched.push(Unmatched {
                line,
                run_id: e.run_id,
                action: e.action,
            }),
        }
    }
    cov
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
    use crate::mapping::{JqEnv, MappingSet};
    use crate::pipeline::Config;
    use crate::settings::{Requirement, Settings};

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
        let settings = Settings::from_iter(
            [("PORT_ORG_ID".to_string(), "o".to_string())],
            Requirement::Offline,
        )
        .unwrap();
        let mut config = Config::from_settings(&settings);
        config.skip_signature_check = true;
        let pipeline = crate::cli::dry_run::pipeline(config, set, JqEnv::new([]), 200, "");
        let cov = coverage(&pipeline, text.as_bytes(), "o.runs");
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
