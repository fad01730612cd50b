//! What is reported to Port about a run, and nothing else: the action-run
//! report and its `report.*` overrides, the node-run bodies, the failure
//! bodies and the run-log lines, each turned into the [`PortCall`]s to make,
//! in order. Pure: no I/O here; the pipeline sends the calls.
//!
//! A run's calls form two chains ([`Chains`]), side by side (SPEC §7):
//! the log lines, and the result (the run's response for synchronous
//! action runs, then its status). With `AGENT_RUN_LOGS=all` the lines are
//! the Python agent's (v0.8.9), in its order: before the request
//! [`LogLine::Received`], [`LogLine::Preparing`], [`LogLine::Sending`],
//! then the line that tells how the target answered, the lines about the
//! response call ([`LogLine::ReportingResponse`], then whether Port took
//! it), a line when Port refused the status, and [`LogLine::Finished`]
//! last. A line about a result call waits for that call's outcome; the
//! status never waits for a log line. [`RunLogs`] (`AGENT_RUN_LOGS`) says
//! which lines are posted.

use serde_json::{json, Map, Value};

use crate::http::ResponseContext;
use crate::mapping::{jq, EvalCtx, Mapping, RequestSpec, Warning};
use crate::message::Kind;
use crate::port::{PortCall, PortError};
use crate::settings::RunLogs;

mod chains;
mod lines;
mod summary;

pub use chains::{Chains, Refused, ResultCall};
pub use lines::{LogLine, Refusal};
pub use summary::FailureSummary;

/// The `Location` of a 3xx answer (a redirect that was not followed).
fn redirect_location(response: &ResponseContext) -> Option<&str> {
    response
        .header("location")
        .filter(|_| (300..400).contains(&response.status))
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
/// which log lines are posted (`AGENT_RUN_LOGS`).
///
/// With [`RunLogs::All`] the lines are the Python agent's for that kind of
/// run and outcome (a node run gets no [`LogLine::Finished`] when it
/// failed). With [`RunLogs::Minimal`] a run gets the one line that says how
/// it ended: how the target answered ([`LogLine::answered`]), why the
/// request could not be delivered ([`LogLine::InvocationFailed`]), or else
/// the summary it was failed with ([`LogLine::Summary`]: request not built
/// or not allowed, stale message, internal error). Runs that get no line
/// with [`RunLogs::All`] (an unmatched node run, change-log events) get
/// none.
#[derive(Debug, Clone, Copy)]
pub struct ReportPlan<'a> {
    /// The run.
    pub kind: &'a Kind,
    /// Which log lines are posted.
    pub logs: RunLogs,
    /// `DETAILED_LOGGING`: a line about Port's refusal quotes its answer.
    pub detailed: bool,
}

