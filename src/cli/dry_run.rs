//! `port-agent dry-run` (and the engine of `render`): the real pipeline
//! wired to the recording invoker and reporter, so what is shown is exactly
//! what the agent would do. No network call is made.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use serde_json::{json, Map, Value};
use tracing::Instrument;

use super::{load_mappings, mapping_path, quiet_offline_settings, Assume, Exit, Format, Recording};
use crate::port::Endpoint;

use super::recorded::{parse_all, LineError};
use crate::delivery::Delivery;
use crate::invoke::{OutgoingRequest, RecordingInvoker};
use crate::mapping::{JqEnv, MappingSet};
use crate::message::{Invocation, TopicKind};
use crate::outcome::{Disposition, Outcome};
use crate::pipeline::{Config, Pipeline};
use crate::port::{PortCall, RecordingReporter};
use crate::redact::{sensitive_name, Redactor};

pub use crate::redact::REDACTED;

/// A request as shown: the values of secret-named headers, query
/// parameters and body keys (at any depth) redacted, and every known secret
/// (decrypted values, secret-named environment values) replaced wherever it
/// occurs; the body as the JSON value that is sent.
pub fn show_request(r: &OutgoingRequest, redactor: &Redactor) -> ShownRequest {
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
    ShownRequest {
        method: r.method.clone(),
        url,
        query,
        headers,
        body: redactor.value_by_name(&body),
    }
}

/// A request as dry-run and render show it (redacted by [`show_request`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ShownRequest {
    /// HTTP method.
    pub method: String,
    /// The URL, secrets in its query and user info removed.
    pub url: String,
    /// The query parameters, redacted.
    pub query: Map<String, Value>,
    /// The headers, redacted.
    pub headers: Map<String, Value>,
    /// The body, redacted.
    pub body: Value,
}

impl ShownRequest {
    /// `{"method", "url", "query", "headers", "body"}`.
    pub fn to_json(&self) -> Value {
        json!({"method": self.method, "url": self.url, "query": self.query, "headers": self.headers, "body": self.body})
    }
}

/// A Port call as dry-run and render show it (known secrets replaced).
#[derive(Debug, Clone, PartialEq)]
pub struct ShownCall {
    /// The endpoint it goes to.
    pub endpoint: Endpoint,
    /// HTTP method.
    pub method: &'static str,
    /// Path under the API base.
    pub path: String,
    /// The body, redacted.
    pub body: Value,
}

impl ShownCall {
    /// `{"method", "path", "body"}`.
    pub fn to_json(&self) -> Value {
        json!({"method": self.method, "path": self.path, "body": self.body})
    }

    /// The call that reports the run's result (a run or node-run PATCH).
    pub fn is_run_report(&self) -> bool {
        matches!(self.endpoint, Endpoint::RunPatch | Endpoint::NodeRunPatch)
    }
}

/// A Port call as shown (known secrets replaced).
pub fn show_call(c: &PortCall, redactor: &Redactor) -> ShownCall {
    ShownCall {
        endpoint: c.endpoint(),
        method: c.method(),
        path: c.path(),
        body: redactor.value(&c.body()),
    }
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
    pub request: Option<ShownRequest>,
    /// The Port calls that would follow (redacted), in order.
    pub port_calls: Vec<ShownCall>,
}

