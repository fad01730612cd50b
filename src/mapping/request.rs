//! Build the request a mapping describes for one message: method, URL,
//! body, headers and query ([`RequestSpec`]), before signing.

use serde_json::{Map, Value};

use super::{jq, EvalCtx, Mapping, MappingError, Template, Warning};

/// The request a mapping builds, before signing.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestSpec {
    /// Upper-cased HTTP method.
    pub method: String,
    /// Target URL, without the mapped query.
    pub url: String,
    /// Body value (serialised and signed by the invoker).
    pub body: Value,
    /// Headers as mapped (an object, normally of strings).
    pub headers: Value,
    /// Query parameters as mapped (an object).
    pub query: Value,
}

impl RequestSpec {
    /// `{"method","url","body","headers","query"}` for the report context.
    pub fn to_context(&self) -> Value {
        let mut m = Map::new();
        m.insert("method".into(), Value::String(self.method.clone()));
        m.insert("url".into(), Value::String(self.url.clone()));
        m.insert("body".into(), self.body.clone());
        m.insert("headers".into(), self.headers.clone());
        m.insert("query".into(), self.query.clone());
        Value::Object(m)
    }
}

/// The invocation method's defaults a mapping overrides.
#[derive(Debug, Clone, Default)]
pub struct Defaults<'a> {
    /// `invocationMethod.method`.
    pub method: Option<&'a str>,
    /// `invocationMethod.url`.
    pub url: Option<&'a str>,
}

/// Why a request could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// No URL from the mapping nor the invocation method.
    #[error("the mapping and the invocation method give no URL")]
    NoUrl,
    /// The URL is not a valid absolute URL.
    #[error("the URL '{0}' is not a valid absolute http(s) URL")]
    BadUrl(String),
    /// The URL is a number, boolean, object or array, not a string.
    #[error("the URL is {kind} ({value}), not a string: write it as a jq string such as \"\\\"https://ci.example.com/hook\\\"\" or an expression that yields one")]
    UrlNotString {
        /// `a number`, `a boolean`, `an object`, `an array`.
        kind: &'static str,
        /// The value, as JSON.
        value: String,
    },
    /// The method is not a string.
    #[error("the method must be a string, got {0}")]
    BadMethod(String),
}

impl BuildError {
    /// The request field at fault.
    pub fn field(&self) -> &'static str {
        match self {
            BuildError::NoUrl | BuildError::BadUrl(_) | BuildError::UrlNotString { .. } => "url",
            BuildError::BadMethod(_) => "method",
        }
    }
}

/// The URL a mapping yielded: a string, nothing (null), or the wrong type.
fn url_string(v: &Value) -> Result<Option<String>, BuildError> {
    let kind = match v {
        Value::String(s) => return Ok(Some(s.clone())),
        Value::Null => return Ok(None),
        Value::Number(_) => "a number",
        Value::Bool(_) => "a boolean",
        Value::Object(_) => "an object",
        Value::Array(_) => "an array",
    };
    Err(BuildError::UrlNotString {
        kind,
        value: v.to_string(),
    })
}

/// The URL to request: present, not empty, absolute http(s).
fn checked_url(url: Option<String>) -> Result<String, BuildError> {
    let url = url.filter(|u| !u.is_empty()).ok_or(BuildError::NoUrl)?;
    match url::Url::parse(&url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => Ok(url),
        _ => Err(BuildError::BadUrl(url)),
    }
}

/// A template's value when it is known without a message: a literal, a jq
/// expression that is a JSON literal (`5`, `true`, `"\"https://…\""`), or
/// an object or array template (its leaves as written). `None` when it
/// depends on the message.
fn known_value(t: &Template) -> Option<Value> {
    let as_written = |t: &Template| known_value(t).unwrap_or_else(|| Value::String(t.describe()));
    match t {
        Template::Literal(v) => Some(v.clone()),
        Template::Jq(p) => serde_json::from_str(p.source().trim()).ok(),
        Template::Object(fields) => Some(Value::Object(
            fields.iter().map(|(k, t)| (k.clone(), as_written(t))).collect(),
        )),
        Template::Array(items) => Some(Value::Array(items.iter().map(as_written).collect())),
    }
}

