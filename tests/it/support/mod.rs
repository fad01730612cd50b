//! Test support: a fake Port API and a fake target, both real HTTP servers
//! on 127.0.0.1 that record every call and can be told to fail, plus helpers
//! to build signed messages and pipelines wired to them.
#![allow(dead_code)]

pub mod agent;
pub mod broker;
pub mod proxy;
pub mod tls;

use std::collections::HashSet;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use port_agent::json_canon::to_raw_string;
use port_agent::signature::sign;

pub const SECRET: &str = "s3cr3t-client-secret-0123456789abcdef";

/// One request a fake server received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query.
    pub uri: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The status the fake answered.
    pub status: u16,
    /// When it arrived (comparable across the fakes of one test).
    pub at: Instant,
}

impl Recorded {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn path(&self) -> &str {
        self.uri.split('?').next().unwrap_or("")
    }
}

fn record(method: &Method, uri: &Uri, headers: &HeaderMap, body: &Bytes, status: u16) -> Recorded {
    Recorded {
        method: method.to_string(),
        uri: uri.to_string(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect(),
        body: body.to_vec(),
        status,
        at: Instant::now(),
    }
}

async fn serve(router: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    addr
}

// ---------------------------------------------------------------- Port API

#[derive(Default)]
pub struct PortState {
    pub calls: Mutex<Vec<Recorded>>,
    /// Statuses to answer the next non-token calls with, in order.
    pub fail_next: Mutex<VecDeque<u16>>,
    pub tokens_issued: Mutex<u32>,
    pub token_lifetime: Mutex<u64>,
    /// Polling API: action runs (`{"id","payload"}`) and node runs
    /// (`{"identifier","config"}`) waiting to be claimed.
    pub claimable_runs: Mutex<VecDeque<Value>>,
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

#[derive(Clone)]
pub struct FakePort {
    pub addr: SocketAddr,
    pub state: Arc<PortState>,
}

async fn port_handler(
    State(state): State<Arc<PortState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let arrived = Instant::now();
    if uri.path() == "/v1/auth/access_token" {
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
        Some(auth) if auth == latest && !expired => status,
        _ => 401,
    };
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

impl FakePort {
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

    pub fn all_calls(&self) -> Vec<Recorded> {
        self.state.calls.lock().unwrap().clone()
    }

    pub fn token_calls(&self) -> u32 {
        *self.state.tokens_issued.lock().unwrap()
    }

    pub fn fail_next(&self, statuses: &[u16]) {
        self.state
            .fail_next
            .lock()
            .unwrap()
            .extend(statuses.iter().copied());
    }
}

// ------------------------------------------------------------------ target

#[derive(Clone)]
pub struct Answer {
    pub status: u16,
    pub body: String,
    pub delay: Duration,
    pub headers: Vec<(String, String)>,
}

#[derive(Default)]
pub struct TargetState {
    pub requests: Mutex<Vec<Recorded>>,
    /// Answers for the next requests, in order; then `default`.
    pub script: Mutex<VecDeque<Answer>>,
    pub default: Mutex<Option<Answer>>,
    /// Requests being answered now, and the most at once.
    pub in_flight: AtomicUsize,
    pub max_in_flight: AtomicUsize,
}

#[derive(Clone)]
pub struct FakeTarget {
    pub addr: SocketAddr,
    pub state: Arc<TargetState>,
}

async fn target_handler(
    State(state): State<Arc<TargetState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let answer = state
        .script
        .lock()
        .unwrap()
        .pop_front()
        .or_else(|| state.default.lock().unwrap().clone());
    let answer = answer.unwrap_or(Answer {
        status: 200,
        body: String::new(),
        delay: Duration::ZERO,
        headers: vec![],
    });
    // Recorded on arrival: a request the target holds still counts as received.
    state
        .requests
        .lock()
        .unwrap()
        .push(record(&method, &uri, &headers, &body, answer.status));
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.max_in_flight.fetch_max(now, Ordering::SeqCst);
    if !answer.delay.is_zero() {
        tokio::time::sleep(answer.delay).await;
    }
    state.in_flight.fetch_sub(1, Ordering::SeqCst);
    let mut resp = (StatusCode::from_u16(answer.status).unwrap(), answer.body.clone()).into_response();
    for (k, v) in &answer.headers {
        resp.headers_mut().insert(
            axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            axum::http::HeaderValue::from_str(v).unwrap(),
        );
    }
    resp
}

impl FakeTarget {
    pub async fn start() -> FakeTarget {
        let state = Arc::new(TargetState::default());
        let router = axum::Router::new()
            .fallback(target_handler)
            .with_state(state.clone());
        FakeTarget {
            addr: serve(router).await,
            state,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn answer(&self, status: u16, body: &str) {
        *self.state.default.lock().unwrap() = Some(Answer {
            status,
            body: body.into(),
            delay: Duration::ZERO,
            headers: vec![],
        });
    }

    pub fn answer_json(&self, status: u16, body: Value) {
        *self.state.default.lock().unwrap() = Some(Answer {
            status,
            body: body.to_string(),
            delay: Duration::ZERO,
            headers: vec![("content-type".into(), "application/json".into())],
        });
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Answer every request with `status` after `delay`.
    pub fn answer_after(&self, status: u16, delay: Duration) {
        *self.state.default.lock().unwrap() = Some(Answer {
            status,
            body: String::new(),
            delay,
            headers: vec![],
        });
    }

    /// The most requests the target was answering at once.
    pub fn max_concurrency(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }
}

/// A TCP port on 127.0.0.1 where nothing listens.
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// `GET http://{addr}{path}` with a plain HTTP/1.1 client; the status and
/// body (the agent's health server is plain HTTP on 127.0.0.1). `None` while
/// nothing listens there.
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

// ---------------------------------------------------------------- messages

/// `plaintext` encrypted as Port encrypts secret inputs, with [`SECRET`]'s
/// first 32 bytes (AES-256-GCM, 16-byte IV 00..0f, base64 of IV ‖ sealed).
pub fn encrypt(plaintext: &str) -> String {
    use aes_gcm::aead::consts::U16;
    use aes_gcm::aead::{Aead, KeyInit};
    use aes_gcm::aes::Aes256;
    use aes_gcm::{AesGcm, Nonce};
    use base64::Engine as _;
    let iv: [u8; 16] = core::array::from_fn(|i| i as u8);
    let cipher = AesGcm::<Aes256, U16>::new_from_slice(&SECRET.as_bytes()[..32]).unwrap();
    let sealed = cipher
        .encrypt(Nonce::<U16>::from_slice(&iv), plaintext.as_bytes())
        .unwrap();
    base64::engine::general_purpose::STANDARD.encode([iv.as_slice(), &sealed].concat())
}

/// An action-run message for `url`, unsigned.
pub fn action_run(run_id: &str, url: &str, method: &str, synchronized: bool) -> Value {
    json!({
        "action": "deploy_service",
        "resourceType": "run",
        "status": "TRIGGERED",
        "trigger": {"by": {"orgId": "org_1", "userId": "u_1"}, "origin": "UI", "at": "2026-11-01T12:00:00.000Z"},
        "context": {"entity": "svc-a", "blueprint": "microservice", "runId": run_id},
        "payload": {
            "entity": {"identifier": "svc-a", "properties": {"region": "eu-west-1"}},
            "action": {"invocationMethod": {"type": "WEBHOOK", "agent": true, "synchronized": synchronized,
                                            "method": method, "url": url}},
            "properties": {"version": "1.2.3"}
        },
        "headers": {}
    })
}

/// Sign `message` as Port does: signature headers added to `.headers`.
pub fn signed(mut message: Value, secret: &str, ts: u64) -> Value {
    if message.get("headers").is_none() {
        message["headers"] = json!({});
    }
    let sig = sign(secret, &ts.to_string(), &to_raw_string(&message));
    let headers = message["headers"].as_object_mut().expect("headers object");
    headers.insert("X-Port-Signature".into(), Value::String(sig));
    headers.insert("X-Port-Timestamp".into(), json!(ts));
    message
}
