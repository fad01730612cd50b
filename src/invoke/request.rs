//! The request on the wire: a mapped request with its query, content type
//! and signature headers ([`OutgoingRequest`]), and the check every invoker
//! makes before sending it ([`validate`]).

use serde_json::Value;

use crate::mapping::RequestSpec;
use crate::redact::Redactor;
use crate::signature::{self, SIGNATURE_HEADER, TIMESTAMP_HEADER};

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
    /// A known secret value is in the URL, a header or the body (set by the
    /// pipeline, which knows the run's secrets): a redirect to another host
    /// is then never followed, whatever `AGENT_TARGET_REDIRECTS` says.
    pub carries_secret: bool,
}

impl OutgoingRequest {
    /// Build from a mapped request: add the query, the content type and the
    /// signature headers (which override mapped headers of the same name).
    pub fn build(
        spec: &RequestSpec,
        secret: &str,
        timestamp: u64,
    ) -> Result<OutgoingRequest, InvalidRequest> {
        let mut url = url::Url::parse(&spec.url).map_err(|reason| InvalidRequest::Url {
            url: spec.url.clone(),
            reason,
        })?;
        // A fragment never goes on the wire; without it the URL shown by
        // render and dry-run is the one requested.
        url.set_fragment(None);
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
            carries_secret: false,
        })
    }
}

/// Methods never sent, as if they were not valid: `CONNECT` asks for a
/// tunnel (hyper would send `CONNECT host:port` with the path dropped, not
/// the request shown), and `TRACE` makes the target echo the request, its
/// credentials included, as its answer (and RFC 9110 forbids its body).
pub const REFUSED_METHODS: [&str; 2] = ["CONNECT", "TRACE"];

/// Check a request as the HTTP client would before sending it: the method
/// is a valid token and not one of [`REFUSED_METHODS`], the URL parses and is `http`/`https`, and every header
/// name and value is valid HTTP. [`HttpInvoker`] and [`RecordingInvoker`]
/// both call this, so dry-run reports exactly the failure `run` would. The
/// error never contains a header value (it may be a secret).
pub fn validate(request: &OutgoingRequest) -> Result<(reqwest::Method, url::Url), InvalidRequest> {
    let method = reqwest::Method::from_bytes(request.method.as_bytes())
        .ok()
        .filter(|m| !REFUSED_METHODS.iter().any(|r| r.eq_ignore_ascii_case(m.as_str())))
        .ok_or_else(|| InvalidRequest::Method(request.method.clone()))?;
    let url = url::Url::parse(&request.url).map_err(|reason| InvalidRequest::Url {
        url: request.url.clone(),
        reason,
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(InvalidRequest::Scheme {
            url: request.url.clone(),
            scheme: url.scheme().to_string(),
        });
    }
    for (name, value) in &request.headers {
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(InvalidRequest::HeaderName(name.escape_debug().to_string()));
        }
        if reqwest::header::HeaderValue::from_str(value).is_err() {
            return Err(InvalidRequest::HeaderValue(name.clone()));
        }
    }
    Ok((method, url))
}

/// A request the HTTP client would not send. Never holds a header value
/// (it may be a secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRequest {
    /// The method is not a token, or is one of [`REFUSED_METHODS`].
    #[error("invalid HTTP method '{0}'")]
    Method(String),
    /// The URL does not parse.
    #[error("invalid URL '{url}': {reason}")]
    Url {
        /// The URL as built.
        url: String,
        /// The URL parser's words.
        reason: url::ParseError,
    },
    /// The URL is not `http` or `https`.
    #[error("invalid URL '{url}': the scheme must be http or https, not {scheme}")]
    Scheme {
        /// The URL as built.
        url: String,
        /// Its scheme.
        scheme: String,
    },
    /// A header name that is not a token (escaped for display).
    #[error("invalid header name '{0}': names are letters, digits and !#$%&'*+-.^_`|~ only")]
    HeaderName(String),
    /// A header value with a line break or another control character.
    #[error(
        "invalid value for header '{0}': it contains a line break or another control character, \
         which HTTP does not allow (fix the mapping's headers)"
    )]
    HeaderValue(String),
}

/// Header naming the run a target request is for.
pub const RUN_ID_HEADER: &str = "X-Port-Run-Id";
/// Header a target can de-duplicate on.
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

impl OutgoingRequest {
    /// Set [`OutgoingRequest::carries_secret`]: does a secret `redactor`
    /// knows appear, in any form, in the URL, a header or the body?
    pub fn note_secrets(&mut self, redactor: &Redactor) {
        self.carries_secret = redactor.finds(&self.url)
            || redactor.finds(&self.body)
            || self
                .headers
                .iter()
                .any(|(k, v)| redactor.finds(k) || redactor.finds(v));
    }

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
        let e = validate(&r).unwrap_err().to_string();
        assert_eq!(
            e,
            "invalid value for header 'X-Bad': it contains a line break or another control character, \
             which HTTP does not allow (fix the mapping's headers)"
        );
        r.headers.pop();
        r.headers.push(("Bad Name".into(), "v".into()));
        assert!(validate(&r)
            .unwrap_err()
            .to_string()
            .starts_with("invalid header name 'Bad Name'"));
        r.headers.pop();
        r.url = "ftp://h/x".into();
        assert_eq!(
            validate(&r).unwrap_err().to_string(),
            "invalid URL 'ftp://h/x': the scheme must be http or https, not ftp"
        );
        r.url = "http://h/x".into();
        r.method = "GE T".into();
        assert_eq!(
            validate(&r).unwrap_err().to_string(),
            "invalid HTTP method 'GE T'"
        );
    }
}
