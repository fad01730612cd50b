//! Talking to Port's API (SPEC §7), and the only place that knows its
//! endpoint paths:
//!
//! - this module: the [`Endpoint`]s, the [`PortCall`]s the pipeline makes
//!   about a run, the [`Reporter`] trait the pipeline sends them through, and
//!   the [`PortBacklog`] behind `/readyz`;
//! - [`client`]: the real [`PortClient`] (token cache, retries);
//! - [`api`]: the typed endpoints the sources and the command line call
//!   (claim, ack, Kafka credentials, the streamer name);
//! - [`auth`]: Port refusing the credentials (start-up, `/readyz`);
//! - [`ratelimit`]: Port's rate limit, one budget shared by every task;
//! - [`recording`]: a [`RecordingReporter`] for dry-run, render and tests.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};

use crate::redact::Redactor;
use crate::telemetry::metrics;

pub mod api;
pub mod auth;
pub mod client;
pub mod ratelimit;
pub mod recording;

pub use api::{Acked, ClaimedItem, KafkaCredentials, MAX_NESTING};
pub use client::PortClient;
pub use recording::RecordingReporter;

/// Every Port API endpoint the agent calls; its [`label`](Endpoint::label) is
/// the bounded `endpoint` label of the Port call metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /v1/auth/access_token`.
    Token,
    /// `PATCH /v1/organization`.
    Organization,
    /// `GET /v1/kafka-credentials`.
    KafkaCredentials,
    /// `POST /v1/actions/runs/claim-pending`.
    ClaimRuns,
    /// `POST /v1/workflows/runs/claim-pending`.
    ClaimNodeRuns,
    /// `PATCH /v1/actions/runs/ack`.
    AckRun,
    /// `PATCH /v1/workflows/runs/ack`.
    AckNodeRun,
    /// `POST /v1/actions/runs/{id}/logs`.
    RunLog,
    /// `PATCH /v1/actions/runs/{id}/response`.
    RunResponse,
    /// `PATCH /v1/actions/runs/{id}`.
    RunPatch,
    /// `POST /v1/workflows/nodes/runs/{id}/logs`.
    NodeRunLog,
    /// `PATCH /v1/workflows/nodes/runs/{id}`.
    NodeRunPatch,
}

impl Endpoint {
    /// Every endpoint, once.
    pub const ALL: [Endpoint; 12] = [
        Endpoint::Token,
        Endpoint::Organization,
        Endpoint::KafkaCredentials,
        Endpoint::ClaimRuns,
        Endpoint::ClaimNodeRuns,
        Endpoint::AckRun,
        Endpoint::AckNodeRun,
        Endpoint::RunLog,
        Endpoint::RunResponse,
        Endpoint::RunPatch,
        Endpoint::NodeRunLog,
        Endpoint::NodeRunPatch,
    ];

    /// The metrics label of every endpoint.
    pub fn labels() -> [&'static str; 12] {
        Endpoint::ALL.map(Endpoint::label)
    }