impl Mapping {
    /// What `render` would report for every message, found without one
    /// (`check`): a URL or method known in advance ([`known_value`]) of the
    /// wrong type, and a known URL that is empty or not an absolute http(s)
    /// URL. The texts are [`BuildError`]'s, as `render` reports them.
    pub fn literal_errors(&self) -> Vec<MappingError> {
        let error = |field: &str, e: BuildError| MappingError::Field {
            index: self.index,
            field: field.to_string(),
            reason: e.to_string(),
        };
        let mut out = Vec::new();
        // In the order `render` builds them.
        if let Some(method) = self.method.as_ref().and_then(known_value) {
            if !matches!(method, Value::String(_) | Value::Null) {
                out.push(error("method", BuildError::BadMethod(method.to_string())));
            }
        }
        if let Some(url) = self.url.as_ref().and_then(known_value) {
            // null: the invocation method's URL is used.
            if let Err(e) = url_string(&url).and_then(|u| u.map(|u| checked_url(Some(u))).transpose()) {
                out.push(error("url", e));
            }
        }
        out
    }
}

/// Build the request for `message` (already decrypted) with `mapping`.
pub fn build_request(
    mapping: &Mapping,
    message: &Value,
    defaults: &Defaults<'_>,
    ctx: &EvalCtx<'_>,
    warnings: &mut Vec<Warning>,
) -> Result<RequestSpec, BuildError> {
    build_request_from(mapping, message, &jq::to_val(message), defaults, ctx, warnings)
}

