//! `dry-run` and `render`: the real pipeline wired to the recording invoker
//! and reporter, so what is shown is exactly what the agent would do. No
//! network call is made.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::invoke::{OutgoingRequest, RecordingInvoker};
use crate::mapping::{JqEnv, MappingSet};
use crate::pipeline::{Config, Delivery, Disposition, Outcome, Pipeline};
use crate::port::{PortCall, RecordingReporter};
use crate::redact::{sensitive_name, Redactor};
use crate::source::recorded::{parse_all, LineError};

pub use crate::redact::REDACTED;

/// A request as shown: the values of secret-named headers, query
/// parameters and body keys (at any depth) redacted, and every known secret
/// (decrypted values, secret-named environment values) replaced wherever it
/// occurs; the body as the JSON value that is sent.
pub fn show_request(r: &OutgoingRequest, redactor: &Redactor) -> Value {
    let headers: Map<String, Value> = r
        .headers
        .iter()
        .map(|(k, v)| {
            let shown = if sensitive_name(k) {
                REDACTED.to_string()
            } else {
                redactor.text(v)
            };
            (k.clone(), Value::String(shown))
        })
        .collect();
    let body = serde_json::from_str::<Value>(&r.body).unwrap_or_else(|_| Value::String(r.body.clone()));
    // The query is redacted decoded, pair by pair (a secret with `/`, `+`,
    // `=` or a space is percent-encoded in the URL), and the URL rebuilt.
    let (url, query) = match url::Url::parse(&r.url) {
        Ok(mut u) => {
            let pairs: Vec<(String, String)> = u
                .query_pairs()
                .map(|(k, v)| {
                    let shown = if sensitive_name(&k) {
                        REDACTED.to_string()
                    } else {
                        redactor.text(&v)
                    };
                    (redactor.text(&k), shown)
                })
                .collect();
            if !pairs.is_empty() {
                u.query_pairs_mut().clear().extend_pairs(pairs.iter());
            }
            let _ = u.set_password(None);
            let query: Map<String, Value> = pairs.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
            (redactor.text(u.as_str()), query)
        }
        Err(_) => (redactor.text(&r.url), Map::new()),
    };
    json!({"method": r.method, "url": url, "query": query, "headers": headers, "body": redactor.value_by_name(&body)})
}

/// A Port call as shown (known secrets replaced).
pub fn show_call(c: &PortCall, redactor: &Redactor) -> Value {
    json!({"method": c.method(), "path": c.path(), "body": redactor.value(&c.body())})
}

/// What happened to one message, as dry-run prints it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Line in the recorded file.
    pub line: usize,
    /// Where it came from.
    pub delivery: Delivery,
    /// The pipeline's outcome.
    pub outcome: Outcome,
    /// The request that would be sent (redacted).
    pub request: Option<Value>,
    /// The Port calls that would follow (redacted), in order.
    pub port_calls: Vec<Value>,
}

impl Entry {
    /// One JSON object (stable keys; see the README).
    pub fn to_json(&self) -> Value {
        let (skipped, error) = match &self.outcome.result {
            Disposition::Skipped(s) => (Some(s.to_string()), None),
            Disposition::RequestFailed(e) | Disposition::InternalError(e) => (None, Some(e.clone())),
            Disposition::Delivered(_) => (None, None),
        };
        json!({
            "line": self.line,
            "topic": self.delivery.topic,
            "partition": self.delivery.partition,
            "offset": self.delivery.offset,
            "run_id": self.outcome.run_id,
            "kind": self.outcome.kind.as_ref().map(kind_name),
            "outcome": self.outcome.name(),
            "skipped": skipped,
            "error": error,
            "mapping_index": self.outcome.mapping,
            "request": self.request,
            "port_calls": self.port_calls,
            "warnings": self.outcome.warnings,
        })
    }
}

/// `action_run`, `node_run`, `change_log`.
pub fn kind_name(k: &crate::message::Kind) -> &'static str {
    match k {
        crate::message::Kind::ActionRun(_) => "action_run",
        crate::message::Kind::NodeRun(_) => "node_run",
        crate::message::Kind::ChangeLog => "change_log",
    }
}

/// A pipeline with recording edges.
pub type DryPipeline = Pipeline<RecordingInvoker, RecordingReporter>;

/// Build the recording pipeline.
pub fn pipeline(config: Config, mappings: MappingSet, env: JqEnv, status: u16, body: &str) -> DryPipeline {
    Pipeline::new(
        config,
        Arc::new(mappings),
        env,
        RecordingInvoker::new(status, body),
        RecordingReporter::default(),
    )
}

