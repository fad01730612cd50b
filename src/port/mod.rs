//! Talking to Port's API (SPEC §7): the [`Reporter`] trait the pipeline uses,
//! the real [`PortClient`] (token cache, retries) and a [`RecordingReporter`]
//! for dry-run and tests.

use std::future::Future;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::Mutex as AsyncMutex;

use crate::http::{build_client, ClientError, ClientOptions};
use crate::retry::{parse_retry_after, with_retries, Attempt, Backoff};
use crate::settings::Secret;
use crate::telemetry::metrics;

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
        match self {
            PortCall::RunLog { .. } | PortCall::NodeRunLog { .. } => "POST",
            _ => "PATCH",
        }
    }

    /// Path under the API base.
    pub fn path(&self) -> String {
        match self {
            PortCall::RunLog { run_id, .. } => format!("/v1/actions/runs/{}/logs", enc(run_id)),
            PortCall::NodeRunLog { run_id, .. } => format!("/v1/workflows/nodes/runs/{}/logs", enc(run_id)),
            PortCall::RunResponse { run_id, .. } => format!("/v1/actions/runs/{}/response", enc(run_id)),
            PortCall::RunPatch { run_id, .. } => format!("/v1/actions/runs/{}", enc(run_id)),
            PortCall::NodeRunPatch { run_id, .. } => format!("/v1/workflows/nodes/runs/{}", enc(run_id)),
        }
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

    /// A short name for metrics and logs.
    pub fn kind(&self) -> &'static str {
        endpoint_kind(&self.path())
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

/// When to refresh a token that lives `expires_in` seconds from `now`: a
/// minute early (or at 90 % of a short lifetime). Any number the endpoint
/// sends is safe: missing means an hour, negative or NaN means at once, a
/// huge one is capped at a day.
fn refresh_time(now: Instant, expires_in: Option<f64>) -> Instant {
    const DAY: f64 = 86_400.0;
    let expires_in = expires_in.unwrap_or(3600.0);
    let expires_in = if expires_in.is_nan() {
        0.0
    } else {
        expires_in.clamp(0.0, DAY)
    };
    let margin = (expires_in * 0.1).min(60.0);
    let lifetime = Duration::try_from_secs_f64(expires_in - margin).unwrap_or(Duration::ZERO);
    now.checked_add(lifetime).unwrap_or(now)
}

/// Every kind [`endpoint_kind`] can give (metrics start at 0 for each).
pub const ENDPOINT_KINDS: [&str; 13] = [
    "token",
    "organization",
    "kafka_credentials",
    "claim_runs",
    "claim_node_runs",
    "ack_run",
    "ack_node_run",
    "run_log",
    "run_response",
    "run_patch",
    "node_run_log",
    "node_run_patch",
    "other",
];

/// The endpoint kind of a Port API path (a metrics label: bounded, no ids).
pub fn endpoint_kind(path: &str) -> &'static str {
    let path = path.split('?').next().unwrap_or(path);
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segments.as_slice() {
        ["v1", "auth", "access_token"] => "token",
        ["v1", "organization"] => "organization",
        ["v1", "kafka-credentials"] => "kafka_credentials",
        ["v1", "actions", "runs", "claim-pending"] => "claim_runs",
        ["v1", "workflows", "runs", "claim-pending"] => "claim_node_runs",
        ["v1", "actions", "runs", "ack"] => "ack_run",
        ["v1", "workflows", "runs", "ack"] => "ack_node_run",
        ["v1", "actions", "runs", _, "logs"] => "run_log",
        ["v1", "actions", "runs", _, "response"] => "run_response",
        ["v1", "actions", "runs", _] => "run_patch",
        ["v1", "workflows", "nodes", "runs", _, "logs"] => "node_run_log",
        ["v1", "workflows", "nodes", "runs", _] => "node_run_patch",
        _ => "other",
    }
}

