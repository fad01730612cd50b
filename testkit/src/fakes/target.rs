//! The fake target: scripted answers (status, body, headers, delay), every
//! request recorded on arrival, the most requests in flight at once.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::{record, serve, Fake, Recorded};

/// How the target answers a request.
#[derive(Clone)]
pub struct Answer {
    /// Its status.
    pub status: u16,
    /// Its body.
    pub body: String,
    /// How long the target waits before answering.
    pub delay: Duration,
    /// Its headers.
    pub headers: Vec<(String, String)>,
}

/// What the fake target saw and how it is told to answer.
#[derive(Default)]
pub struct TargetState {
    /// Every request, recorded on arrival.
    pub requests: Mutex<Vec<Recorded>>,
    /// Answers for the next requests, in order; then `default`.
    pub script: Mutex<VecDeque<Answer>>,
    /// The answer once the script is used up (200, empty, when `None`).
    pub default: Mutex<Option<Answer>>,
    /// Requests being answered now.
    pub in_flight: AtomicUsize,
    /// The most requests answered at once.
    pub max_in_flight: AtomicUsize,
}

/// The fake target (any path, any method).
pub type FakeTarget = Fake<TargetState>;

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

impl Fake<TargetState> {
    /// Start it on a free port of 127.0.0.1.
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

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Answer every request with `status` and `body`.
    pub fn answer(&self, status: u16, body: &str) {
        *self.state.default.lock().unwrap() = Some(Answer {
            status,
            body: body.into(),
            delay: Duration::ZERO,
            headers: vec![],
        });
    }

    /// Answer every request with `status` and the JSON `body`.
    pub fn answer_json(&self, status: u16, body: Value) {
        *self.state.default.lock().unwrap() = Some(Answer {
            status,
            body: body.to_string(),
            delay: Duration::ZERO,
            headers: vec![("content-type".into(), "application/json".into())],
        });
    }

    /// Every request so far.
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
