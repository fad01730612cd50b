//! The Invoker: sends the built, signed request to the organisation's target.
//!
//! [`HttpInvoker`] is the real one (reqwest, retries per SPEC §8);
//! [`RecordingInvoker`] records requests and answers with an assumed response
//! (dry-run, render, tests). The pipeline only sees the [`Invoker`] trait.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::guard::{host_port, same_host, AllowList, RedirectPolicy, MAX_REDIRECTS};
use crate::http::{build_client, describe_error, ClientError, ClientOptions, ResponseContext};
use crate::mapping::RequestSpec;
use crate::retry::{parse_retry_after, with_retries, Attempt, Backoff};
use crate::settings::RetryPolicy;
use crate::signature::{self, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use crate::telemetry::metrics;

/// A request ready to go on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingRequest {
    /// Upper-case method.
    pub method: String,
    /// URL including the mapped query.
    pub url: String,
    /// Headers in order; signature headers last.
    pub headers: Vec<(String, String)>,
    /// The exact bytes that were signed.
    pub body: String,
}

impl OutgoingRequest {
    /// Build from a mapped request: add the query, the content type and the
    /// signature headers (which override mapped headers of the same name).
    pub fn build(spec: &RequestSpec, secret: &str, timestamp: u64) -> Result<OutgoingRequest, String> {
        let mut url = url::Url::parse(&spec.url).map_err(|e| format!("invalid URL '{}': {e}", spec.url))?;
        let query = query_pairs(&spec.query);
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in &query {
                pairs.append_pair(k, v);
            }
        }
        let mut headers = header_pairs(&spec.headers);
        headers.retain(|(k, _)| {
            !k.eq_ignore_ascii_case(SIGNATURE_HEADER) && !k.eq_ignore_ascii_case(TIMESTAMP_HEADER)
        });
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        {
            headers.push(("Content-Type".into(), "application/json".into()));
        }
        let signed = signature::sign_outgoing(secret, timestamp, &spec.body);
        headers.push((TIMESTAMP_HEADER.into(), signed.timestamp));
        headers.push((SIGNATURE_HEADER.into(), signed.signature));
        Ok(OutgoingRequest {
            method: spec.method.clone(),
            url: url.to_string(),
            headers,
            body: signed.body,
        })
    }
}

/// Check a request as the HTTP client would before sending it: the method
/// is a valid token, the URL parses and is `http`/`https`, and every header
/// name and value is valid HTTP. [`HttpInvoker`] and [`RecordingInvoker`]
/// both call this, so dry-run reports exactly the failure `run` would. The
/// error never contains a header value (it may be a secret).
pub fn validate(request: &OutgoingRequest) -> Result<(reqwest::Method, url::Url), String> {
    let method = reqwest::Method::from_bytes(request.method.as_bytes())
        .map_err(|_| format!("invalid HTTP method '{}'", request.method))?;
    let url = url::Url::parse(&request.url).map_err(|e| format!("invalid URL '{}': {e}", request.url))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "invalid URL '{}': the scheme must be http or https, not {}",
            request.url,
            url.scheme()
        ));
    }
    for (name, value) in &request.headers {
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(format!(
                "invalid header name '{}': names are letters, digits and !#$%&'*+-.^_`|~ only",
                name.escape_debug()
            ));
        }
        if reqwest::header::HeaderValue::from_str(value).is_err() {
            return Err(format!(
                "invalid value for header '{name}': it contains a line break or another control character, \
                 which HTTP does not allow (fix the mapping's headers)"
            ));
        }
    }
    Ok((method, url))
}

/// Header naming the run a target request is for.
pub const RUN_ID_HEADER: &str = "X-Port-Run-Id";
/// Header a target can de-duplicate on.
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

impl OutgoingRequest {
    /// Add `X-Port-Run-Id: run_id` (runs only) and `Idempotency-Key: key`,
    /// unless the mapping set a header of that name (any case).
    pub fn add_idempotency_headers(&mut self, run_id: Option<&str>, key: &str) {
        for (name, value) in [(RUN_ID_HEADER, run_id), (IDEMPOTENCY_HEADER, Some(key))] {
            let Some(value) = value else { continue };
            if !self.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name)) {
                self.headers.push((name.to_string(), value.to_string()));
            }
        }
    }
}

