//! What is reported to Port about a run, and nothing else: the action-run
//! report and its `report.*` overrides, the node-run bodies, the failure
//! bodies and the run-log lines, each turned into the [`PortCall`]s to make,
//! in order. Pure: no I/O here; the pipeline sends the calls.
//!
//! The order of a run's calls (SPEC §7): the log lines before the request
//! ([`LogLine::Received`], [`LogLine::Preparing`], [`LogLine::Sending`]),
//! the line that tells how the target answered, the run's response
//! (synchronous action runs), its status, and [`LogLine::Finished`] last.

use serde_json::{json, Map, Value};

use crate::http::ResponseContext;
use crate::mapping::{jq, EvalCtx, Mapping, RequestSpec, Warning};
use crate::message::Kind;
use crate::port::PortCall;
use crate::redact::Redactor;

/// The summary reported for a run whose processing panicked.
pub const INTERNAL_ERROR_SUMMARY: &str = "Internal error in the agent while processing this run";

/// A line of a run's log (`POST …/logs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogLine {
    /// The message was accepted for the agent.
    Received,
    /// The request is being built.
    Preparing,
    /// The request is being sent.
    Sending,
    /// The request could not be delivered; the reason (redacted).
    InvocationFailed(String),
    /// The target answered 2xx.
    Succeeded {
        /// HTTP status.
        status: u16,
        /// `Some(bytes read)` when the answer was cut at `AGENT_MAX_RESPONSE_BYTES`.
        truncated_at: Option<usize>,
    },
    /// The target answered with another status.
    Failed {
        /// HTTP status.
        status: u16,
        /// Where a redirect that was not followed pointed (redacted).
        location: Option<String>,
        /// The response text (redacted), with `AGENT_DETAILED_LOGGING`.
        response: Option<String>,
        /// `Some(bytes read)` when the answer was cut at `AGENT_MAX_RESPONSE_BYTES`.
        truncated_at: Option<usize>,
    },
    /// The last line of every run the agent reported on.
    Finished,
}

impl LogLine {
    /// How the target answered, as the run's log says it; values that
    /// may hold secrets pass through `redactor`.
    pub fn answered(
        response: &ResponseContext,
        truncated: bool,
        detailed: bool,
        redactor: &Redactor,
    ) -> LogLine {
        let truncated_at = truncated.then_some(response.text.len());
        if response.ok() {
            return LogLine::Succeeded {
                status: response.status,
                truncated_at,
            };
        }
        LogLine::Failed {
            status: response.status,
            location: redirect_location(response).map(|l| redactor.text(l)),
            response: (detailed && !response.text.is_empty()).then(|| redactor.text(&response.text)),
            truncated_at,
        }
    }

    /// The text posted to Port.
    pub fn text(&self) -> String {
        let note = |at: &Option<usize>| match at {
            Some(n) => {
                format!(" (response truncated: only its first {n} bytes were read, AGENT_MAX_RESPONSE_BYTES)")
            }
            None => String::new(),
        };
        match self {
            LogLine::Received => "An action message has been received".into(),
            LogLine::Preparing => "Preparing the payload for the request".into(),
            LogLine::Sending => "Sending the request".into(),
            LogLine::InvocationFailed(message) => format!("Action invocation failed: {message}"),
            LogLine::Succeeded { status, truncated_at } => format!(
                "Action invocation has completed successfully with status code: {status}{}",
                note(truncated_at)
            ),
            LogLine::Failed {
                status,
                location,
                response,
                truncated_at,
            } => {
                let location = location
                    .as_ref()
                    .map(|l| format!(" redirecting to {l}"))
                    .unwrap_or_default();
                let response = response
                    .as_ref()
                    .map(|r| format!(" and response: {r}"))
                    .unwrap_or_default();
                format!(
                    "Action invocation failed with status code: {status}{location}{response}{}",
                    note(truncated_at)
                )
            }
            LogLine::Finished => "Port agent finished processing the action run".into(),
        }
    }
}

/// The `Location` of a 3xx answer (a redirect that was not followed).
fn redirect_location(response: &ResponseContext) -> Option<&str> {
    response
        .header("location")
        .filter(|_| (300..400).contains(&response.status))
}

/// The summary of a run whose request could not be delivered.
pub fn invoke_failed_summary(message: &str) -> String {
    format!("Failed to invoke the webhook: {message}")
}