    /// The metrics label (bounded, no ids).
    pub fn label(self) -> &'static str {
        match self {
            Endpoint::Token => "token",
            Endpoint::Organization => "organization",
            Endpoint::KafkaCredentials => "kafka_credentials",
            Endpoint::ClaimRuns => "claim_runs",
            Endpoint::ClaimNodeRuns => "claim_node_runs",
            Endpoint::AckRun => "ack_run",
            Endpoint::AckNodeRun => "ack_node_run",
            Endpoint::RunLog => "run_log",
            Endpoint::RunResponse => "run_response",
            Endpoint::RunPatch => "run_patch",
            Endpoint::NodeRunLog => "node_run_log",
            Endpoint::NodeRunPatch => "node_run_patch",
        }
    }

    /// Claims count against Port's reserved usage, which the call says with
    /// `x-port-reserved-usage: true`.
    fn reserved_usage(self) -> bool {
        matches!(self, Endpoint::ClaimRuns | Endpoint::ClaimNodeRuns)
    }

    /// The HTTP method.
    pub fn method(self) -> &'static str {
        match self {
            Endpoint::KafkaCredentials => "GET",
            Endpoint::Token
            | Endpoint::ClaimRuns
            | Endpoint::ClaimNodeRuns
            | Endpoint::RunLog
            | Endpoint::NodeRunLog => "POST",
            Endpoint::Organization
            | Endpoint::AckRun
            | Endpoint::AckNodeRun
            | Endpoint::RunResponse
            | Endpoint::RunPatch
            | Endpoint::NodeRunPatch => "PATCH",
        }
    }

    /// The method as the HTTP client takes it.
    fn http_method(self) -> reqwest::Method {
        match self.method() {
            "GET" => reqwest::Method::GET,
            "PATCH" => reqwest::Method::PATCH,
            _ => reqwest::Method::POST,
        }
    }

    /// The call to this endpoint; `run_id` fills the `{id}` of the per-run
    /// endpoints (percent-encoded) and is not used by the others.
    pub fn route(self, run_id: &str) -> Route {
        let id = || enc(run_id);
        let path = match self {
            Endpoint::Token => "/v1/auth/access_token".to_string(),
            Endpoint::Organization => "/v1/organization".to_string(),
            Endpoint::KafkaCredentials => "/v1/kafka-credentials".to_string(),
            Endpoint::ClaimRuns => "/v1/actions/runs/claim-pending".to_string(),
            Endpoint::ClaimNodeRuns => "/v1/workflows/runs/claim-pending".to_string(),
            Endpoint::AckRun => "/v1/actions/runs/ack".to_string(),
            Endpoint::AckNodeRun => "/v1/workflows/runs/ack".to_string(),
            Endpoint::RunLog => format!("/v1/actions/runs/{}/logs", id()),
            Endpoint::RunResponse => format!("/v1/actions/runs/{}/response", id()),
            Endpoint::RunPatch => format!("/v1/actions/runs/{}", id()),
            Endpoint::NodeRunLog => format!("/v1/workflows/nodes/runs/{}/logs", id()),
            Endpoint::NodeRunPatch => format!("/v1/workflows/nodes/runs/{}", id()),
        };
        Route { endpoint: self, path }
    }
}

/// Where one call goes: an [`Endpoint`] and its path. Made only by
/// [`Endpoint::route`], so the method and path always match the endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    endpoint: Endpoint,
    path: String,
}

impl Route {
    /// The endpoint.
    pub fn endpoint(&self) -> Endpoint {
        self.endpoint
    }

    /// The path under the API base.
    pub fn path(&self) -> &str {
        &self.path
    }
}

impl std::fmt::Display for Route {
    /// `PATCH /v1/actions/runs/r_1`, as errors name a call.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.endpoint.method(), self.path)
    }
}

/// One call the pipeline makes to Port.
#[derive(Debug, Clone, PartialEq)]
pub enum PortCall {
    /// `POST /v1/actions/runs/{id}/logs`.
    RunLog {
        /// Run id.
        run_id: String,
        /// The log line.
        message: String,
    },
    /// `POST /v1/workflows/nodes/runs/{id}/logs`.
    NodeRunLog {
        /// Node run id.
        run_id: String,
        /// The log line.
        message: String,
    },
    /// `PATCH /v1/actions/runs/{id}/response`.
    RunResponse {
        /// Run id.
        run_id: String,
        /// The target's response (JSON or text).
        response: Value,
    },
    /// `PATCH /v1/actions/runs/{id}`.
    RunPatch {
        /// Run id.
        run_id: String,
        /// Non-null keys of status, link, summary, externalRunId.
        body: Value,
    },
    /// `PATCH /v1/workflows/nodes/runs/{id}`.
    NodeRunPatch {
        /// Node run id.
        run_id: String,
        /// `{"status":"COMPLETED","result":…}`.
        body: Value,
    },
}

