//! The Invoker: sends the built, signed request to the organisation's target.
//!
//! [`HttpInvoker`] is the real one (reqwest, retries per SPEC §8);
//! [`RecordingInvoker`] records requests and answers with an assumed response
//! (dry-run, render, tests). The pipeline only sees the [`Invoker`] trait.

mod request;

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use crate::guard::{host_port, same_host, AllowList, RedirectPolicy, RedirectRefused, MAX_REDIRECTS};
use crate::http::{
    build_client, describe_error, read_bounded, utf8_prefix, ClientError, ClientOptions, ResponseContext,
};
use crate::retry::{parse_retry_after, with_retries, Attempt, Policy};
use crate::telemetry::metrics;

pub use request::{validate, InvalidRequest, OutgoingRequest, IDEMPOTENCY_HEADER, RUN_ID_HEADER};

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
}

/// Default of `AGENT_MAX_RESPONSE_BYTES`.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// The real invoker.
#[derive(Clone)]
pub struct HttpInvoker {
    client: reqwest::Client,
    policy: Policy,
    redirects: RedirectPolicy,
    max_response_bytes: usize,
    allowed: Option<AllowList>,
}

/// The only headers a redirect to another host carries on (when the
/// request holds no known secret): the content type of a kept body and the
/// agent's run headers.
const CROSS_HOST_HEADERS: [&str; 3] = [
    "content-type",
    request::RUN_ID_HEADER,
    request::IDEMPOTENCY_HEADER,
];

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
    pub fn new(opts: &ClientOptions, policy: Policy) -> Result<Self, ClientError> {
        Ok(HttpInvoker {
            client: build_client(opts)?,
            policy,
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

    /// Where a redirect answer points, when the policy lets it be followed.
    /// A request that carries a known secret never follows a redirect to
    /// another host.
    fn redirect_target(
        &self,
        from: &url::Url,
        resp: &reqwest::Response,
        carries_secret: bool,
    ) -> Option<url::Url> {
        if !matches!(resp.status().as_u16(), 301 | 302 | 303 | 307 | 308) {
            return None;
        }
        let location = resp.headers().get(reqwest::header::LOCATION)?.to_str().ok()?;
        let to = from.join(location).ok()?;
        let verdict = self
            .redirects
            .allows(from, &to)
            .and_then(|()| {
                if carries_secret && !same_host(from, &to) {
                    Err(RedirectRefused::CarriesSecret(host_port(&to)))
                } else {
                    Ok(())
                }
            })
            .and_then(|()| match &self.allowed {
                Some(list) if !list.allows(&to) => Err(RedirectRefused::NotAllowed(host_port(&to))),
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

    /// One try: send, following the redirects the policy allows, then
    /// read the answer.
    async fn attempt(&self, request: &OutgoingRequest) -> Result<Received, Attempt<Received, InvokeError>> {
        let (method, url) = validate(request).map_err(|e| final_error(e.to_string()))?;
        let sent = self.send_following(request, method, url).await?;
        self.receive(sent).await
    }

    /// Send `request`; a redirect the policy allows is followed (at most
    /// [`MAX_REDIRECTS`] times) and the final answer returned.
    async fn send_following(
        &self,
        request: &OutgoingRequest,
        mut method: reqwest::Method,
        mut url: url::Url,
    ) -> Result<Sent, Attempt<Received, InvokeError>> {
        let mut headers = request.headers.clone();
        let mut body = Some(request.body.clone());
        let mut hops = 0;
        loop {
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
                    return Err(send_error(&e));
                }
            };
            let next = (hops < MAX_REDIRECTS)
                .then(|| self.redirect_target(&url, &resp, request.carries_secret))
                .flatten();
            let Some(next) = next else {
                return Ok(Sent {
                    resp,
                    started,
                    method,
                });
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
                // Another host gets none of the mapping's headers, nor the
                // signature: only what describes the body and the run.
                headers.retain(|(k, _)| CROSS_HOST_HEADERS.iter().any(|h| h.eq_ignore_ascii_case(k)));
            }
            tracing::debug!(status, to = %host_port(&next), "following the target's redirect");
            url = next;
            hops += 1;
        }
    }

    /// Read the final answer (at most `max_response_bytes` of its body);
    /// a status of the retry policy asks for another try.
    async fn receive(&self, sent: Sent) -> Result<Received, Attempt<Received, InvokeError>> {
        let Sent {
            mut resp,
            started,
            method,
        } = sent;
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
        if self.policy.statuses.contains(&status) {
            Err(Attempt::Retryable {
                last: Ok(received),
                retry_after,
            })
        } else {
            Ok(received)
        }
    }
}

/// A request that could not be sent: retried only when it cannot have
/// reached the target.
fn send_error(e: &reqwest::Error) -> Attempt<Received, InvokeError> {
    let error = InvokeError {
        message: describe_error(e),
        attempts: 1,
    };
    if e.is_connect() {
        Attempt::Retryable {
            last: Err(error),
            retry_after: None,
        }
    } else {
        Attempt::Final(error)
    }
}

/// The final answer of [`HttpInvoker::send_following`], not read yet.
struct Sent {
    resp: reqwest::Response,
    started: std::time::Instant,
    method: reqwest::Method,
}

impl Invoker for HttpInvoker {
    async fn send(&self, request: &OutgoingRequest) -> Result<TargetResponse, InvokeError> {
        let attempts = std::sync::atomic::AtomicU32::new(0);
        let result = with_retries(
            self.policy.backoff,
            || {
                attempts.fetch_add(1, Ordering::Relaxed);
                self.attempt(request)
            },
            |_, delay| {
                metrics::retry(metrics::RetryOf::Target);
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
    async fn send(&self, request: &OutgoingRequest) -> Result<TargetResponse, InvokeError> {
        // What the HTTP invoker would refuse is refused here too, unrecorded.
        validate(request).map_err(|e| InvokeError {
            message: e.to_string(),
            attempts: 1,
        })?;
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
