//! The fake Port API: tokens, the polling API (claims and acks), scripted
//! failures, outages, held calls, expiring tokens.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::{record, serve, Fake, Recorded};

/// What the fake Port API saw and how it is told to answer.
#[derive(Default)]
pub struct PortState {
    /// Every call, in order of answer (token calls included).
    pub calls: Mutex<Vec<Recorded>>,
    /// Statuses to answer the next non-token calls with, in order.
    pub fail_next: Mutex<VecDeque<u16>>,
    /// Tokens issued so far (token `n` is `token-n`).
    pub tokens_issued: Mutex<u32>,
    /// `expiresIn` of the tokens, seconds.
    pub token_lifetime: Mutex<u64>,
    /// Polling API: action runs (`{"id","payload"}`) and node runs
    /// (`{"identifier","config"}`) waiting to be claimed.
    pub claimable_runs: Mutex<VecDeque<Value>>,
    /// Node runs waiting to be claimed.
    pub claimable_node_runs: Mutex<VecDeque<Value>>,
    /// Statuses for the next claim calls (either kind), then 200.
    pub claim_script: Mutex<VecDeque<u16>>,
    /// Every claim call fails with this status.
    pub claims_always_fail: Mutex<Option<u16>>,
    /// Run ids whose ack is refused (409: claimed elsewhere).
    pub ack_refused: Mutex<HashSet<String>>,
    /// An outage: every call but the token endpoint is answered 503.
    pub down: std::sync::atomic::AtomicBool,
    /// Refuse (422) a status PATCH for a run that already has an accepted
    /// final status, as Port does for a finished run.
    pub final_status_once: std::sync::atomic::AtomicBool,
    /// Fixed answers `(status, body)` by path, for calls that pass the token
    /// check (`/v1/kafka-credentials`, a refused `/v1/organization`).
    pub answers: Mutex<std::collections::HashMap<String, (u16, Value)>>,
    /// Run ids whose ack is answered 200 but not confirmed (`ackedCount` 0,
    /// `acked` false).
    pub ack_unconfirmed: Mutex<HashSet<String>>,
    /// `(path, delay)`: the next call to `path` is answered only after
    /// `delay` (each entry is used once).
    pub holds: Mutex<Vec<(String, Duration)>>,
    /// Calls that were held, recorded on arrival (a client that gives up
    /// closes the connection, and the held call never reaches `calls`).
    pub held: Mutex<Vec<Recorded>>,
    /// Refuse (401) a token older than the lifetime it was issued with, as
    /// a real token expires.
    pub tokens_expire: std::sync::atomic::AtomicBool,
    /// When each token was issued (token `n` is `token_issued_at[n-1]`).
    pub token_issued_at: Mutex<Vec<Instant>>,
    /// Port's rate limit, when set: every answer carries the
    /// `x-ratelimit-*` headers and a call over the limit is answered 429.
    pub rate_limit: Mutex<Option<RateWindow>>,
    /// Bodies for the next action-run claims (`claim-pending`), served as
    /// they are with status 200 (an answer cut short, not JSON); then the
    /// claims answer from `claimable_runs` again.
    pub raw_claim_answers: Mutex<VecDeque<String>>,
    /// Port refuses the credentials: the token call is answered with this
    /// `(status, body)`, and every token issued before is refused (401).
    pub credentials_refused: Mutex<Option<(u16, Value)>>,
}

/// A fixed-window rate limit like Port's: `limit` calls per `period`, the
/// first window starting with the first call.
#[derive(Debug, Clone)]
pub struct RateWindow {
    /// Calls allowed per period.
    pub limit: u64,
    /// The period.
    pub period: Duration,
    start: Option<Instant>,
    count: u64,
}

impl RateWindow {
    /// `limit` calls per `period`.
    pub fn new(limit: u64, period: Duration) -> RateWindow {
        RateWindow {
            limit,
            period,
            start: None,
            count: 0,
        }
    }