impl PortCall {
    /// HTTP method.
    pub fn method(&self) -> &'static str {
        self.endpoint().method()
    }

    /// Where the call goes.
    pub fn route(&self) -> Route {
        self.endpoint().route(self.run_id())
    }

    /// Path under the API base.
    pub fn path(&self) -> String {
        self.route().path
    }

    /// JSON body.
    pub fn body(&self) -> Value {
        match self {
            PortCall::RunLog { message, .. } => json!({ "message": message }),
            PortCall::NodeRunLog { message, .. } => json!({"logs": [{"level": "INFO", "message": message}]}),
            PortCall::RunResponse { response, .. } => json!({ "response": response }),
            PortCall::RunPatch { body, .. } | PortCall::NodeRunPatch { body, .. } => body.clone(),
        }
    }

    /// The call with every known secret in its body replaced (the one
    /// redaction of what goes to Port; see [`crate::redact`]). The target's
    /// answer forwarded as `/response` or a node run's output is redacted
    /// the same way: known values only, its keys' names are not judged (an
    /// action may return a new credential on purpose).
    pub fn redacted(&self, r: &Redactor) -> PortCall {
        match self {
            PortCall::RunLog { run_id, message } => PortCall::RunLog {
                run_id: run_id.clone(),
                message: r.text(message),
            },
            PortCall::NodeRunLog { run_id, message } => PortCall::NodeRunLog {
                run_id: run_id.clone(),
                message: r.text(message),
            },
            PortCall::RunResponse { run_id, response } => PortCall::RunResponse {
                run_id: run_id.clone(),
                response: r.value(response),
            },
            PortCall::RunPatch { run_id, body } => PortCall::RunPatch {
                run_id: run_id.clone(),
                body: r.value(body),
            },
            PortCall::NodeRunPatch { run_id, body } => PortCall::NodeRunPatch {
                run_id: run_id.clone(),
                body: r.value(body),
            },
        }
    }

    /// The endpoint the call goes to.
    pub fn endpoint(&self) -> Endpoint {
        match self {
            PortCall::RunLog { .. } => Endpoint::RunLog,
            PortCall::NodeRunLog { .. } => Endpoint::NodeRunLog,
            PortCall::RunResponse { .. } => Endpoint::RunResponse,
            PortCall::RunPatch { .. } => Endpoint::RunPatch,
            PortCall::NodeRunPatch { .. } => Endpoint::NodeRunPatch,
        }
    }

    /// The run id the call is about.
    pub fn run_id(&self) -> &str {
        match self {
            PortCall::RunLog { run_id, .. }
            | PortCall::NodeRunLog { run_id, .. }
            | PortCall::RunResponse { run_id, .. }
            | PortCall::RunPatch { run_id, .. }
            | PortCall::NodeRunPatch { run_id, .. } => run_id,
        }
    }
}

/// A run id that can name a path segment: not empty, `.` or `..` (which a
/// URL resolves away, encoded or not, so the call would go elsewhere).
pub fn is_usable_run_id(id: &str) -> bool {
    !matches!(id, "" | "." | "..")
}