/// Header values as the Python agent's `requests` would send them: strings
/// as they are, other scalars as JSON text, nulls dropped.
fn header_pairs(headers: &Value) -> Vec<(String, String)> {
    let Some(map) = headers.as_object() else {
        return Vec::new();
    };
    map.iter()
        .filter_map(|(k, v)| match v {
            Value::Null => None,
            Value::String(s) => Some((k.clone(), s.clone())),
            other => Some((k.clone(), other.to_string())),
        })
        .collect()
}

fn query_scalar(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        // `requests` formats Python booleans with str(): True / False.
        Value::Bool(true) => Some("True".into()),
        Value::Bool(false) => Some("False".into()),
        other => Some(other.to_string()),
    }
}

/// Query parameters as `requests` encodes `params=`: lists repeat the key,
/// nulls are dropped.
fn query_pairs(query: &Value) -> Vec<(String, String)> {
    let Some(map) = query.as_object() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (k, v) in map {
        match v {
            Value::Array(items) => out.extend(items.iter().filter_map(query_scalar).map(|s| (k.clone(), s))),
            other => out.extend(query_scalar(other).map(|s| (k.clone(), s))),
        }
    }
    out
}

/// The target's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetResponse {
    /// Status, headers and text.
    pub response: ResponseContext,
    /// Attempts made (1 = no retry).
    pub attempts: u32,
    /// The body was longer than `AGENT_MAX_RESPONSE_BYTES`: `response.text`
    /// holds only its beginning.
    pub truncated: bool,
}

/// The request could not be delivered (after retries).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InvokeError {
    /// What went wrong (connection refused, timeout, TLS, …).
    pub message: String,
    /// Attempts made.
    pub attempts: u32,
}

/// Sends requests to targets.
pub trait Invoker: Send + Sync {
    /// Send one request (with retries where the implementation retries).
    fn send(
        &self,
        request: &OutgoingRequest,
    ) -> impl Future<Output = Result<TargetResponse, InvokeError>> + Send;

    /// True when requests are only recorded, never sent (dry-run, render):
    /// the pipeline then does not log that the target answered.
    fn records_only(&self) -> bool {
        false
    }
}

/// Default of `AGENT_MAX_RESPONSE_BYTES`.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// The real invoker.
#[derive(Clone)]
pub struct HttpInvoker {
    client: reqwest::Client,
    policy: RetryPolicy,
    retries: Arc<AtomicU64>,
    redirects: RedirectPolicy,
    max_response_bytes: usize,
    allowed: Option<AllowList>,
}

/// One attempt's answer.
struct Received {
    response: ResponseContext,
    truncated: bool,
}

fn final_error(message: String) -> Attempt<Received, InvokeError> {
    Attempt::Final(InvokeError { message, attempts: 1 })
}

impl HttpInvoker {
    /// Build with the target settings; redirects to the same host are
    /// followed and at most [`DEFAULT_MAX_RESPONSE_BYTES`] of an answer are
    /// read until [`HttpInvoker::with_limits`] says otherwise.
    pub fn new(opts: &ClientOptions, policy: RetryPolicy) -> Result<Self, ClientError> {
        Ok(HttpInvoker {
            client: build_client(opts)?,
            policy,
            retries: Arc::new(AtomicU64::new(0)),
            redirects: RedirectPolicy::SameHost,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            allowed: None,
        })
    }

    /// Set the redirect policy, the response cap and the allow-list that
    /// redirects must also respect.
    pub fn with_limits(
        mut self,
        redirects: RedirectPolicy,
        max_response_bytes: usize,
        allowed: Option<AllowList>,
    ) -> Self {
        self.redirects = redirects;
        self.max_response_bytes = max_response_bytes;
        self.allowed = allowed;
        self
    }

    /// Retries made so far (all requests).
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// Where a redirect answer points, when the policy lets it be followed.
    fn redirect_target(&self, from: &url::Url, resp: &reqwest::Response) -> Option<url::Url> {
        if !matches!(resp.status().as_u16(), 301 | 302 | 303 | 307 | 308) {
            return None;
        }
        let location = resp.headers().get(reqwest::header::LOCATION)?.to_str().ok()?;
        let to = from.join(location).ok()?;
        let verdict = self
            .redirects
            .allows(from, &to)
            .and_then(|()| match &self.allowed {
                Some(list) if !list.allows(&to) => Err(format!(
                    "redirect to {} is not followed: not allowed by AGENT_ALLOWED_TARGETS",
                    host_port(&to)
                )),
                _ => Ok(()),
            });
        match verdict {
            Ok(()) => Some(to),
            Err(why) => {
                tracing::info!(status = resp.status().as_u16(), reason = %why, "the target's redirect is its answer");
                None
            }
        }
    }

