//! The Port API client: a token cached until shortly before it expires and
//! shared by all tasks, refreshed once on a 401; every call has a timeout and
//! retries transport errors, 408, 429 and 5xx with backoff.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::Mutex as AsyncMutex;

use super::auth::{AuthStatus, Refusal};
use super::ratelimit::{Observed, RateBudget};
use super::{is_usable_run_id, Endpoint, PortCall, PortError, Reporter, Route};
use crate::http::{build_client, describe_error, ClientError, ClientOptions};
use crate::retry::{parse_retry_after, with_retries, Attempt, Backoff};
use crate::secret::Secret;
use crate::telemetry::metrics;

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

#[derive(Clone)]
struct Token {
    value: Arc<str>,
    refresh_at: Instant,
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
    /// Port's rate limit, shared by every clone.
    budget: Arc<RateBudget>,
    /// Whether Port refuses the credentials, shared by every clone.
    auth: Arc<AuthStatus>,
}

/// What one HTTP exchange with Port gave: the body of a success, as text.
enum Exchange {
    Ok(String),
    /// 401 (or 403 on the token call), with the answer's status and body.
    Unauthorized(u16, String),
}

/// The largest answer read from Port's API. A claim of 100 runs of a few
/// KiB each is well under a MiB; more is a fault, not a batch.
const MAX_ANSWER_BYTES: usize = 32 << 20;
/// The most of an error answer a [`PortError`] keeps (for the run-log line
/// that quotes Port's refusal).
const MAX_QUOTED_ANSWER_CHARS: usize = 64 << 10;

