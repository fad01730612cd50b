//! HTTP, built one way for targets and for Port: the one client builder
//! (rustls with the `ring` provider, the trusted roots of [`crate::tls`],
//! the proxies of [`crate::proxy`]; reqwest's own reading of the
//! environment is off), the description of a failed request, and the response
//! type the pipeline and the mappings see.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::proxy::{percent_decoded, Proxies};
use crate::tls::{trusted_pem, CaBundleError};

/// A client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The CA bundle cannot be read or parsed.
    #[error(transparent)]
    CaBundle(#[from] CaBundleError),
    /// reqwest refused the configuration.
    #[error("cannot build the HTTP client: {0}")]
    Build(String),
}

/// How to build a client.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Timeout of one request, connect included.
    pub timeout: Duration,
    /// Verify server certificates.
    pub verify_tls: bool,
    /// Extra trusted CA certificates (PEM file).
    pub ca_bundle: Option<String>,
    /// Idle connections kept per host.
    pub pool_idle_per_host: usize,
    /// `HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY` and `NO_PROXY`.
    pub proxies: Proxies,
}

/// Build a client.
pub fn build_client(opts: &ClientOptions) -> Result<reqwest::Client, ClientError> {
    // Installing twice is harmless; the first provider stays.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("port-agent/", env!("CARGO_PKG_VERSION")))
        .timeout(opts.timeout)
        .connect_timeout(opts.timeout.min(Duration::from_secs(10)))
        .pool_max_idle_per_host(opts.pool_idle_per_host)
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
        // Never followed by reqwest: Port's API gets no redirect (a 3xx is
        // an error, and the client secret is never posted again elsewhere);
        // target redirects are followed by the invoker, by its policy.
        .redirect(reqwest::redirect::Policy::none())
        // The agent reads the proxy settings itself (`crate::proxy`).
        .no_proxy();
    for (scheme, proxy) in [("http", &opts.proxies.http), ("https", &opts.proxies.https)] {
        let Some(proxy_url) = proxy.clone() else {
            continue;
        };
        let (user, password) = (
            proxy_url.username().to_string(),
            proxy_url.password().map(str::to_string),
        );
        let proxies = opts.proxies.clone();
        let mut p = reqwest::Proxy::custom(move |url| {
            (url.scheme() == scheme).then(|| proxies.for_url(url)).flatten()
        });
        if let Some(password) = password {
            p = p.basic_auth(&percent_decoded(&user), &percent_decoded(&password));
        }
        builder = builder.proxy(p);
    }
    if !opts.verify_tls {
        builder = builder.danger_accept_invalid_certs(true);
    }
    if let Some(path) = &opts.ca_bundle {
        let err = |reason: String| CaBundleError {
            path: path.clone(),
            reason,
        };
        let pem = trusted_pem(path)?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| err(e.to_string()))?;
        builder = builder.tls_certs_only(certs);
    }
    builder.build().map_err(|e| ClientError::Build(e.to_string()))
}

/// What the target answered, as the report context sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ResponseContext {
    /// HTTP status.
    pub status: u16,
    /// Response headers (lower-case names).
    pub headers: Vec<(String, String)>,
    /// Body text.
    pub text: String,
}

impl ResponseContext {
    /// The body parsed as JSON, if it is JSON.
    pub fn json(&self) -> Option<Value> {
        if self.text.trim().is_empty() {
            return None;
        }
        serde_json::from_str(&self.text).ok()
    }

    /// The first header of that name (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// 2xx?
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// `{"statusCode","headers","text","json"}`.
    pub fn to_context(&self) -> Value {
        let mut m = Map::new();
        m.insert("statusCode".into(), Value::from(self.status));
        let headers: Map<String, Value> = self
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        m.insert("headers".into(), Value::Object(headers));
        m.insert("text".into(), Value::String(self.text.clone()));
        m.insert("json".into(), self.json().unwrap_or(Value::Null));
        Value::Object(m)
    }
}

/// A short, specific description of a reqwest error, with its causes.
pub fn describe_error(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_request() {
        "request failed"
    } else if e.is_body() || e.is_decode() {
        "body error"
    } else {
        "error"
    };
    let mut chain = Vec::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        chain.push(s.to_string());
        source = s.source();
    }
    chain.dedup();
    let url = e
        .url()
        .map(|u| format!(" ({})", strip_credentials(u)))
        .unwrap_or_default();
    if chain.is_empty() {
        format!("{kind}{url}")
    } else {
        format!("{kind}{url}: {}", chain.join(": "))
    }
}

fn strip_credentials(u: &url::Url) -> String {
    let mut u = u.clone();
    let _ = u.set_password(None);
    let _ = u.set_username("");
    u.set_query(None);
    u.to_string()
}

/// Read at most `max` bytes of the body; `true` when more was there.
pub async fn read_bounded(
    resp: &mut reqwest::Response,
    max: usize,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
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
pub fn utf8_prefix(bytes: &[u8], truncated: bool) -> String {
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