/// The summary of a run whose message was too old to run.
pub fn stale_summary(age_seconds: u64, max_age_seconds: u64) -> String {
    format!(
        "The agent did not run this action: its message was signed {age_seconds} s ago, \
         longer ago than AGENT_MAX_MESSAGE_AGE_SECONDS ({max_age_seconds} s) allows. Run it again from Port."
    )
}

/// The status report that fails a run: `FAILURE` with `summary` for an
/// action run, `COMPLETED`/`FAILED` for a node run (which has no summary).
pub fn run_failed(run_id: &str, node_run: bool, summary: &str) -> PortCall {
    if node_run {
        PortCall::NodeRunPatch {
            run_id: run_id.to_string(),
            body: node_run_failed(),
        }
    } else {
        PortCall::RunPatch {
            run_id: run_id.to_string(),
            body: json!({"status": "FAILURE", "summary": summary}),
        }
    }
}

fn node_run_failed() -> Value {
    json!({"status": "COMPLETED", "result": "FAILED"})
}

/// The Port calls about one run: its kind says where they go, `logs`
/// whether its log lines are posted (`AGENT_RUN_LOGS`).
#[derive(Debug, Clone, Copy)]
pub struct RunReports<'a> {
    /// The run.
    pub kind: &'a Kind,
    /// Post log lines.
    pub logs: bool,
}

impl RunReports<'_> {
    /// The calls that post `lines` (none for change-log events or without
    /// run logs).
    pub fn log(&self, lines: &[LogLine]) -> Vec<PortCall> {
        if !self.logs {
            return Vec::new();
        }
        lines
            .iter()
            .filter_map(|line| {
                let message = line.text();
                match self.kind {
                    Kind::ActionRun(id) => Some(PortCall::RunLog {
                        run_id: id.clone(),
                        message,
                    }),
                    Kind::NodeRun(id) => Some(PortCall::NodeRunLog {
                        run_id: id.clone(),
                        message,
                    }),
                    Kind::ChangeLog => None,
                }
            })
            .collect()
    }

    /// Fail the run with `summary`, then [`LogLine::Finished`].
    pub fn failure(&self, summary: &str) -> Vec<PortCall> {
        let mut calls: Vec<PortCall> = match self.kind {
            Kind::ActionRun(id) => vec![run_failed(id, false, summary)],
            Kind::NodeRun(id) => vec![run_failed(id, true, summary)],
            Kind::ChangeLog => Vec::new(),
        };
        calls.extend(self.log(&[LogLine::Finished]));
        calls
    }

    /// No mapping matched: a node run is failed when `fail_node_runs`
    /// (`AGENT_WF_UNMATCHED_FAIL`); nothing else is reported.
    pub fn unmatched(&self, fail_node_runs: bool) -> Vec<PortCall> {
        match self.kind {
            Kind::NodeRun(id) if fail_node_runs => vec![PortCall::NodeRunPatch {
                run_id: id.clone(),
                body: node_run_failed(),
            }],
            _ => Vec::new(),
        }
    }

    /// The target answered: `line` (see [`LogLine::answered`]), the
    /// response of a synchronous action run, the run's status (`report`
    /// for an action run, see [`default_report`] and
    /// [`apply_report_mapping`]), then [`LogLine::Finished`].
    pub fn answered(
        &self,
        line: LogLine,
        synchronized: bool,
        response: &ResponseContext,
        report: Option<RunReport>,
    ) -> Vec<PortCall> {
        let mut calls = self.log(&[line]);
        match self.kind {
            Kind::ActionRun(id) => {
                if synchronized && !response.text.trim().is_empty() {
                    calls.push(PortCall::RunResponse {
                        run_id: id.clone(),
                        response: response_value(response),
                    });
                }
                if let Some(report) = report.filter(|r| !r.is_empty()) {
                    calls.push(PortCall::RunPatch {
                        run_id: id.clone(),
                        body: report.to_body(),
                    });
                }
            }
            Kind::NodeRun(id) => {
                if let Some(body) = node_run_answered(synchronized, response) {
                    calls.push(PortCall::NodeRunPatch {
                        run_id: id.clone(),
                        body,
                    });
                }
            }
            Kind::ChangeLog => {}
        }
        calls.extend(self.log(&[LogLine::Finished]));
        calls
    }
}