    async fn attempt(&self, request: &OutgoingRequest) -> Result<Received, Attempt<Received, InvokeError>> {
        let (mut method, mut url) = validate(request).map_err(final_error)?;
        let mut headers = request.headers.clone();
        let mut body = Some(request.body.clone());
        let mut hops = 0;
        let resp = loop {
            let mut builder = self.client.request(method.clone(), url.clone());
            for (k, v) in &headers {
                builder = builder.header(k.as_str(), v.as_str());
            }
            if let Some(b) = &body {
                builder = builder.body(b.clone());
            }
            let started = std::time::Instant::now();
            let resp = match builder.send().await {
                Ok(resp) => resp,
                Err(e) => {
                    metrics::target_request(method.as_str(), None, started.elapsed());
                    let error = InvokeError {
                        message: describe_error(&e),
                        attempts: 1,
                    };
                    // Retry only when the request cannot have reached the target.
                    return Err(if e.is_connect() {
                        Attempt::Retryable {
                            last: Err(error),
                            retry_after: None,
                        }
                    } else {
                        Attempt::Final(error)
                    });
                }
            };
            let next = (hops < MAX_REDIRECTS)
                .then(|| self.redirect_target(&url, &resp))
                .flatten();
            let Some(next) = next else {
                break (resp, started);
            };
            metrics::target_request(method.as_str(), Some(resp.status().as_u16()), started.elapsed());
            let status = resp.status().as_u16();
            drop(resp);
            // 307/308 keep the method and body; the others become a GET
            // without a body (what browsers and `requests` do).
            if !matches!(status, 307 | 308) && method != reqwest::Method::HEAD {
                method = reqwest::Method::GET;
                body = None;
                headers.retain(|(k, _)| !k.eq_ignore_ascii_case("content-type"));
            }
            if !same_host(&url, &next) {
                headers.retain(|(k, _)| !crate::redact::sensitive_name(k));
            }
            tracing::debug!(status, to = %host_port(&next), "following the target's redirect");
            url = next;
            hops += 1;
        };
        let (mut resp, started) = resp;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let (bytes, truncated) = match read_bounded(&mut resp, self.max_response_bytes).await {
            Ok(read) => read,
            Err(e) => {
                metrics::target_request(method.as_str(), Some(status), started.elapsed());
                return Err(final_error(format!(
                    "reading the response failed: {}",
                    describe_error(&e)
                )));
            }
        };
        // Stop the transfer now: the rest of an over-long body is not wanted.
        drop(resp);
        metrics::target_request(method.as_str(), Some(status), started.elapsed());
        let received = Received {
            response: ResponseContext {
                status,
                headers,
                text: utf8_prefix(&bytes, truncated),
            },
            truncated,
        };
        if self.policy.retry_statuses.contains(&status) {
            Err(Attempt::Retryable {
                last: Ok(received),
                retry_after,
            })
        } else {
            Ok(received)
        }
    }
}

/// Read at most `max` bytes of the body; `true` when more was there.
async fn read_bounded(resp: &mut reqwest::Response, max: usize) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut buf = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        let room = max.saturating_sub(buf.len());
        if chunk.len() > room {
            buf.extend_from_slice(chunk.get(..room).unwrap_or_default());
            return Ok((buf, true));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok((buf, false))
}

/// The body as text; a character cut in two by the cap is left out.
fn utf8_prefix(bytes: &[u8], truncated: bool) -> String {
    if truncated {
        if let Err(e) = std::str::from_utf8(bytes) {
            if e.error_len().is_none() {
                return String::from_utf8_lossy(bytes.get(..e.valid_up_to()).unwrap_or_default())
                    .into_owned();
            }
        }
    }
    String::from_utf8_lossy(bytes).into_owned()
}

impl Invoker for HttpInvoker {
    async fn send(&self, request: &OutgoingRequest) -> Result<TargetResponse, InvokeError> {
        let policy = Backoff {
            max_attempts: self.policy.max_attempts,
            max_elapsed: self.policy.max_elapsed,
            initial: self.policy.initial_backoff,
            max: self.policy.max_backoff,
        };
        let attempts = std::sync::atomic::AtomicU32::new(0);
        let result = with_retries(
            policy,
            || {
                attempts.fetch_add(1, Ordering::Relaxed);
                self.attempt(request)
            },
            |_, delay| {
                self.retries.fetch_add(1, Ordering::Relaxed);
                metrics::retry("target");
                tracing::debug!(delay_ms = delay.as_millis() as u64, "retrying the target request");
            },
        )
        .await;
        let attempts = attempts.load(Ordering::Relaxed);
        match result {
            Ok(r) => Ok(TargetResponse {
                response: r.response,
                attempts,
                truncated: r.truncated,
            }),
            Err(e) => Err(InvokeError { attempts, ..e }),
        }
    }
}