impl ReportPlan<'_> {
    /// The calls that post `lines` whatever [`RunLogs`] says (none for
    /// change-log events), in the words of the run's kind.
    fn post(&self, lines: &[LogLine]) -> Vec<PortCall> {
        lines
            .iter()
            .filter_map(|line| match self.kind {
                Kind::ActionRun(id) => Some(PortCall::RunLog {
                    run_id: id.clone(),
                    message: line.text_for(false)?,
                }),
                Kind::NodeRun(id) => Some(PortCall::NodeRunLog {
                    run_id: id.clone(),
                    message: line.text_for(true)?,
                }),
                Kind::ChangeLog => None,
            })
            .collect()
    }

    fn is_node_run(&self) -> bool {
        matches!(self.kind, Kind::NodeRun(_))
    }

    /// The calls that post the progress `lines` (only with [`RunLogs::All`]).
    pub fn log(&self, lines: &[LogLine]) -> Vec<PortCall> {
        match self.logs {
            RunLogs::All => self.post(lines),
            RunLogs::Minimal | RunLogs::Off => Vec::new(),
        }
    }

    /// The line that says how the run ended (with `all` and `minimal`).
    fn outcome(&self, line: LogLine) -> Vec<PortCall> {
        match self.logs {
            RunLogs::All | RunLogs::Minimal => self.post(&[line]),
            RunLogs::Off => Vec::new(),
        }
    }

    /// [`LogLine::Finished`] of a run that did not succeed: an action run's
    /// (a difference from the Python agent, which stops without it); none
    /// for a node run, as with the Python agent.
    fn finished_after_failure(&self) -> Vec<PortCall> {
        if self.is_node_run() {
            Vec::new()
        } else {
            self.log(&[LogLine::Finished])
        }
    }

    /// The line that says Port refused `call` for good (with `all`, when
    /// Port answered with a status).
    pub fn refused(&self, call: Refused, error: &PortError) -> Vec<PortCall> {
        let Some(status) = error.status else {
            return Vec::new();
        };
        let refusal = Refusal {
            status,
            response: self.detailed.then(|| error.answer.clone()),
        };
        self.log(&[match call {
            Refused::Response => LogLine::ResponseNotReported(refusal),
            Refused::State => LogLine::StateNotReported(refusal),
        }])
    }

    /// Fail the run with `summary`. With `all`, an action run's log closes
    /// with [`LogLine::Finished`] (its summary is in its status); a node
    /// run, which has no summary, gets the summary as a line. With
    /// `minimal`, the summary is the line.
    pub fn failure(&self, summary: &str) -> Chains {
        let summary_line = || self.post(&[LogLine::Summary(summary.to_string())]);
        let logs = match self.logs {
            RunLogs::All if self.is_node_run() => summary_line(),
            RunLogs::Minimal => summary_line(),
            RunLogs::All | RunLogs::Off => Vec::new(),
        };
        Chains {
            logs,
            result: self.failed(summary),
            closing: self.finished_after_failure(),
        }
    }

    /// The request could not be delivered: `line` (see
    /// [`LogLine::InvocationFailed`]), and the run failed with `summary`.
    pub fn request_failed(&self, line: LogLine, summary: &str) -> Chains {
        Chains {
            logs: self.outcome(line),
            result: self.failed(summary),
            closing: self.finished_after_failure(),
        }
    }

    /// An action run's status call: with `all`, a refusal gets its line.
    fn status_call(&self, call: PortCall) -> ResultCall {
        ResultCall {
            refused: (self.logs == RunLogs::All).then_some(Refused::State),
            ..ResultCall::quiet(call)
        }
    }

    /// The status report that fails the run (none for change-log events).
    fn failed(&self, summary: &str) -> Vec<ResultCall> {
        match self.kind {
            Kind::ActionRun(id) => vec![self.status_call(run_failed(id, false, summary))],
            Kind::NodeRun(id) => vec![ResultCall::quiet(run_failed(id, true, summary))],
            Kind::ChangeLog => Vec::new(),
        }
    }

    /// No mapping matched: a node run is failed when `fail_node_runs`
    /// (`AGENT_WF_UNMATCHED_FAIL`); nothing else is reported.
    pub fn unmatched(&self, fail_node_runs: bool) -> Chains {
        let result = match self.kind {
            Kind::NodeRun(id) if fail_node_runs => vec![ResultCall::quiet(PortCall::NodeRunPatch {
                run_id: id.clone(),
                body: node_run_failed(),
            })],
            _ => Vec::new(),
        };
        Chains {
            result,
            ..Chains::default()
        }
    }

    /// The target answered: the log says so with `line` (see
    /// [`LogLine::answered`]); the result is the response of a synchronous
    /// action run, then the run's status (`report` for an action run, see
    /// [`default_report`] and [`apply_report_mapping`]).
    pub fn answered(
        &self,
        line: LogLine,
        synchronized: bool,
        response: &ResponseContext,
        report: Option<RunPatchBody>,
    ) -> Chains {
        let mut chains = Chains {
            logs: self.outcome(line),
            ..Chains::default()
        };
        match self.kind {
            Kind::ActionRun(id) => {
                if synchronized && !response.text.trim().is_empty() {
                    chains.logs.extend(self.log(&[LogLine::ReportingResponse]));
                    chains.result.push(ResultCall {
                        call: PortCall::RunResponse {
                            run_id: id.clone(),
                            response: response_value(response),
                        },
                        accepted: self.log(&[LogLine::ResponseReported]),
                        refused: (self.logs == RunLogs::All).then_some(Refused::Response),
                    });
                }
                if let Some(report) = report.filter(|r| !r.is_empty()) {
                    chains.result.push(self.status_call(PortCall::RunPatch {
                        run_id: id.clone(),
                        body: report.to_body(),
                    }));
                }
                chains.closing = self.log(&[LogLine::Finished]);
            }
            Kind::NodeRun(id) => self.node_run_answered(id, synchronized, response, &mut chains),
            Kind::ChangeLog => {}
        }
        chains
    }

    /// A node run's status and closing line: [`LogLine::Finished`] only
    /// after a success (once Port accepted its status, when one is sent).
    fn node_run_answered(
        &self,
        id: &str,
        synchronized: bool,
        response: &ResponseContext,
        chains: &mut Chains,
    ) {
        let finished = || self.log(&[LogLine::Finished]);
        match node_run_answered(synchronized, response) {
            Some(body) => chains.result.push(ResultCall {
                accepted: if response.ok() { finished() } else { Vec::new() },
                ..ResultCall::quiet(PortCall::NodeRunPatch {
                    run_id: id.to_string(),
                    body,
                })
            }),
            None => chains.closing = finished(),
        }
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
pub struct RunPatchBody {
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

impl RunPatchBody {
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
pub fn default_report(synchronized: bool, response: &ResponseContext, detailed: bool) -> RunPatchBody {
    if response.ok() {
        RunPatchBody {
            status: synchronized.then(|| Value::from("SUCCESS")),
            ..RunPatchBody::default()
        }
    } else {
        let summary = FailureSummary::Answered {
            status: response.status,
            // A redirect that was not followed (another host, or
            // AGENT_TARGET_REDIRECTS=none): say where it pointed.
            location: redirect_location(response).map(str::to_string),
            response: (detailed && !response.text.is_empty()).then(|| response.text.clone()),
        }
        .to_string();
        RunPatchBody {
            status: Some(Value::from("FAILURE")),
            summary: Some(Value::from(summary)),
            ..RunPatchBody::default()
        }
    }
}

/// Apply `report.*` overrides on top of `report`: a present expression
/// replaces the default, and a null result removes the key.
pub fn apply_report_mapping(
    mapping: &Mapping,
    mut report: RunPatchBody,
    message: &Value,
    request: &RequestSpec,
    response: &ResponseContext,
    ctx: &EvalCtx<'_>,
    warnings: &mut Vec<Warning>,
) -> RunPatchBody {
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
    use crate::redact::Redactor;
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
        assert_eq!(default_report(false, &ok, true), RunPatchBody::default());
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

    type Call = (String, String, Value);

    fn calls(calls: &[PortCall]) -> Vec<Call> {
        calls
            .iter()
            .map(|c| (c.method().to_string(), c.path(), c.body()))
            .collect()
    }

    /// The log chain when Port accepts every call, then the result chain.
    fn chains(c: Chains) -> (Vec<Call>, Vec<Call>) {
        let mut logs = c.logs;
        let mut result = Vec::new();
        for r in c.result {
            result.push(r.call);
            logs.extend(r.accepted);
        }
        logs.extend(c.closing);
        (calls(&logs), calls(&result))
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
            (LogLine::Summary("Internal error".into()), "Internal error"),
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
                LogLine::answered(&answer(302, ""), false, false, &none),
                "Action invocation failed with status code: 302 redirecting to http://elsewhere/x",
            ),
            // As the Python agent: the suffix with an empty answer too.
            (
                LogLine::answered(&answer(502, ""), false, true, &none),
                "Action invocation failed with status code: 502 and response: ",
            ),
            (LogLine::ReportingResponse, "Reporting the run response"),
            (LogLine::ResponseReported, "The run response was reported successfully "),
            (
                LogLine::ResponseNotReported(Refusal {
                    status: 422,
                    response: None,
                }),
                "The run response failed to be reported with status code: 422",
            ),
            (
                LogLine::StateNotReported(Refusal {
                    status: 404,
                    response: Some("{\"ok\":false}".into()),
                }),
                "The run state failed to be reported with status code: 404 and response: {\"ok\":false}",
            ),
        ];
        for (line, text) in cases {
            assert_eq!(line.text(), text, "{line:?}");
        }
    }

    fn reports(kind: &Kind, logs: RunLogs) -> ReportPlan<'_> {
        ReportPlan {
            kind,
            logs,
            detailed: false,
        }
    }

    #[test]
    fn failures_and_unmatched_runs() {
        let action = Kind::ActionRun("r1".into());
        let node = Kind::NodeRun("n1".into());
        let run = "/v1/actions/runs/r1";
        let node_run = "/v1/workflows/nodes/runs/n1";
        let failed = json!({"status": "COMPLETED", "result": "FAILED"});
        let boom = || patch(run, json!({"status": "FAILURE", "summary": "boom"}));
        let (all, minimal, off) = (RunLogs::All, RunLogs::Minimal, RunLogs::Off);
        let cases = [
            (
                reports(&action, all).failure("boom"),
                vec![log(run, FINISHED)],
                vec![boom()],
            ),
            (
                reports(&action, minimal).failure("boom"),
                vec![log(run, "boom")],
                vec![boom()],
            ),
            (reports(&action, off).failure("boom"), vec![], vec![boom()]),
            (
                reports(&node, all).failure("boom"),
                vec![log(node_run, "boom")],
                vec![patch(node_run, failed.clone())],
            ),
            (
                reports(&node, minimal).failure("boom"),
                vec![log(node_run, "boom")],
                vec![patch(node_run, failed.clone())],
            ),
            (reports(&Kind::ChangeLog, all).failure("boom"), vec![], vec![]),
            (reports(&Kind::ChangeLog, minimal).failure("boom"), vec![], vec![]),
            (
                reports(&node, all).unmatched(true),
                vec![],
                vec![patch(node_run, failed.clone())],
            ),
            (
                reports(&node, minimal).unmatched(true),
                vec![],
                vec![patch(node_run, failed.clone())],
            ),
            (reports(&node, all).unmatched(false), vec![], vec![]),
            (reports(&action, all).unmatched(true), vec![], vec![]),
            (
                reports(&action, all).request_failed(LogLine::InvocationFailed("refused".into()), "no"),
                vec![log(run, "Action invocation failed: refused"), log(run, FINISHED)],
                vec![patch(run, json!({"status": "FAILURE", "summary": "no"}))],
            ),
            (
                reports(&action, minimal).request_failed(LogLine::InvocationFailed("refused".into()), "no"),
                vec![log(run, "Action invocation failed: refused")],
                vec![patch(run, json!({"status": "FAILURE", "summary": "no"}))],
            ),
            (
                reports(&node, off).request_failed(LogLine::InvocationFailed("refused".into()), "no"),
                vec![],
                vec![patch(node_run, failed.clone())],
            ),
        ];
        for (i, (got, logs, result)) in cases.into_iter().enumerate() {
            assert_eq!(chains(got), (logs, result), "case {i}");
        }
        assert_eq!(
            calls(&[run_failed("n1", true, "x")]),
            vec![patch(node_run, failed)]
        );
        // In one list (dry-run, render), as before the split.
        let one = |c: Chains| calls(&c.in_order());
        assert_eq!(
            one(reports(&action, all).failure("boom")),
            vec![boom(), log(run, FINISHED)]
        );
        assert_eq!(
            one(reports(&action, all).request_failed(LogLine::InvocationFailed("refused".into()), "no")),
            vec![
                log(run, "Action invocation failed: refused"),
                patch(run, json!({"status": "FAILURE", "summary": "no"})),
                log(run, FINISHED)
            ]
        );
        assert_eq!(
            one(reports(&action, minimal).failure("boom")),
            vec![log(run, "boom"), boom()]
        );
    }

    #[test]
    fn progress_lines_are_posted_only_with_all() {
        let action = Kind::ActionRun("r1".into());
        let lines = [LogLine::Received, LogLine::Preparing, LogLine::Sending];
        assert_eq!(reports(&action, RunLogs::All).log(&lines).len(), 3);
        assert!(reports(&action, RunLogs::Minimal).log(&lines).is_empty());
        assert!(reports(&action, RunLogs::Off).log(&lines).is_empty());
        assert!(reports(&Kind::ChangeLog, RunLogs::All).log(&lines).is_empty());
    }

    #[test]
    fn answered_runs_report_response_then_status_and_log_on_their_own() {
        let action = Kind::ActionRun("r1".into());
        let node = Kind::NodeRun("n1".into());
        let run = "/v1/actions/runs/r1";
        let node_run = "/v1/workflows/nodes/runs/n1";
        let none = Redactor::new(Vec::<String>::new());
        let ok = answer(200, "{\"id\":7}");
        let bad = answer(500, "oops");
        let line = |r: &ResponseContext| LogLine::answered(r, false, false, &none);
        let success = || Some(default_report(true, &ok, false));
        let succeeded = "Action invocation has completed successfully with status code: 200";
        let sync_result = || {
            vec![
                patch(&format!("{run}/response"), json!({"response": {"id": 7}})),
                patch(run, json!({"status": "SUCCESS"})),
            ]
        };
        let node_ok = json!({"status": "COMPLETED", "result": "SUCCESS",
                             "output": {"response": {"status": 200, "data": {"id": 7}}}});
        let node_failed = json!({"status": "COMPLETED", "result": "FAILED"});
        let (all, minimal, off) = (RunLogs::All, RunLogs::Minimal, RunLogs::Off);
        let cases = [
            (
                reports(&action, all).answered(line(&ok), true, &ok, success()),
                vec![
                    log(run, succeeded),
                    log(run, "Reporting the run response"),
                    log(run, "The run response was reported successfully "),
                    log(run, FINISHED),
                ],
                sync_result(),
            ),
            (
                reports(&action, minimal).answered(line(&ok), true, &ok, success()),
                vec![log(run, succeeded)],
                sync_result(),
            ),
            (
                reports(&action, off).answered(line(&ok), true, &ok, success()),
                vec![],
                sync_result(),
            ),
            (
                reports(&action, minimal).answered(line(&ok), false, &ok, Some(RunPatchBody::default())),
                vec![log(run, succeeded)],
                vec![],
            ),
            (
                reports(&action, off).answered(line(&ok), false, &ok, Some(RunPatchBody::default())),
                vec![],
                vec![],
            ),
            (
                reports(&action, minimal).answered(
                    line(&bad),
                    false,
                    &bad,
                    Some(default_report(false, &bad, false)),
                ),
                vec![log(run, "Action invocation failed with status code: 500")],
                vec![patch(
                    run,
                    json!({"status": "FAILURE", "summary": "Failed to invoke the webhook with status code: 500."}),
                )],
            ),
            (
                reports(&node, off).answered(line(&ok), true, &ok, None),
                vec![],
                vec![patch(node_run, node_ok)],
            ),
            (
                reports(&node, minimal).answered(line(&ok), false, &ok, None),
                vec![log(node_run, succeeded)],
                vec![],
            ),
            (
                reports(&node, off).answered(line(&bad), true, &bad, None),
                vec![],
                vec![patch(node_run, node_failed)],
            ),
            (
                reports(&Kind::ChangeLog, all).answered(line(&ok), true, &ok, None),
                vec![],
                vec![],
            ),
            (
                reports(&Kind::ChangeLog, minimal).answered(line(&ok), true, &ok, None),
                vec![],
                vec![],
            ),
        ];
        for (i, (got, logs, result)) in cases.into_iter().enumerate() {
            assert_eq!(chains(got), (logs, result), "case {i}");
        }
    }

    /// With `all`, the chains hold exactly the calls the single ordered list
    /// held before they were split, each chain in its old relative order.
    #[test]
    fn all_keeps_every_call_and_each_chains_order() {
        let action = Kind::ActionRun("r1".into());
        let run = "/v1/actions/runs/r1";
        let ok = answer(200, "{\"id\":7}");
        let line = LogLine::answered(&ok, false, false, &Redactor::default());
        let got =
            reports(&action, RunLogs::All).answered(line, true, &ok, Some(default_report(true, &ok, false)));
        // The Python agent's sequence: answered line, the response and its
        // lines, status, finished.
        let before = vec![
            log(
                run,
                "Action invocation has completed successfully with status code: 200",
            ),
            log(run, "Reporting the run response"),
            patch(&format!("{run}/response"), json!({"response": {"id": 7}})),
            log(run, "The run response was reported successfully "),
            patch(run, json!({"status": "SUCCESS"})),
            log(run, FINISHED),
        ];
        assert_eq!(calls(&got.clone().in_order()), before);
        let (logs, result) = chains(got);
        let is_log = |c: &Call| c.1.ends_with("/logs");
        assert_eq!(
            logs,
            before.iter().filter(|c| is_log(c)).cloned().collect::<Vec<_>>()
        );
        assert_eq!(
            result,
            before.iter().filter(|c| !is_log(c)).cloned().collect::<Vec<_>>()
        );
    }

    /// A refusal's line quotes Port's status, and its answer only with
    /// detailed logging; no line without a status, nor without `all`.
    #[test]
    fn refusal_lines() {
        let action = Kind::ActionRun("r1".into());
        let run = "/v1/actions/runs/r1";
        let refused = PortError {
            status: Some(422),
            answer: "{\"ok\":false}".into(),
            permanent: true,
            ..PortError::default()
        };
        let detailed = ReportPlan {
            detailed: true,
            ..reports(&action, RunLogs::All)
        };
        assert_eq!(
            calls(&detailed.refused(Refused::Response, &refused)),
            vec![log(
                run,
                "The run response failed to be reported with status code: 422 and response: {\"ok\":false}"
            )]
        );
        assert_eq!(
            calls(&reports(&action, RunLogs::All).refused(Refused::State, &refused)),
            vec![log(
                run,
                "The run state failed to be reported with status code: 422"
            )]
        );
        let no_status = PortError {
            permanent: true,
            ..PortError::default()
        };
        assert!(detailed.refused(Refused::State, &no_status).is_empty());
        assert!(reports(&action, RunLogs::Minimal)
            .refused(Refused::State, &refused)
            .is_empty());
    }

    #[test]
    fn run_logs_spellings() {
        let cases = [
            ("all", Some(RunLogs::All)),
            ("ALL", Some(RunLogs::All)),
            (" Minimal ", Some(RunLogs::Minimal)),
            ("MINIMAL", Some(RunLogs::Minimal)),
            ("off", Some(RunLogs::Off)),
            ("OFF", Some(RunLogs::Off)),
            ("true", Some(RunLogs::All)),
            ("Yes", Some(RunLogs::All)),
            ("on", Some(RunLogs::All)),
            ("1", Some(RunLogs::All)),
            ("t", Some(RunLogs::All)),
            ("y", Some(RunLogs::All)),
            ("false", Some(RunLogs::Off)),
            ("No", Some(RunLogs::Off)),
            ("0", Some(RunLogs::Off)),
            ("f", Some(RunLogs::Off)),
            ("n", Some(RunLogs::Off)),
            ("min", None),
            ("none", None),
            ("", None),
        ];
        for (value, want) in cases {
            assert_eq!(RunLogs::parse(value), want, "{value:?}");
        }
    }

    #[test]
    fn summaries() {
        assert_eq!(
            FailureSummary::InvokeFailed("refused".into()).to_string(),
            "Failed to invoke the webhook: refused"
        );
        assert_eq!(
            FailureSummary::Stale { age: 90, max: 60 }.to_string(),
            "The agent did not run this action: its message was signed 90 s ago, longer ago than \
             AGENT_MAX_MESSAGE_AGE_SECONDS (60 s) allows. Run it again from Port."
        );
    }
}