    /// Count a call arriving `now`: whether it is allowed, and the headers
    /// of its answer (the reset in whole seconds, rounded up).
    fn admit(&mut self, now: Instant) -> (bool, [(&'static str, String); 3]) {
        let start = *self.start.get_or_insert(now);
        let periods = (now - start).as_nanos() / self.period.as_nanos().max(1);
        let window = start + self.period * periods as u32;
        if Some(window) != self.start {
            self.start = Some(window);
            self.count = 0;
        }
        let allowed = self.count < self.limit;
        if allowed {
            self.count += 1;
        }
        let reset = (window + self.period - now).as_secs_f64().ceil() as u64;
        let headers = [
            ("x-ratelimit-limit", self.limit.to_string()),
            ("x-ratelimit-remaining", (self.limit - self.count).to_string()),
            ("x-ratelimit-reset", reset.to_string()),
        ];
        (allowed, headers)
    }
}

impl PortState {
    /// Count a call against the rate limit, when one is set.
    fn admit(&self) -> Option<(bool, [(&'static str, String); 3])> {
        let mut window = self.rate_limit.lock().unwrap();
        window.as_mut().map(|w| w.admit(Instant::now()))
    }
}

/// A PATCH of an action run's status to a final one.
fn is_final_status(method: &Method, path: &str, body: &[u8]) -> bool {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let status = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|b| b["status"].as_str().map(str::to_string));
    method == Method::PATCH
        && matches!(segments.as_slice(), ["v1", "actions", "runs", id] if *id != "ack")
        && matches!(status.as_deref(), Some("SUCCESS" | "FAILURE"))
}

/// The polling API's answer to a claim or an ack, or `None` for other paths.
fn polling_answer(state: &PortState, path: &str, body: &Value) -> Option<(u16, Value)> {
    let claim = |queue: &Mutex<VecDeque<Value>>, key: &str| {
        let forced = state
            .claims_always_fail
            .lock()
            .unwrap()
            .or_else(|| state.claim_script.lock().unwrap().pop_front());
        if let Some(status) = forced.filter(|s| *s >= 300) {
            return (status, json!({"ok": false}));
        }
        let limit = body["limit"].as_u64().unwrap_or(0) as usize;
        let mut q = queue.lock().unwrap();
        let n = limit.min(q.len());
        let taken: Vec<Value> = q.drain(..n).collect();
        (200, json!({ key: taken }))
    };
    let refused = |id: &str| state.ack_refused.lock().unwrap().contains(id);
    match path {
        "/v1/actions/runs/claim-pending" => Some(claim(&state.claimable_runs, "runs")),
        "/v1/workflows/runs/claim-pending" => Some(claim(&state.claimable_node_runs, "nodeRuns")),
        "/v1/actions/runs/ack" => {
            let ids: Vec<&str> = body["runIds"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if ids.iter().any(|id| refused(id)) {
                Some((409, json!({"ok": false, "error": "already acked"})))
            } else if ids
                .iter()
                .any(|id| state.ack_unconfirmed.lock().unwrap().contains(*id))
            {
                Some((200, json!({"ok": true, "ackedCount": 0})))
            } else {
                Some((200, json!({"ok": true, "ackedCount": ids.len()})))
            }
        }
        "/v1/workflows/runs/ack" => {
            let id = body["nodeRunIdentifier"].as_str().unwrap_or_default();
            if refused(id) {
                Some((409, json!({"ok": false, "error": "already acked"})))
            } else if state.ack_unconfirmed.lock().unwrap().contains(id) {
                Some((200, json!({"ok": true, "acked": false})))
            } else {
                Some((200, json!({"ok": true, "acked": true})))
            }
        }
        _ => state.answers.lock().unwrap().get(path).cloned(),
    }
}

/// The fake Port API: only the latest token is accepted; every call is
/// recorded in [`PortState::calls`].
pub type FakePort = Fake<PortState>;

/// The rate limit first (when set), then [`answer`]; the limit's headers go
/// on every answer.
async fn port_handler(
    State(state): State<Arc<PortState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let limited = state.admit();
    let mut response = match &limited {
        Some((false, _)) => {
            state
                .calls
                .lock()
                .unwrap()
                .push(record(&method, &uri, &headers, &body, 429));
            (StatusCode::TOO_MANY_REQUESTS, axum::Json(json!({"ok": false}))).into_response()
        }
        _ => answer(state, method, uri, headers, body).await,
    };
    for (name, value) in limited.into_iter().flat_map(|(_, h)| h) {
        response.headers_mut().insert(name, value.parse().unwrap());
    }
    response
}

async fn answer(
    state: Arc<PortState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let arrived = Instant::now();
    let refused = state.credentials_refused.lock().unwrap().clone();
    if uri.path() == "/v1/auth/access_token" {
        if let Some((status, answer)) = refused {
            state
                .calls
                .lock()
                .unwrap()
                .push(record(&method, &uri, &headers, &body, status));
            let code = StatusCode::from_u16(status).unwrap_or(StatusCode::UNAUTHORIZED);
            return (code, axum::Json(answer)).into_response();
        }
        let n = {
            let mut t = state.tokens_issued.lock().unwrap();
            *t += 1;
            state.token_issued_at.lock().unwrap().push(arrived);
            *t
        };
        let lifetime = *state.token_lifetime.lock().unwrap();
        state
            .calls
            .lock()
            .unwrap()
            .push(record(&method, &uri, &headers, &body, 200));
        let answer =
            json!({"accessToken": format!("token-{n}"), "expiresIn": lifetime, "tokenType": "Bearer"});
        return (StatusCode::OK, axum::Json(answer)).into_response();
    }
    let hold = {
        let mut holds = state.holds.lock().unwrap();
        let i = holds.iter().position(|(p, _)| p == uri.path());
        i.map(|i| holds.remove(i).1)
    };
    if let Some(delay) = hold {
        let mut call = record(&method, &uri, &headers, &body, 0);
        call.at = arrived;
        state.held.lock().unwrap().push(call);
        tokio::time::sleep(delay).await;
    }
    let forced = state.fail_next.lock().unwrap().pop_front();
    let status = forced.unwrap_or(200);
    let status = if state.down.load(Ordering::SeqCst) {
        503
    } else {
        status
    };
    let finished_before = || {
        state.calls.lock().unwrap().iter().any(|c| {
            c.status < 300 && c.uri == uri.to_string() && is_final_status(&method, c.path(), &c.body)
        })
    };
    let status = if status == 200
        && state.final_status_once.load(Ordering::SeqCst)
        && is_final_status(&method, uri.path(), &body)
        && finished_before()
    {
        422
    } else {
        status
    };
    // Only the latest token is valid, and (when tokens expire) only for
    // its lifetime.
    let issued = *state.tokens_issued.lock().unwrap();
    let latest = format!("Bearer token-{issued}");
    let expired = state.tokens_expire.load(Ordering::SeqCst)
        && state
            .token_issued_at
            .lock()
            .unwrap()
            .last()
            .is_some_and(|at| at.elapsed() >= Duration::from_secs(*state.token_lifetime.lock().unwrap()));
    let status = match headers.get("authorization").and_then(|v| v.to_str().ok()) {
        Some(auth) if auth == latest && !expired && refused.is_none() => status,
        _ => 401,
    };
    let raw = (status == 200 && uri.path() == "/v1/actions/runs/claim-pending")
        .then(|| state.raw_claim_answers.lock().unwrap().pop_front())
        .flatten();
    if let Some(raw) = raw {
        let mut call = record(&method, &uri, &headers, &body, 200);
        call.at = arrived;
        state.calls.lock().unwrap().push(call);
        return (StatusCode::OK, [("content-type", "application/json")], raw).into_response();
    }
    let (status, answer) = match status {
        200 => {
            let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            polling_answer(&state, uri.path(), &request).unwrap_or((200, json!({"ok": true})))
        }
        other => (other, json!({"ok": false})),
    };
    let mut call = record(&method, &uri, &headers, &body, status);
    call.at = arrived;
    state.calls.lock().unwrap().push(call);
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, axum::Json(answer)).into_response()
}

impl Fake<PortState> {
    /// Start it on a free port of 127.0.0.1 (tokens live an hour).
    pub async fn start() -> FakePort {
        let state = Arc::new(PortState::default());
        *state.token_lifetime.lock().unwrap() = 3600;
        let router = axum::Router::new()
            .fallback(port_handler)
            .with_state(state.clone());
        FakePort {
            addr: serve(router).await,
            state,
        }
    }

    /// `http://127.0.0.1:PORT`, the agent's `PORT_API_BASE_URL`.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Calls other than the token endpoint that were answered 2xx.
    pub fn accepted(&self) -> Vec<Recorded> {
        self.state
            .calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.path() != "/v1/auth/access_token" && c.status < 300)
            .cloned()
            .collect()
    }

    /// `METHOD path body` of each accepted call, in order.
    pub fn accepted_summary(&self) -> Vec<(String, String, Value)> {
        self.accepted()
            .iter()
            .map(|c| (c.method.clone(), c.path().to_string(), c.json()))
            .collect()
    }

    /// Every call, token calls and refused ones included.
    pub fn all_calls(&self) -> Vec<Recorded> {
        self.state.calls.lock().unwrap().clone()
    }

    /// How many tokens were issued.
    pub fn token_calls(&self) -> u32 {
        *self.state.tokens_issued.lock().unwrap()
    }

    /// Enforce a rate limit of `limit` calls per `period` from now on.
    pub fn rate_limit(&self, limit: u64, period: Duration) {
        *self.state.rate_limit.lock().unwrap() = Some(RateWindow::new(limit, period));
    }

    /// Refuse the credentials from now on, as Port does for a wrong client
    /// id or secret (or region): the token call answers `status` with
    /// `{"ok":false,"error":error,"message":…}`, and tokens issued before
    /// are refused.
    pub fn refuse_credentials(&self, status: u16, error: &str) {
        let body =
            json!({"ok": false, "error": error, "message": "The provided client id or secret is invalid"});
        *self.state.credentials_refused.lock().unwrap() = Some((status, body));
    }

    /// Answer the next non-token calls with `statuses`, in order.
    pub fn fail_next(&self, statuses: &[u16]) {
        self.state
            .fail_next
            .lock()
            .unwrap()
            .extend(statuses.iter().copied());
    }
}