/// Records requests and answers each with the same assumed response.
#[derive(Clone)]
pub struct RecordingInvoker {
    /// Every request sent, in order.
    pub requests: Arc<Mutex<Vec<OutgoingRequest>>>,
    answer: ResponseContext,
}

impl RecordingInvoker {
    /// Answer every request with `status` and `body`.
    pub fn new(status: u16, body: impl Into<String>) -> Self {
        RecordingInvoker {
            requests: Arc::default(),
            answer: ResponseContext {
                status,
                headers: Vec::new(),
                text: body.into(),
            },
        }
    }

    /// Take the recorded requests.
    pub fn take(&self) -> Vec<OutgoingRequest> {
        self.requests
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default()
    }
}

impl Invoker for RecordingInvoker {
    fn records_only(&self) -> bool {
        true
    }

    async fn send(&self, request: &OutgoingRequest) -> Result<TargetResponse, InvokeError> {
        // What the HTTP invoker would refuse is refused here too, unrecorded.
        validate(request).map_err(|message| InvokeError { message, attempts: 1 })?;
        if let Ok(mut r) = self.requests.lock() {
            r.push(request.clone());
        }
        Ok(TargetResponse {
            response: self.answer.clone(),
            attempts: 1,
            truncated: false,
        })
    }
}

/// Timeout used when none is configured.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(headers: Value, query: Value) -> RequestSpec {
        RequestSpec {
            method: "POST".into(),
            url: "http://t.local/p?x=1".into(),
            body: json!({"m": "é"}),
            headers,
            query,
        }
    }

    #[test]
    fn signature_headers_come_last_and_override_mapped_ones() {
        let s = spec(
            json!({"X-Port-Signature": "forged", "x-port-timestamp": "1", "A": "b", "N": 5, "Z": null}),
            json!({}),
        );
        let r = OutgoingRequest::build(&s, "secret", 1700000000).unwrap();
        let names: Vec<_> = r.headers.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            ["A", "N", "Content-Type", "X-Port-Timestamp", "X-Port-Signature"]
        );
        assert_eq!(r.headers[1].1, "5");
        assert_eq!(r.body, r#"{"m":"\u00e9"}"#);
        assert_eq!(r.headers[4].1, signature::sign("secret", "1700000000", &r.body));
    }

    #[test]
    fn mapped_content_type_is_kept() {
        let r =
            OutgoingRequest::build(&spec(json!({"content-type": "text/plain"}), json!({})), "s", 1).unwrap();
        assert_eq!(
            r.headers
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case("content-type"))
                .count(),
            1
        );
        assert_eq!(r.headers[0].1, "text/plain");
    }

    #[test]
    fn query_is_encoded_like_requests() {
        let r = OutgoingRequest::build(
            &spec(
                json!({}),
                json!({"a": "x y", "b": [1, "two"], "c": true, "d": null, "e": 2.5}),
            ),
            "s",
            1,
        )
        .unwrap();
        assert_eq!(r.url, "http://t.local/p?x=1&a=x+y&b=1&b=two&c=True&e=2.5");
    }

    #[test]
    fn validation_names_the_problem_without_the_value() {
        let mut r = OutgoingRequest::build(&spec(json!({"X-A": "ok"}), json!({})), "s", 1).unwrap();
        assert!(validate(&r).is_ok());
        r.headers.push(("X-Bad".into(), "tok\r\nInjected: yes".into()));
        let e = validate(&r).unwrap_err();
        assert_eq!(
            e,
            "invalid value for header 'X-Bad': it contains a line break or another control character, \
             which HTTP does not allow (fix the mapping's headers)"
        );
        r.headers.pop();
        r.headers.push(("Bad Name".into(), "v".into()));
        assert!(validate(&r)
            .unwrap_err()
            .starts_with("invalid header name 'Bad Name'"));
        r.headers.pop();
        r.url = "ftp://h/x".into();
        assert_eq!(
            validate(&r).unwrap_err(),
            "invalid URL 'ftp://h/x': the scheme must be http or https, not ftp"
        );
        r.url = "http://h/x".into();
        r.method = "GE T".into();
        assert_eq!(validate(&r).unwrap_err(), "invalid HTTP method 'GE T'");
    }
}
