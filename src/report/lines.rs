//! What a run's log says ([`LogLine`]); which lines are posted is the
//! setting [`crate::settings::RunLogs`] (`AGENT_RUN_LOGS`).

use super::redirect_location;
use crate::http::ResponseContext;
use crate::redact::Redactor;

/// A line of a run's log (`POST …/logs`). The texts are the Python
/// agent's (v0.8.9, `app/invokers/webhook_invoker.py`), to the character;
/// an action run and a node run word [`LogLine::Received`] and
/// [`LogLine::Finished`] differently, and a node run has no
/// [`LogLine::Preparing`] ([`LogLine::text_for`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogLine {
    /// The message was accepted for the agent.
    Received,
    /// The request is being built (action runs only).
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
    /// A synchronous action run's response is being reported.
    ReportingResponse,
    /// Port accepted the run's response.
    ResponseReported,
    /// Port refused the run's response for good.
    ResponseNotReported(Refusal),
    /// Port refused the run's status for good.
    StateNotReported(Refusal),
    /// The last line of a run the agent reported on (a node run's only
    /// when it succeeded, as with the Python agent).
    Finished,
    /// The run was failed without an answer from the target (request not
    /// built or not allowed, stale message, internal error): its summary.
    /// Posted only with [`RunLogs::Minimal`], as the run's one line.
    Summary(String),
}

/// Port's refusal of a call, as a run-log line quotes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Port's HTTP status.
    pub status: u16,
    /// Port's answer, with `DETAILED_LOGGING`.
    pub response: Option<String>,
}

impl Refusal {
    fn suffix(&self) -> String {
        self.response
            .as_ref()
            .map(|r| format!(" and response: {r}"))
            .unwrap_or_default()
    }
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
            // The Python agent appends " and response: {text}" with
            // DETAILED_LOGGING, an empty text too.
            response: detailed.then(|| redactor.text(&response.text)),
            truncated_at,
        }
    }

    /// The text posted to Port about a node run (`node`) or an action run;
    /// `None` for a line that kind of run does not get.
    pub fn text_for(&self, node: bool) -> Option<String> {
        match (self, node) {
            (LogLine::Received, true) => Some("A workflow node run has been received".into()),
            (LogLine::Preparing, true) => None,
            (LogLine::Finished, true) => Some("Port agent finished processing the workflow node run".into()),
            _ => Some(self.text()),
        }
    }

    /// The text posted to Port (about an action run).
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
            LogLine::ReportingResponse => "Reporting the run response".into(),
            // The trailing space is the Python agent's.
            LogLine::ResponseReported => "The run response was reported successfully ".into(),
            LogLine::ResponseNotReported(r) => format!(
                "The run response failed to be reported with status code: {}{}",
                r.status,
                r.suffix()
            ),
            LogLine::StateNotReported(r) => format!(
                "The run state failed to be reported with status code: {}{}",
                r.status,
                r.suffix()
            ),
            LogLine::Finished => "Port agent finished processing the action run".into(),
            LogLine::Summary(summary) => summary.clone(),
        }
    }
}