/// A node run's status after the target answered: failed on a non-2xx,
/// succeeded with the response when synchronous, else nothing (the target
/// reports it).
fn node_run_answered(synchronized: bool, response: &ResponseContext) -> Option<Value> {
    if !response.ok() {
        Some(node_run_failed())
    } else if synchronized {
        let data = if response.text.trim().is_empty() {
            json!({})
        } else {
            response_value(response)
        };
        Some(json!({"status": "COMPLETED", "result": "SUCCESS",
                    "output": {"response": {"status": response.status, "data": data}}}))
    } else {
        None
    }
}

/// The response as Port stores it: JSON when it parses, else the text.
fn response_value(r: &ResponseContext) -> Value {
    r.json().unwrap_or_else(|| Value::String(r.text.clone()))
}

/// The run report (`PATCH /v1/actions/runs/{id}`): keys that are `None` are
/// not sent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunReport {
    /// `SUCCESS` / `FAILURE`.
    pub status: Option<Value>,
    /// Link(s) shown on the run.
    pub link: Option<Value>,
    /// Summary text.
    pub summary: Option<Value>,
    /// The target system's run id.
    pub external_run_id: Option<Value>,
    /// A short label shown beside the run's status.
    pub status_label: Option<Value>,
}

impl RunReport {
    /// Nothing to send?
    pub fn is_empty(&self) -> bool {
        self.status.is_none()
            && self.link.is_none()
            && self.summary.is_none()
            && self.external_run_id.is_none()
            && self.status_label.is_none()
    }

    /// The PATCH body: the non-null keys, in a fixed order.
    pub fn to_body(&self) -> Value {
        let mut m = Map::new();
        for (k, v) in [
            ("status", &self.status),
            ("link", &self.link),
            ("summary", &self.summary),
            ("externalRunId", &self.external_run_id),
            ("statusLabel", &self.status_label),
        ] {
            if let Some(v) = v {
                m.insert(k.into(), v.clone());
            }
        }
        Value::Object(m)
    }
}

/// The default report (SPEC §7.2 step 4).
pub fn default_report(synchronized: bool, response: &ResponseContext, detailed: bool) -> RunReport {
    if response.ok() {
        RunReport {
            status: synchronized.then(|| Value::from("SUCCESS")),
            ..RunReport::default()
        }
    } else {
        let mut summary = format!(
            "Failed to invoke the webhook with status code: {}.",
            response.status
        );
        // A redirect that was not followed (another host, or
        // AGENT_TARGET_REDIRECTS=none): say where it pointed.
        if let Some(location) = redirect_location(response) {
            summary.push_str(&format!(" Location: {location}"));
        }
        if detailed && !response.text.is_empty() {
            summary.push_str(&format!(" Response: {}", response.text));
        }
        RunReport {
            status: Some(Value::from("FAILURE")),
            summary: Some(Value::from(summary)),
            ..RunReport::default()
        }
    }
}