/// Percent-encode one path segment (run ids are plain, but never trust input).
fn enc(segment: &str) -> String {
    url::form_urlencoded::byte_serialize(segment.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// A Port API call failed after retries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Port API {call}: {message}")]
pub struct PortError {
    /// Which call (`PATCH /v1/actions/runs/r_1`).
    pub call: String,
    /// Status or transport error; never a token or secret.
    pub message: String,
    /// Port refused the call for good (a 4xx other than 401, 408 and 429):
    /// sending it again cannot help.
    pub permanent: bool,
}

/// Sends the pipeline's calls to Port.
pub trait Reporter: Send + Sync {
    /// Make one call (the real client retries transient failures).
    fn send(&self, call: &PortCall) -> impl Future<Output = Result<(), PortError>> + Send;
}

/// How many runs have a Port call waiting for Port to come back (shared by
/// the pipeline, which counts, and `/readyz`, which says so).
#[derive(Debug, Default)]
pub struct ReportBacklog {
    pending: AtomicUsize,
}

impl ReportBacklog {
    /// Runs waiting now.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    /// One more run waits, until the guard is dropped.
    pub fn enter(self: &Arc<Self>) -> PendingReport {
        self.pending.fetch_add(1, Ordering::Relaxed);
        metrics::reports_pending(1.0);
        PendingReport(self.clone())
    }
}

/// A run's place in the [`ReportBacklog`]; leaves it when dropped (also
/// when the run's task is cancelled).
#[derive(Debug)]
pub struct PendingReport(Arc<ReportBacklog>);

impl Drop for PendingReport {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::Relaxed);
        metrics::reports_pending(-1.0);
    }
}

/// Records calls in order (dry-run, render, tests).
#[derive(Clone, Default)]
pub struct RecordingReporter {
    /// Every call, in order.
    pub calls: Arc<Mutex<Vec<PortCall>>>,
}

impl RecordingReporter {
    /// Take the recorded calls.
    pub fn take(&self) -> Vec<PortCall> {
        self.calls
            .lock()
            .map(|mut c| std::mem::take(&mut *c))
            .unwrap_or_default()
    }
}

impl Reporter for RecordingReporter {
    async fn send(&self, call: &PortCall) -> Result<(), PortError> {
        if let Ok(mut c) = self.calls.lock() {
            c.push(call.clone());
        }
        Ok(())
    }
}

#[derive(Clone)]
struct Token {
    value: Arc<str>,
    refresh_at: Instant,
}

/// Counters of the client's own activity.
#[derive(Debug, Default)]
pub struct PortStats {
    /// Calls to `/v1/auth/access_token`.
    pub token_fetches: AtomicU64,
    /// Retried attempts.
    pub retries: AtomicU64,
}

/// Port API client: a token cached until shortly before it expires and
/// shared by all tasks, refreshed once on a 401; every call has a timeout and
/// retries transport errors, 429 and 5xx with backoff.
#[derive(Clone)]
pub struct PortClient {
    http: reqwest::Client,
    base: Arc<str>,
    /// `base` parsed once: each call only sets the path (parsing the whole
    /// URL, host and IDNA included, was a visible share of a call's CPU).
    base_url: Option<url::Url>,
    client_id: Arc<str>,
    secret: Secret,
    token: Arc<std::sync::RwLock<Option<Token>>>,
    refresh: Arc<AsyncMutex<()>>,
    backoff: Backoff,
    /// Activity counters.
    pub stats: Arc<PortStats>,
}

/// What one HTTP exchange with Port gave.
enum Exchange {
    Ok(Value),
    Unauthorized,
}

impl PortClient {
    /// Build a client for `base` (no trailing `/`).
    pub fn new(
        base: &str,
        client_id: &str,
        secret: Secret,
        opts: &ClientOptions,
        max_attempts: u32,
    ) -> Result<Self, ClientError> {
        Ok(PortClient {
            http: build_client(opts)?,
            base: base.trim_end_matches('/').into(),
            base_url: url::Url::parse(base.trim_end_matches('/'))
                .ok()
                .filter(|u| !u.cannot_be_a_base() && u.query().is_none()),
            client_id: client_id.into(),
            secret,
            token: Arc::default(),
            refresh: Arc::default(),
            backoff: Backoff {
                max_attempts,
                max_elapsed: Duration::from_secs(120),
                initial: Duration::from_millis(200),
                max: Duration::from_secs(10),
            },
            stats: Arc::default(),
        })
    }

    /// Override the retry limits (tests use short ones).
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    fn cached_token(&self) -> Option<Arc<str>> {
        let guard = self.token.read().ok()?;
        guard
            .as_ref()
            .filter(|t| Instant::now() < t.refresh_at)
            .map(|t| t.value.clone())
    }