impl Entry {
    /// One JSON object (stable keys; see the README).
    pub fn to_json(&self) -> Value {
        let (skipped, error) = match &self.outcome.result {
            Disposition::Skipped(s) => (Some(s.to_string()), None),
            Disposition::RequestFailed(e) => (None, Some(e.to_string())),
            Disposition::InternalError(e) => (None, Some(e.clone())),
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
            "request": self.request.as_ref().map(ShownRequest::to_json),
            "port_calls": self.port_calls.iter().map(ShownCall::to_json).collect::<Vec<_>>(),
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
pub fn pipeline(
    mut config: Config,
    mappings: MappingSet,
    env: JqEnv,
    status: u16,
    body: &str,
) -> DryPipeline {
    config.recording = true;
    Pipeline::new(
        config,
        Arc::new(mappings),
        env,
        RecordingInvoker::new(status, body),
        RecordingReporter::default(),
    )
}

/// Run one delivery and collect what the edges saw. Its log lines carry
/// the input line and the run id (a `warn` span, so that they do at the
/// default `warn` level too, where the pipeline's `info` span is off).
pub async fn run_one(p: &DryPipeline, line: usize, delivery: Delivery) -> Entry {
    let run_id = Invocation::parse(&delivery.payload, TopicKind::Other)
        .ok()
        .and_then(|inv| inv.run_id().map(str::to_string));
    let span = tracing::warn_span!("dry_run", line, run_id = %run_id.as_deref().unwrap_or("-"));
    let outcome = p.process(&delivery).instrument(span).await;
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

/// What a dry-run did, counted.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Messages processed.
    pub messages: usize,
    /// Lines that could not be read.
    pub malformed_lines: usize,
    /// Messages per outcome name.
    pub by_outcome: BTreeMap<&'static str, usize>,
    /// Messages per selected mapping (`none`: no mapping).
    pub by_mapping: BTreeMap<String, usize>,
    /// Lines with warnings or errors: the line, the run id, the problems.
    pub errors: Vec<(usize, Option<String>, Vec<String>)>,
}

impl Summary {
    /// `{"messages", "malformed_lines", "by_outcome", "by_mapping", "errors"}`.
    pub fn to_json(&self) -> Value {
        let errors: Vec<Value> = self
            .errors
            .iter()
            .map(|(line, run_id, problems)| json!({"line": line, "run_id": run_id, "errors": problems}))
            .collect();
        json!({
            "messages": self.messages,
            "malformed_lines": self.malformed_lines,
            "by_outcome": self.by_outcome,
            "by_mapping": self.by_mapping,
            "errors": errors,
        })
    }
}

impl Report {
    /// Counts by outcome and by mapping, and messages with errors.
    pub fn summary(&self) -> Summary {
        let mut summary = Summary {
            messages: self.entries.len(),
            malformed_lines: self.bad_lines.len(),
            by_outcome: BTreeMap::new(),
            by_mapping: BTreeMap::new(),
            errors: Vec::new(),
        };
        for e in &self.entries {
            *summary.by_outcome.entry(e.outcome.name()).or_default() += 1;
            let m = e
                .outcome
                .mapping
                .map(|i| i.to_string())
                .unwrap_or_else(|| "none".into());
            *summary.by_mapping.entry(m).or_default() += 1;
            let mut problems: Vec<String> = e.outcome.warnings.clone();
            if let Disposition::RequestFailed(err) = &e.outcome.result {
                problems.push(err.to_string());
            }
            if let Disposition::Skipped(crate::outcome::Skip::Unparsable(err)) = &e.outcome.result {
                problems.push(err.clone());
            }
            if !problems.is_empty() {
                summary.errors.push((e.line, e.outcome.run_id.clone(), problems));
            }
        }
        for b in &self.bad_lines {
            summary.errors.push((b.line, None, vec![b.reason.clone()]));
        }
        summary
    }
}

/// Dry-run every line of a recorded file.
pub async fn dry_run(p: &DryPipeline, text: &[u8], default_topic: &str) -> Report {
    let (deliveries, bad_lines) = parse_all(text, default_topic);
    let mut entries = Vec::with_capacity(deliveries.len());
    for (line, d) in deliveries {
        entries.push(run_one(p, line, d).await);
    }
    Report { entries, bad_lines }
}

/// The arguments of `dry-run`.
#[derive(Args)]
pub struct DryRunArgs {
    /// Recorded topic (JSON lines).
    #[arg(long, value_name = "FILE")]
    input: PathBuf,
    /// Mapping file (default: CONTROL_THE_PAYLOAD_CONFIG_PATH).
    #[arg(long, value_name = "FILE")]
    mapping: Option<PathBuf>,
    /// Topic for bare message lines (default: the runs topic).
    #[arg(long, value_name = "TOPIC")]
    topic: Option<String>,
    #[command(flatten)]
    assume: Assume,
    /// Do not verify signatures, even with PORT_CLIENT_SECRET set.
    #[arg(long)]
    no_verify: bool,
    /// Output format: text, or one JSON object per line.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

/// Run `dry-run`: exit 1 when a line of the input is malformed.
pub async fn command(args: DryRunArgs) -> super::Result {
    let settings = quiet_offline_settings()?;
    let path = mapping_path(args.mapping, &settings);
    let set = load_mappings(&path)?;
    let text = std::fs::read(&args.input).with_context(|| format!("cannot read {}", args.input.display()))?;
    let env = JqEnv::new(crate::settings::process_env());
    let run = Recording::new(
        &settings,
        set,
        args.topic.as_deref(),
        &args.assume,
        args.no_verify,
        env,
    );
    let verified = run.verified;
    let report = dry_run(&run.pipeline, &text, &run.topic).await;
    if args.format == Format::Json {
        print_report_json(&report, verified);
    } else {
        print_report_text(&report, verified, args.no_verify);
    }
    Ok(if report.bad_lines.is_empty() {
        Exit::Success
    } else {
        Exit::Problems
    })
}

fn print_report_json(report: &Report, verified: bool) {
    for e in &report.entries {
        println!("{}", e.to_json());
    }
    for b in &report.bad_lines {
        println!(
            "{}",
            json!({"line": b.line, "outcome": "malformed_line", "error": b.reason})
        );
    }
    println!(
        "{}",
        json!({"summary": report.summary().to_json(), "signatures_verified": verified})
    );
}

fn print_report_text(report: &Report, verified: bool, no_verify: bool) {
    if no_verify {
        println!("note: --no-verify: signatures were not verified\n");
    } else if !verified {
        println!("note: PORT_CLIENT_SECRET is not set: signatures were not verified\n");
    }
    for e in &report.entries {
        print_entry(e);
        println!();
    }
    for b in &report.bad_lines {
        println!("line {}: malformed, skipped: {}\n", b.line, b.reason);
    }
    print_summary(&report.summary());
}

/// One entry as text.
pub(super) fn print_entry(e: &Entry) {
    let run = e.outcome.run_id.as_deref().unwrap_or("-");
    let kind = e.outcome.kind.as_ref().map(kind_name).unwrap_or("-");
    println!(
        "line {}  {}[{}]@{}  {} {}",
        e.line, e.delivery.topic, e.delivery.partition, e.delivery.offset, kind, run
    );
    match (&e.outcome.result, e.outcome.mapping) {
        (Disposition::Skipped(why), _) => println!("  decision: skipped ({why})"),
        (_, Some(n)) => println!("  decision: mapping #{n}"),
        _ => println!("  decision: -"),
    }
    match &e.outcome.result {
        Disposition::RequestFailed(err) => println!("  error:    {err}"),
        Disposition::InternalError(err) => println!("  error:    {err}"),
        _ => {}
    }
    for w in &e.outcome.warnings {
        println!("  warning:  {w}");
    }
    if let Some(r) = &e.request {
        println!("  request:  {} {}", r.method, r.url);
        println!("  headers:  {}", Value::Object(r.headers.clone()));
        println!("  body:     {}", r.body);
    }
    for c in &e.port_calls {
        println!("  port:     {} {} {}", c.method, c.path, c.body);
    }
}

fn print_summary(s: &Summary) {
    println!(
        "summary: {} message(s), {} malformed line(s)",
        s.messages, s.malformed_lines
    );
    println!("  {:<20} {:>6}", "outcome", "count");
    for (k, v) in &s.by_outcome {
        println!("  {k:<20} {v:>6}");
    }
    println!("  {:<20} {:>6}", "mapping", "count");
    for (k, v) in &s.by_mapping {
        let name = if k == "none" {
            "none".to_string()
        } else {
            format!("#{k}")
        };
        println!("  {name:<20} {v:>6}");
    }
    if !s.errors.is_empty() {
        println!("  messages with errors:");
        for (line, _, problems) in &s.errors {
            println!("    line {line}: {}", json!(problems));
        }
    }
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
            carries_secret: false,
        };
        let shown = show_request(&r, &Redactor::new(["plain-secret"])).to_json();
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
            carries_secret: false,
        };
        let shown = show_request(&r, &Redactor::new(["a/b+c= d"])).to_json();
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