/// A success's body as JSON where the caller only reads a field or two
/// (`ackedCount`, `accessToken`): an empty body, or one that does not
/// parse, reads as null (logged at debug). Claims parse strictly
/// ([`super::api`]).
fn lenient_json(call: &str, text: &str) -> Value {
    if text.trim().is_empty() {
        return Value::Null;
    }
    serde_json::from_str(text).unwrap_or_else(|e| {
        tracing::debug!(call, bytes = text.len(), error = %e, "Port's answer is not JSON; read as null");
        Value::Null
    })
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
            budget: Arc::default(),
            auth: Arc::default(),
            backoff: Backoff {
                max_attempts,
                max_elapsed: Duration::from_secs(120),
                initial: Duration::from_millis(200),
                max: Duration::from_secs(10),
            },
        })
    }

    /// Fetch a token now: at start-up, so that credentials Port refuses stop
    /// the agent before anything else. `Err(Ok(refusal))` when Port refused
    /// them (401, or 403); `Err(Err(e))` for any other failure.
    pub async fn authenticate(&self) -> Result<(), Result<Refusal, PortError>> {
        match self.token().await {
            Ok(_) => Ok(()),
            Err(e) => Err(self.auth.refused().ok_or(e)),
        }
    }

    /// Whether Port refuses the credentials now (for `/readyz`).
    pub fn auth_status(&self) -> Arc<AuthStatus> {
        self.auth.clone()
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
        let answer = self.exchange(&Endpoint::Token.route(""), Some(&body), None).await;
        metrics::port_call(Endpoint::Token.label(), matches!(answer, Ok(Exchange::Ok(_))));
        let answer = match answer? {
            Exchange::Ok(answer) => answer,
            Exchange::Unauthorized(status, body) => {
                let refusal = Refusal::new(status, &body, &self.base, self.secret.expose());
                let message = format!(
                    "{}: Port refuses PORT_CLIENT_ID and PORT_CLIENT_SECRET at PORT_API_BASE_URL={}",
                    refusal.answer(),
                    self.base
                );
                self.auth.set_refused(refusal);
                return Err(PortError {
                    call: Endpoint::Token.route("").to_string(),
                    message,
                    permanent: false,
                    ..PortError::default()
                });
            }
        };
        let answer = lenient_json(&Endpoint::Token.route("").to_string(), &answer);
        let value: Arc<str> = answer
            .get("accessToken")
            .and_then(Value::as_str)
            .ok_or_else(|| PortError {
                call: Endpoint::Token.route("").to_string(),
                message: "answer has no accessToken".into(),
                permanent: false,
                ..PortError::default()
            })?
            .into();
        self.auth.set_accepted();
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
                ..PortError::default()
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
        route: &Route,
        body: Option<&Value>,
        token: Option<&str>,
    ) -> Result<Exchange, PortError> {
        let endpoint = route.endpoint();
        let call = route.to_string();
        let url = self.url_for(route.path())?;
        let payload = body.map(Value::to_string);
        let attempt = || async {
            let mut req = self.http.request(endpoint.http_method(), url.clone());
            if let Some(payload) = &payload {
                req = req
                    .header("Content-Type", "application/json")
                    .body(payload.clone());
            }
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            if endpoint.reserved_usage() {
                req = req.header("x-port-reserved-usage", "true");
            }
            self.budget.acquire().await;
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    let message = describe_error(&e);
                    return Err(Attempt::Retryable {
                        last: Err(PortError {
                            call: call.clone(),
                            message,
                            permanent: false,
                            ..PortError::default()
                        }),
                        retry_after: None,
                    });
                }
            };
            self.read_answer(resp, &call, endpoint).await
        };
        with_retries(self.backoff, attempt, |_, delay| {
            metrics::retry(metrics::RetryOf::Port);
            tracing::debug!(call = %route, delay_ms = delay.as_millis() as u64, "retrying Port API call");
        })
        .await
    }

    /// What one answer of Port means: a result, a 401, or an error worth
    /// retrying (after the rate limit's reset for a 429) or not.
    async fn read_answer(
        &self,
        mut resp: reqwest::Response,
        call: &str,
        endpoint: Endpoint,
    ) -> Result<Exchange, Attempt<Exchange, PortError>> {
        let status = resp.status();
        let rate = Observed::from_headers(resp.headers());
        if let Some(seen) = rate {
            self.budget.observe(seen);
        }
        let mut retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let (bytes, truncated) = crate::http::read_bounded(&mut resp, MAX_ANSWER_BYTES)
            .await
            .unwrap_or_default();
        let text = crate::http::utf8_prefix(&bytes, truncated);
        if status.is_success() {
            if truncated {
                return Err(Attempt::Final(PortError {
                    call: call.to_string(),
                    message: format!("the answer is larger than {MAX_ANSWER_BYTES} bytes; not read"),
                    permanent: false,
                    ..PortError::default()
                }));
            }
            return Ok(Exchange::Ok(text));
        }
        if status.as_u16() == 401 || (status.as_u16() == 403 && endpoint == Endpoint::Token) {
            return Ok(Exchange::Unauthorized(status.as_u16(), text));
        }
        let snippet: String = text.chars().take(300).collect();
        if status.as_u16() == 429 {
            metrics::port_rate_limited();
            // Wait for the reset Port named, not a blind backoff.
            let reset = retry_after.or(rate.map(|r| r.reset));
            retry_after = self.budget.exhausted(reset).or(retry_after);
        }
        let retryable = matches!(status.as_u16(), 408 | 429) || status.is_server_error();
        let error = PortError {
            call: call.to_string(),
            message: format!("status {}: {}", status.as_u16(), snippet),
            permanent: !retryable,
            status: Some(status.as_u16()),
            // Quoted in a run-log line: bounded, like the rest of the line.
            answer: text.chars().take(MAX_QUOTED_ANSWER_CHARS).collect(),
        };
        if retryable {
            Err(Attempt::Retryable {
                last: Err(error),
                retry_after,
            })
        } else {
            Err(Attempt::Final(error))
        }
    }

    /// An authenticated call along `route`: refresh the token once on a
    /// 401.
    pub(super) async fn call(&self, route: &Route, body: Option<&Value>) -> Result<Value, PortError> {
        let text = self.call_text(route, body).await?;
        Ok(lenient_json(&route.to_string(), &text))
    }

    /// [`Self::call`], with the body of Port's answer as it came.
    pub(super) async fn call_text(&self, route: &Route, body: Option<&Value>) -> Result<String, PortError> {
        let result = self.call_inner(route, body).await;
        metrics::port_call(route.endpoint().label(), result.is_ok());
        result
    }

    async fn call_inner(&self, route: &Route, body: Option<&Value>) -> Result<String, PortError> {
        let mut refreshed = false;
        loop {
            let token = self.token().await?;
            match self.exchange(route, body, Some(&token)).await? {
                Exchange::Ok(v) => return Ok(v),
                Exchange::Unauthorized(..) if !refreshed => {
                    refreshed = true;
                    self.forget_token(&token);
                }
                Exchange::Unauthorized(..) => {
                    return Err(PortError {
                        call: route.to_string(),
                        message: "401 Unauthorized after a token refresh".into(),
                        permanent: false,
                        ..PortError::default()
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
                call: call.route().to_string(),
                message: format!(
                    "run id {:?} cannot name a Port API path; the call is not sent",
                    call.run_id()
                ),
                permanent: true,
                ..PortError::default()
            });
        }
        self.call(&call.route(), Some(&call.body())).await.map(|_| ())
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
                proxies: Default::default(),
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
}