    /// A valid token, fetched at most once at a time.
    async fn token(&self) -> Result<Arc<str>, PortError> {
        if let Some(t) = self.cached_token() {
            return Ok(t);
        }
        let _guard = self.refresh.lock().await;
        if let Some(t) = self.cached_token() {
            return Ok(t);
        }
        let body = json!({"clientId": &*self.client_id, "clientSecret": self.secret.expose()});
        let answer = self
            .exchange("POST", "/v1/auth/access_token", Some(&body), None)
            .await;
        metrics::port_call("token", matches!(answer, Ok(Exchange::Ok(_))));
        let answer = answer?;
        self.stats.token_fetches.fetch_add(1, Ordering::Relaxed);
        let Exchange::Ok(answer) = answer else {
            return Err(PortError {
                call: "POST /v1/auth/access_token".into(),
                message: "401 Unauthorized: check PORT_CLIENT_ID and PORT_CLIENT_SECRET".into(),
                permanent: false,
            });
        };
        let value: Arc<str> = answer
            .get("accessToken")
            .and_then(Value::as_str)
            .ok_or_else(|| PortError {
                call: "POST /v1/auth/access_token".into(),
                message: "answer has no accessToken".into(),
                permanent: false,
            })?
            .into();
        let refresh_at = refresh_time(Instant::now(), answer.get("expiresIn").and_then(Value::as_f64));
        if let Ok(mut slot) = self.token.write() {
            *slot = Some(Token {
                value: value.clone(),
                refresh_at,
            });
        }
        Ok(value)
    }

    /// The absolute URL of `path` (which starts with `/` and has no query).
    fn url_for(&self, path: &str) -> Result<url::Url, PortError> {
        let Some(base) = &self.base_url else {
            return Err(PortError {
                call: path.to_string(),
                message: format!("PORT_API_BASE_URL '{}' is not a usable base URL", self.base),
                permanent: false,
            });
        };
        let mut url = base.clone();
        let prefix = base.path().trim_end_matches('/');
        url.set_path(&format!("{prefix}{path}"));
        Ok(url)
    }

    fn forget_token(&self, used: &str) {
        if let Ok(mut slot) = self.token.write() {
            if slot.as_ref().is_some_and(|t| &*t.value == used) {
                *slot = None;
            }
        }
    }