/// [`build_request`] with `input`, the message already converted by
/// [`jq::to_val`] (selection converted it; the conversion is a measurable
/// part of a run).
pub fn build_request_from(
    mapping: &Mapping,
    message: &Value,
    input: &jq::Val,
    defaults: &Defaults<'_>,
    ctx: &EvalCtx<'_>,
    warnings: &mut Vec<Warning>,
) -> Result<RequestSpec, BuildError> {
    let render = |t: &Option<Template>, name: &str, warnings: &mut Vec<Warning>| {
        t.as_ref()
            .map(|t| t.render(input, ctx, mapping.index, name, warnings))
    };
    let method = match render(&mapping.method, "method", warnings) {
        Some(Value::String(m)) => m,
        Some(Value::Null) | None => defaults.method.unwrap_or("POST").to_string(),
        Some(other) => return Err(BuildError::BadMethod(other.to_string())),
    };
    let url = checked_url(match render(&mapping.url, "url", warnings) {
        Some(v) => url_string(&v)?,
        None => defaults.url.map(str::to_string),
    })?;
    Ok(RequestSpec {
        method: method.to_ascii_uppercase(),
        url,
        body: render(&mapping.body, "body", warnings).unwrap_or_else(|| message.clone()),
        headers: render(&mapping.headers, "headers", warnings).unwrap_or_else(|| Value::Object(Map::new())),
        query: render(&mapping.query, "query", warnings).unwrap_or_else(|| Value::Object(Map::new())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::testing::{ctx_env, set};
    use crate::mapping::Budget;
    use serde_json::json;

    #[test]
    fn request_defaults_and_overrides() {
        let env = ctx_env();
        let ctx = EvalCtx {
            env: &env,
            budget: Budget::default(),
        };
        let msg = json!({"resourceType": "run", "n": 5, "p": {"v": "1.2"}});
        let d = Defaults {
            method: Some("put"),
            url: Some("http://t.local/x"),
        };
        let s = set(json!([{}]));
        let mut w = Vec::new();
        let r = build_request(&s.mappings[0], &msg, &d, &ctx, &mut w).unwrap();
        assert_eq!(r.method, "PUT");
        assert_eq!(r.url, "http://t.local/x");
        assert_eq!(r.body, msg);
        assert_eq!((r.headers.clone(), r.query.clone()), (json!({}), json!({})));

        // Parsed from text so that the literal 3.50 keeps its form.
        let s = set(serde_json::from_str(
            r#"[{
            "method": "\"delete\"",
            "url": "\"http://other.local/\" + .p.v",
            "headers": {"MY-HEADER": ".resourceType", "Auth": "\"Bearer \" + env.TOKEN"},
            "query": {"n": ".n"},
            "body": {"z": ".n * 2", "a": 3.50, "lit": null, "list": [".p.v", true]}
        }]"#,
        )
        .unwrap());
        let r = build_request(&s.mappings[0], &msg, &d, &ctx, &mut w).unwrap();
        assert_eq!(r.method, "DELETE");
        assert_eq!(r.url, "http://other.local/1.2");
        assert_eq!(r.headers, json!({"MY-HEADER": "run", "Auth": "Bearer t0k"}));
        assert_eq!(r.query, json!({"n": 5}));
        assert_eq!(
            crate::json_canon::to_raw_string(&r.body),
            r#"{"z":10,"a":3.50,"lit":null,"list":["1.2",true]}"#
        );
        assert!(w.is_empty());

        let s = set(json!([{"url": ".nope"}]));
        assert_eq!(
            build_request(&s.mappings[0], &msg, &Defaults::default(), &ctx, &mut w),
            Err(BuildError::NoUrl)
        );
        let s = set(json!([{"url": "\"not a url\""}]));
        assert!(matches!(
            build_request(&s.mappings[0], &msg, &d, &ctx, &mut w),
            Err(BuildError::BadUrl(_))
        ));
    }

    #[test]
    fn literal_errors_are_the_errors_render_reports() {
        let env = ctx_env();
        let ctx = EvalCtx {
            env: &env,
            budget: Budget::default(),
        };
        let d = Defaults {
            method: None,
            url: Some("http://t.local/"),
        };
        for mapping in [
            json!({"url": 5}),
            json!({"url": "5"}),
            json!({"url": true}),
            json!({"url": {"a": ".x"}}),
            json!({"url": [".x"]}),
            json!({"url": "\"not a url\""}),
            json!({"url": "\"ftp://x/\""}),
            json!({"url": "\"\""}),
            json!({"method": 5}),
            json!({"method": "[\"GET\"]"}),
            json!({"method": {"m": "\"GET\""}}),
        ] {
            let s = set(json!([mapping]));
            let m = &s.mappings[0];
            let rendered = build_request(m, &json!({"x": "y"}), &d, &ctx, &mut Vec::new()).unwrap_err();
            let found = m.literal_errors();
            assert_eq!(found.len(), 1, "{mapping}: {found:?}");
            match &found[0] {
                MappingError::Field { index, field, reason } => {
                    assert_eq!((*index, field.as_str()), (0, rendered.field()), "{mapping}");
                    if !matches!(mapping["url"], Value::Object(_) | Value::Array(_))
                        && !matches!(mapping["method"], Value::Object(_))
                    {
                        assert_eq!(reason, &rendered.to_string(), "{mapping}");
                    }
                }
                other => panic!("{other:?}"),
            }
        }
        for fine in [
            json!({}),
            json!({"url": null, "method": null}),
            json!({"url": "null", "method": "null"}),
            json!({"url": ".payload.url", "method": ".m"}),
            json!({"url": "\"https://ci.example.com/hook\"", "method": "\"put\""}),
        ] {
            assert_eq!(set(json!([fine])).mappings[0].literal_errors(), vec![], "{fine}");
        }
    }

    #[test]
    fn error_fields_are_the_fields_warnings_name() {
        let env = ctx_env();
        let ctx = EvalCtx {
            env: &env,
            budget: Budget::default(),
        };
        let e = |x: &str| format!("error(\"{x}\")");
        let s = set(
            json!([{"enabled": ".a", "method": e("m"), "url": "\"http://t.local/\"",
            "body": {"a": e("b"), "n": 1, "l": [1, e("c")]}, "headers": {"H": e("h")}, "query": {"q": e("q")},
            "report": {"status": e("s"), "externalRunId": e("x")}}]),
        );
        let fields = s.mappings[0].error_fields();
        let want = [
            "enabled",
            "method",
            "url",
            "body.a",
            "body.l[1]",
            "headers.H",
            "query.q",
            "report.status",
            "report.externalRunId",
        ];
        assert_eq!(fields, want);
        let d = Defaults {
            method: None,
            url: Some("http://t.local/"),
        };
        let mut w = Vec::new();
        build_request(&s.mappings[0], &json!({}), &d, &ctx, &mut w).unwrap();
        let named: Vec<&str> = w.iter().map(|w| w.field.as_str()).collect();
        assert_eq!(named, ["method", "body.a", "body.l[1]", "headers.H", "query.q"]);
        // A URL that fails: its warning and the build error both name `url`.
        let s = set(json!([{"url": e("u")}]));
        let mut w = Vec::new();
        let built = build_request(&s.mappings[0], &json!({}), &d, &ctx, &mut w);
        assert_eq!(built.map_err(|e| e.field()), Err("url"));
        assert_eq!(w[0].field, "url");
        assert_eq!(s.mappings[0].error_fields(), ["url"]);
        // `url` always (no URL at all); `method` only when the mapping sets it.
        assert_eq!(set(json!([{}])).mappings[0].error_fields(), ["url"]);
    }

    #[test]
    fn runtime_errors_become_null_with_a_warning() {
        let env = ctx_env();
        let ctx = EvalCtx {
            env: &env,
            budget: Budget::default(),
        };
        let s = set(json!([{"body": {"a": ".x | error(\"bad\")", "b": "1"}}]));
        let mut w = Vec::new();
        let d = Defaults {
            method: None,
            url: Some("http://t.local/"),
        };
        let r = build_request(&s.mappings[0], &json!({"x": 1}), &d, &ctx, &mut w).unwrap();
        assert_eq!(r.body, json!({"a": null, "b": 1}));
        assert_eq!(
            w,
            vec![Warning {
                index: 0,
                field: "body.a".into(),
                message: "bad".into()
            }]
        );
    }
}