/// Run one delivery and collect what the edges saw.
pub async fn run_one(p: &DryPipeline, line: usize, delivery: Delivery) -> Entry {
    let outcome = p.process(&delivery).await;
    let redactor = p.redactor_for(&outcome);
    let request = p.invoker().take().first().map(|r| show_request(r, &redactor));
    let port_calls = p
        .reporter()
        .take()
        .iter()
        .map(|c| show_call(c, &redactor))
        .collect();
    Entry {
        line,
        delivery,
        outcome,
        request,
        port_calls,
    }
}

/// The whole dry-run: entries, unreadable lines, and a summary.
pub struct Report {
    /// Processed messages.
    pub entries: Vec<Entry>,
    /// Lines that could not be read.
    pub bad_lines: Vec<LineError>,
}

impl Report {
    /// Counts by outcome and by mapping, and messages with errors.
    pub fn summary(&self) -> Value {
        let mut by_outcome: BTreeMap<&str, usize> = BTreeMap::new();
        let mut by_mapping: BTreeMap<String, usize> = BTreeMap::new();
        let mut errors = Vec::new();
        for e in &self.entries {
            *by_outcome.entry(e.outcome.name()).or_default() += 1;
            let m = e
                .outcome
                .mapping
                .map(|i| i.to_string())
                .unwrap_or_else(|| "none".into());
            *by_mapping.entry(m).or_default() += 1;
            let mut problems: Vec<String> = e.outcome.warnings.clone();
            if let Disposition::RequestFailed(err) = &e.outcome.result {
                problems.push(err.clone());
            }
            if let Disposition::Skipped(crate::pipeline::Skip::Unparsable(err)) = &e.outcome.result {
                problems.push(err.clone());
            }
            if !problems.is_empty() {
                errors.push(json!({"line": e.line, "run_id": e.outcome.run_id, "errors": problems}));
            }
        }
        for b in &self.bad_lines {
            errors.push(json!({"line": b.line, "run_id": null, "errors": [b.reason]}));
        }
        json!({
            "messages": self.entries.len(),
            "malformed_lines": self.bad_lines.len(),
            "by_outcome": by_outcome,
            "by_mapping": by_mapping,
            "errors": errors,
        })
    }
}

/// Dry-run every line of a recorded file.
pub async fn dry_run(p: &DryPipeline, text: &str, default_topic: &str) -> Report {
    let (deliveries, bad_lines) = parse_all(text, default_topic);
    let mut entries = Vec::with_capacity(deliveries.len());
    for (line, d) in deliveries {
        entries.push(run_one(p, line, d).await);
    }
    Report { entries, bad_lines }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_headers_and_values_are_redacted() {
        let r = OutgoingRequest {
            method: "POST".into(),
            url: "http://t/x?k=plain-secret".into(),
            headers: vec![
                ("Authorization".into(), "Bearer abc".into()),
                ("X-Port-Signature".into(), "v1,xyz".into()),
                ("PRIVATE-TOKEN".into(), "glpat".into()),
                ("X-Other".into(), "has plain-secret inside".into()),
            ],
            body: r#"{"t":"plain-secret","n":1}"#.into(),
        };
        let shown = show_request(&r, &Redactor::new(["plain-secret"]));
        let text = shown.to_string();
        assert!(
            !text.contains("plain-secret")
                && !text.contains("abc")
                && !text.contains("xyz")
                && !text.contains("glpat"),
            "{text}"
        );
        assert_eq!(shown["body"], json!({"t": REDACTED, "n": 1}));
        assert_eq!(shown["headers"]["X-Other"], format!("has {REDACTED} inside"));
        assert_eq!(shown["query"]["k"], REDACTED);
    }

    #[test]
    fn secrets_with_url_special_characters_and_secret_names_are_redacted() {
        let mut url = url::Url::parse("http://t/x").unwrap();
        url.query_pairs_mut()
            .append_pair("q", "a/b+c= d")
            .append_pair("token", "jenkins-tok")
            .append_pair("job", "build");
        let r = OutgoingRequest {
            method: "POST".into(),
            url: url.to_string(),
            headers: vec![("X-Api-Key".into(), "k-1".into())],
            body:
                r#"{"ref":"main","deep":{"client_secret":{"v":1},"list":[{"password":"p"}]},"pk":"a/b+c= d"}"#
                    .into(),
        };
        let shown = show_request(&r, &Redactor::new(["a/b+c= d"]));
        assert_eq!(
            shown["query"],
            json!({"q": REDACTED, "token": REDACTED, "job": "build"})
        );
        assert_eq!(
            shown["url"],
            "http://t/x?q=%3Credacted%3E&token=%3Credacted%3E&job=build"
        );
        assert_eq!(shown["headers"]["X-Api-Key"], REDACTED);
        assert_eq!(
            shown["body"],
            json!({"ref": "main", "deep": {"client_secret": REDACTED, "list": [{"password": REDACTED}]},
                   "pk": REDACTED})
        );
    }
}