    /// One call with retries; a 401 is returned as `Unauthorized`.
    async fn exchange(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        token: Option<&str>,
    ) -> Result<Exchange, PortError> {
        let call = format!("{method} {path}");
        let url = self.url_for(path)?;
        let payload = body.map(Value::to_string);
        let attempt = || async {
            let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::POST);
            let mut req = self.http.request(m, url.clone());
            if let Some(payload) = &payload {
                req = req
                    .header("Content-Type", "application/json")
                    .body(payload.clone());
            }
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            if path.contains("claim-pending") {
                req = req.header("x-port-reserved-usage", "true");
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    let message = crate::http::describe_error(&e);
                    return Err(Attempt::Retryable {
                        last: Err(PortError {
                            call: call.clone(),
                            message,
                            permanent: false,
                        }),
                        retry_after: None,
                    });
                }
            };
            let status = resp.status();
            let retry_after = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after);
            let text = resp.text().await.unwrap_or_default();
            if status.is_success() {
                return Ok(Exchange::Ok(serde_json::from_str(&text).unwrap_or(Value::Null)));
            }
            if status.as_u16() == 401 {
                return Ok(Exchange::Unauthorized);
            }
            let snippet: String = text.chars().take(300).collect();
            if status.as_u16() == 429 {
                metrics::port_rate_limited();
            }
            let retryable = matches!(status.as_u16(), 408 | 429) || status.is_server_error();
            let error = PortError {
                call: call.clone(),
                message: format!("status {}: {}", status.as_u16(), snippet),
                permanent: !retryable,
            };
            if retryable {
                Err(Attempt::Retryable {
                    last: Err(error),
                    retry_after,
                })
            } else {
                Err(Attempt::Final(error))
            }
        };
        with_retries(self.backoff, attempt, |_, delay| {
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
            metrics::retry("port");
            tracing::debug!(call = %format!("{method} {path}"), delay_ms = delay.as_millis() as u64, "retrying Port API call");
        })
        .await
    }

    /// An authenticated call: refresh the token once on a 401.
    pub async fn request(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, PortError> {
        let result = self.request_inner(method, path, body).await;
        metrics::port_call(endpoint_kind(path), result.is_ok());
        result
    }

    async fn request_inner(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, PortError> {
        let refreshed = AtomicU32::new(0);
        loop {
            let token = self.token().await?;
            match self.exchange(method, path, body, Some(&token)).await? {
                Exchange::Ok(v) => return Ok(v),
                Exchange::Unauthorized if refreshed.fetch_add(1, Ordering::Relaxed) == 0 => {
                    self.forget_token(&token);
                }
                Exchange::Unauthorized => {
                    return Err(PortError {
                        call: format!("{method} {path}"),
                        message: "401 Unauthorized after a token refresh".into(),
                        permanent: false,
                    })
                }
            }
        }
    }
}

impl Reporter for PortClient {
    async fn send(&self, call: &PortCall) -> Result<(), PortError> {
        if !is_usable_run_id(call.run_id()) {
            return Err(PortError {
                call: format!("{} {}", call.method(), call.path()),
                message: format!(
                    "run id {:?} cannot name a Port API path; the call is not sent",
                    call.run_id()
                ),
                permanent: true,
            });
        }
        self.request(call.method(), &call.path(), Some(&call.body()))
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_lifetimes_of_any_size_are_safe() {
        let now = Instant::now();
        let secs = |e: Option<f64>| refresh_time(now, e).duration_since(now).as_secs_f64();
        assert_eq!(secs(None), 3540.0, "an hour, a minute early");
        assert_eq!(secs(Some(100.0)), 90.0, "90 % of a short lifetime");
        assert_eq!(secs(Some(-5.0)), 0.0);
        assert_eq!(secs(Some(f64::NAN)), 0.0);
        assert_eq!(secs(Some(1e300)), 86_340.0, "capped at a day");
        assert_eq!(secs(Some(f64::INFINITY)), 86_340.0);
    }

    #[tokio::test]
    async fn a_run_id_that_would_change_the_path_is_never_sent() {
        let client = PortClient::new(
            "http://127.0.0.1:9",
            "id",
            Secret::new("s"),
            &ClientOptions {
                timeout: Duration::from_secs(1),
                verify_tls: true,
                ca_bundle: None,
                pool_idle_per_host: 1,
            },
            1,
        )
        .expect("a client");
        for id in ["", ".", ".."] {
            let call = PortCall::RunPatch {
                run_id: id.into(),
                body: json!({"status": "FAILURE"}),
            };
            let e = client.send(&call).await.expect_err("refused");
            assert!(e.permanent, "{id:?}");
            assert!(e.message.contains("cannot name a Port API path"), "{e}");
        }
        assert!(is_usable_run_id("r_1") && is_usable_run_id("r..1"));
    }

    #[test]
    fn endpoint_kinds_are_bounded_labels() {
        let cases = [
            ("/v1/auth/access_token", "token"),
            ("/v1/organization", "organization"),
            ("/v1/kafka-credentials", "kafka_credentials"),
            ("/v1/actions/runs/claim-pending", "claim_runs"),
            ("/v1/workflows/runs/claim-pending", "claim_node_runs"),
            ("/v1/actions/runs/ack", "ack_run"),
            ("/v1/workflows/runs/ack", "ack_node_run"),
            ("/v1/actions/runs/r_1/logs", "run_log"),
            ("/v1/actions/runs/r_1/response", "run_response"),
            ("/v1/actions/runs/r_1", "run_patch"),
            ("/v1/workflows/nodes/runs/wfnr_1/logs", "node_run_log"),
            ("/v1/workflows/nodes/runs/wfnr_1", "node_run_patch"),
            ("/v1/blueprints/x", "other"),
        ];
        for (path, kind) in cases {
            assert_eq!(endpoint_kind(path), kind, "{path}");
        }
        let listed: Vec<&str> = cases.iter().map(|(_, k)| *k).collect();
        assert_eq!(
            listed,
            ENDPOINT_KINDS.to_vec(),
            "ENDPOINT_KINDS lists every kind, once"
        );
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
}