/// Percent-encode one path segment (run ids are plain, but never trust input).
fn enc(segment: &str) -> String {
    url::form_urlencoded::byte_serialize(segment.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// A Port API call failed after retries.
#[derive(Debug, Clone, Default, PartialEq, Eq, thiserror::Error)]
#[error("Port API {call}: {message}")]
pub struct PortError {
    /// Which call (`PATCH /v1/actions/runs/r_1`).
    pub call: String,
    /// Status or transport error; never a token or secret.
    pub message: String,
    /// Port refused the call for good (a 4xx other than 401, 408 and 429):
    /// sending it again cannot help.
    pub permanent: bool,
    /// Port's HTTP status, when Port answered (with an error status).
    pub status: Option<u16>,
    /// Port's answer text with that status (what a run-log line about the
    /// refusal quotes with `DETAILED_LOGGING`); empty otherwise.
    pub answer: String,
}

/// Sends the pipeline's calls to Port.
pub trait Reporter: Send + Sync {
    /// Make one call (the real client retries transient failures).
    fn send(&self, call: &PortCall) -> impl Future<Output = Result<(), PortError>> + Send;
}

/// How many runs have a Port call waiting for Port to come back (shared by
/// the pipeline, which counts, and `/readyz`, which says so).
#[derive(Debug, Default)]
pub struct PortBacklog {
    pending: AtomicUsize,
}

impl PortBacklog {
    /// Runs waiting now.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    /// One more run waits, until the guard is dropped.
    pub fn enter(self: &Arc<Self>) -> BacklogEntry {
        self.pending.fetch_add(1, Ordering::Relaxed);
        metrics::reports_pending(1.0);
        BacklogEntry(self.clone())
    }
}

impl crate::telemetry::server::Readiness for PortBacklog {
    fn not_ready(&self) -> Option<String> {
        let pending = self.pending();
        (pending > 0).then(|| format!("port API unreachable: {pending} reports pending"))
    }
}

/// A run's place in the [`PortBacklog`]; leaves it when dropped (also
/// when the run's task is cancelled).
#[derive(Debug)]
pub struct BacklogEntry(Arc<PortBacklog>);

impl Drop for BacklogEntry {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::Relaxed);
        metrics::reports_pending(-1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_kinds_are_bounded_labels() {
        let labels: Vec<&str> = Endpoint::ALL.iter().map(|e| e.label()).collect();
        let mut unique = labels.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), labels.len(), "labels are unique");
        assert!(labels
            .iter()
            .all(|l| l.chars().all(|c| c.is_ascii_lowercase() || c == '_')));
        let calls = [
            (
                PortCall::RunLog {
                    run_id: "r_1".into(),
                    message: String::new(),
                },
                "run_log",
            ),
            (
                PortCall::RunResponse {
                    run_id: "r_1".into(),
                    response: json!(1),
                },
                "run_response",
            ),
            (
                PortCall::RunPatch {
                    run_id: "r_1".into(),
                    body: json!({}),
                },
                "run_patch",
            ),
            (
                PortCall::NodeRunLog {
                    run_id: "wfnr_1".into(),
                    message: String::new(),
                },
                "node_run_log",
            ),
            (
                PortCall::NodeRunPatch {
                    run_id: "wfnr_1".into(),
                    body: json!({}),
                },
                "node_run_patch",
            ),
        ];
        for (call, kind) in calls {
            assert_eq!(call.endpoint().label(), kind, "{}", call.path());
        }
        assert!(Endpoint::ClaimRuns.reserved_usage() && Endpoint::ClaimNodeRuns.reserved_usage());
        assert!(!Endpoint::AckRun.reserved_usage() && !Endpoint::Token.reserved_usage());
    }

    #[test]
    fn calls_map_to_the_spec_endpoints() {
        let c = PortCall::RunLog {
            run_id: "r_1".into(),
            message: "hi".into(),
        };
        assert_eq!(
            (c.method(), c.path(), c.body()),
            (
                "POST",
                "/v1/actions/runs/r_1/logs".into(),
                json!({"message": "hi"})
            )
        );
        let c = PortCall::NodeRunLog {
            run_id: "wfnr_1".into(),
            message: "hi".into(),
        };
        assert_eq!(c.path(), "/v1/workflows/nodes/runs/wfnr_1/logs");
        assert_eq!(c.body(), json!({"logs": [{"level": "INFO", "message": "hi"}]}));
        let c = PortCall::RunResponse {
            run_id: "r_1".into(),
            response: json!({"a": 1}),
        };
        assert_eq!(
            (c.method(), c.path(), c.body()),
            (
                "PATCH",
                "/v1/actions/runs/r_1/response".into(),
                json!({"response": {"a": 1}})
            )
        );
        let c = PortCall::NodeRunPatch {
            run_id: "wfnr_1".into(),
            body: json!({"status": "COMPLETED"}),
        };
        assert_eq!(c.path(), "/v1/workflows/nodes/runs/wfnr_1");
        let c = PortCall::RunPatch {
            run_id: "r/../x".into(),
            body: json!({}),
        };
        assert_eq!(c.path(), "/v1/actions/runs/r%2F..%2Fx");
    }

    /// Port's endpoints as SPEC §2 and §7 name them, one line each: the endpoint
    /// owns its method and path.
    #[test]
    fn every_endpoint_has_the_method_and_path_of_the_spec() {
        let want = [
            (Endpoint::Token, "POST /v1/auth/access_token"),
            (Endpoint::Organization, "PATCH /v1/organization"),
            (Endpoint::KafkaCredentials, "GET /v1/kafka-credentials"),
            (Endpoint::ClaimRuns, "POST /v1/actions/runs/claim-pending"),
            (Endpoint::ClaimNodeRuns, "POST /v1/workflows/runs/claim-pending"),
            (Endpoint::AckRun, "PATCH /v1/actions/runs/ack"),
            (Endpoint::AckNodeRun, "PATCH /v1/workflows/runs/ack"),
            (Endpoint::RunLog, "POST /v1/actions/runs/r_1/logs"),
            (Endpoint::RunResponse, "PATCH /v1/actions/runs/r_1/response"),
            (Endpoint::RunPatch, "PATCH /v1/actions/runs/r_1"),
            (Endpoint::NodeRunLog, "POST /v1/workflows/nodes/runs/r_1/logs"),
            (Endpoint::NodeRunPatch, "PATCH /v1/workflows/nodes/runs/r_1"),
        ];
        assert_eq!(want.map(|(e, _)| e), Endpoint::ALL);
        for (endpoint, route) in want {
            assert_eq!(endpoint.route("r_1").to_string(), route);
            assert_eq!(endpoint.http_method().as_str(), endpoint.method());
        }
    }
}