/// Apply `report.*` overrides on top of `report`: a present expression
/// replaces the default, and a null result removes the key.
pub fn apply_report_mapping(
    mapping: &Mapping,
    mut report: RunReport,
    message: &Value,
    request: &RequestSpec,
    response: &ResponseContext,
    ctx: &EvalCtx<'_>,
    warnings: &mut Vec<Warning>,
) -> RunReport {
    let Some(rm) = &mapping.report else {
        return report;
    };
    let mut c = Map::new();
    c.insert("body".into(), message.clone());
    c.insert("request".into(), request.to_context());
    c.insert("response".into(), response.to_context());
    let input = jq::to_val(&Value::Object(c));
    for (template, slot, name) in [
        (&rm.status, &mut report.status, "report.status"),
        (&rm.link, &mut report.link, "report.link"),
        (&rm.summary, &mut report.summary, "report.summary"),
        (
            &rm.external_run_id,
            &mut report.external_run_id,
            "report.externalRunId",
        ),
        (&rm.status_label, &mut report.status_label, "report.statusLabel"),
    ] {
        if let Some(t) = template {
            let v = t.render(&input, ctx, mapping.index, name, warnings);
            *slot = (!v.is_null()).then_some(v);
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::testing::{ctx_env, set};
    use crate::mapping::Budget;
    use serde_json::json;

    #[test]
    fn report_defaults_and_overrides() {
        let ok = ResponseContext {
            status: 200,
            headers: vec![],
            text: "{\"id\":7}".into(),
        };
        let bad = ResponseContext {
            status: 500,
            headers: vec![],
            text: "oops".into(),
        };
        assert_eq!(default_report(false, &ok, true), RunReport::default());
        assert_eq!(
            default_report(true, &ok, true).to_body(),
            json!({"status": "SUCCESS"})
        );
        assert_eq!(
            default_report(false, &bad, true).to_body(),
            json!({"status": "FAILURE", "summary": "Failed to invoke the webhook with status code: 500. Response: oops"})
        );
        assert_eq!(
            default_report(false, &bad, false).to_body()["summary"],
            "Failed to invoke the webhook with status code: 500."
        );

        let env = ctx_env();
        let ctx = EvalCtx {
            env: &env,
            budget: Budget::default(),
        };
        let s = set(json!([{"report": {
            "status": "null",
            "link": "[\"http://x/\" + (.response.json.id | tostring)]",
            "externalRunId": ".response.json.id | tostring",
            "summary": ".body.name"
        }}]));
        let req = RequestSpec {
            method: "POST".into(),
            url: "http://t/".into(),
            body: json!({}),
            headers: json!({}),
            query: json!({}),
        };
        let mut w = Vec::new();
        let r = apply_report_mapping(
            &s.mappings[0],
            default_report(true, &ok, true),
            &json!({"name": "n1"}),
            &req,
            &ok,
            &ctx,
            &mut w,
        );
        assert_eq!(
            r.to_body(),
            json!({"link": ["http://x/7"], "summary": "n1", "externalRunId": "7"})
        );
    }

    fn answer(status: u16, text: &str) -> ResponseContext {
        ResponseContext {
            status,
            headers: vec![("Location".into(), "http://elsewhere/x".into())],
            text: text.into(),
        }
    }

    fn calls(calls: Vec<PortCall>) -> Vec<(String, String, Value)> {
        calls
            .iter()
            .map(|c| (c.method().to_string(), c.path(), c.body()))
            .collect()
    }

    fn log(path: &str, message: &str) -> (String, String, Value) {
        let body = if path.starts_with("/v1/workflows/") {
            json!({"logs": [{"level": "INFO", "message": message}]})
        } else {
            json!({ "message": message })
        };
        ("POST".into(), format!("{path}/logs"), body)
    }

    fn patch(path: &str, body: Value) -> (String, String, Value) {
        ("PATCH".into(), path.into(), body)
    }

    const FINISHED: &str = "Port agent finished processing the action run";

    #[test]
    fn log_lines_read_as_before() {
        let none = Redactor::new(Vec::<String>::new());
        let secret = Redactor::new(["s3cret"]);
        let cases = [
            (LogLine::Received, "An action message has been received"),
            (LogLine::Preparing, "Preparing the payload for the request"),
            (LogLine::Sending, "Sending the request"),
            (LogLine::InvocationFailed("timed out".into()), "Action invocation failed: timed out"),
            (LogLine::Finished, FINISHED),
            (
                LogLine::answered(&answer(201, "ok"), false, true, &none),
                "Action invocation has completed successfully with status code: 201",
            ),
            (
                LogLine::answered(&answer(200, "abc"), true, false, &none),
                "Action invocation has completed successfully with status code: 200 (response truncated: only its first 3 bytes were read, AGENT_MAX_RESPONSE_BYTES)",
            ),
            (
                LogLine::answered(&answer(500, "no s3cret"), false, true, &secret),
                "Action invocation failed with status code: 500 and response: no <redacted>",
            ),
            (
                LogLine::answered(&answer(500, "no"), false, false, &none),
                "Action invocation failed with status code: 500",
            ),
            (
                LogLine::answered(&answer(302, ""), false, true, &none),
                "Action invocation failed with status code: 302 redirecting to http://elsewhere/x",
            ),
        ];
        for (line, text) in cases {
            assert_eq!(line.text(), text, "{line:?}");
        }
    }

    #[test]
    fn failures_and_unmatched_runs() {
        let action = Kind::ActionRun("r1".into());
        let node = Kind::NodeRun("n1".into());
        let run = "/v1/actions/runs/r1";
        let node_run = "/v1/workflows/nodes/runs/n1";
        let failed = json!({"status": "COMPLETED", "result": "FAILED"});
        let cases = [
            (
                RunReports {
                    kind: &action,
                    logs: true,
                }
                .failure("boom"),
                vec![
                    patch(run, json!({"status": "FAILURE", "summary": "boom"})),
                    log(run, FINISHED),
                ],
            ),
            (
                RunReports {
                    kind: &action,
                    logs: false,
                }
                .failure("boom"),
                vec![patch(run, json!({"status": "FAILURE", "summary": "boom"}))],
            ),
            (
                RunReports {
                    kind: &node,
                    logs: true,
                }
                .failure("boom"),
                vec![patch(node_run, failed.clone()), log(node_run, FINISHED)],
            ),
            (
                RunReports {
                    kind: &Kind::ChangeLog,
                    logs: true,
                }
                .failure("boom"),
                vec![],
            ),
            (
                RunReports {
                    kind: &node,
                    logs: true,
                }
                .unmatched(true),
                vec![patch(node_run, failed.clone())],
            ),
            (
                RunReports {
                    kind: &node,
                    logs: true,
                }
                .unmatched(false),
                vec![],
            ),
            (
                RunReports {
                    kind: &action,
                    logs: true,
                }
                .unmatched(true),
                vec![],
            ),
            (vec![run_failed("n1", true, "x")], vec![patch(node_run, failed)]),
        ];
        for (i, (got, want)) in cases.into_iter().enumerate() {
            assert_eq!(calls(got), want, "case {i}");
        }
    }

    #[test]
    fn answered_runs_report_response_status_and_the_last_line() {
        let action = Kind::ActionRun("r1".into());
        let node = Kind::NodeRun("n1".into());
        let run = "/v1/actions/runs/r1";
        let node_run = "/v1/workflows/nodes/runs/n1";
        let none = Redactor::new(Vec::<String>::new());
        let ok = answer(200, "{\"id\":7}");
        let bad = answer(500, "oops");
        let line = |r: &ResponseContext| LogLine::answered(r, false, false, &none);
        let success = Some(default_report(true, &ok, false));
        let cases = [
            (
                RunReports {
                    kind: &action,
                    logs: true,
                }
                .answered(line(&ok), true, &ok, success),
                vec![
                    log(
                        run,
                        "Action invocation has completed successfully with status code: 200",
                    ),
                    patch(&format!("{run}/response"), json!({"response": {"id": 7}})),
                    patch(run, json!({"status": "SUCCESS"})),
                    log(run, FINISHED),
                ],
            ),
            (
                RunReports {
                    kind: &action,
                    logs: false,
                }
                .answered(line(&ok), false, &ok, Some(RunReport::default())),
                vec![],
            ),
            (
                RunReports {
                    kind: &node,
                    logs: false,
                }
                .answered(line(&ok), true, &ok, None),
                vec![patch(
                    node_run,
                    json!({"status": "COMPLETED", "result": "SUCCESS",
                           "output": {"response": {"status": 200, "data": {"id": 7}}}}),
                )],
            ),
            (
                RunReports {
                    kind: &node,
                    logs: false,
                }
                .answered(line(&ok), false, &ok, None),
                vec![],
            ),
            (
                RunReports {
                    kind: &node,
                    logs: false,
                }
                .answered(line(&bad), true, &bad, None),
                vec![patch(
                    node_run,
                    json!({"status": "COMPLETED", "result": "FAILED"}),
                )],
            ),
            (
                RunReports {
                    kind: &Kind::ChangeLog,
                    logs: true,
                }
                .answered(line(&ok), true, &ok, None),
                vec![],
            ),
        ];
        for (i, (got, want)) in cases.into_iter().enumerate() {
            assert_eq!(calls(got), want, "case {i}");
        }
    }

    #[test]
    fn summaries() {
        assert_eq!(
            invoke_failed_summary("refused"),
            "Failed to invoke the webhook: refused"
        );
        assert_eq!(
            stale_summary(90, 60),
            "The agent did not run this action: its message was signed 90 s ago, longer ago than \
             AGENT_MAX_MESSAGE_AGE_SECONDS (60 s) allows. Run it again from Port."
        );
    }
}
