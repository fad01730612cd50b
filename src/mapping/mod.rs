//! The mapping file ("control the payload", SPEC §5): load and compile,
//! select, build the request, build the report.
//!
//! Everything here is pure: a [`MappingSet`] is compiled once at start-up and
//! shared; selection and rendering take a message and return values plus the
//! warnings met on the way ([`Warning`]), which the caller logs and counts.

pub mod jq;
pub mod reload;

use std::fmt;
use std::path::Path;

use jaq_json::Val;
use serde_json::{Map, Value};

use crate::settings::parse_bool;
pub use jq::{Budget, JqEnv, JqProgram};

/// A problem in the mapping file, found while loading it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    /// The file cannot be read.
    #[error("cannot read mapping file {path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        reason: String,
    },
    /// The file is not JSON, or not a JSON array of objects.
    #[error("mapping file {path} is not valid: {reason}")]
    Format {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// One field of one mapping does not compile or has the wrong type.
    #[error("mapping #{index}, field '{field}': {reason}")]
    Field {
        /// Index of the mapping in the array.
        index: usize,
        /// Field path, e.g. `body.ref` or `report.status`.
        field: String,
        /// The jq error (with position) or the type problem.
        reason: String,
    },
}

/// A runtime problem met while evaluating a mapping: the field becomes null
/// (compat) and the caller logs the warning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// Index of the mapping.
    pub index: usize,
    /// Field path.
    pub field: String,
    /// The jq error.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "mapping #{}, field '{}': {}",
            self.index, self.field, self.message
        )
    }
}

/// A value built from jq expressions: strings are jq, containers are walked,
/// other literals pass through unchanged.
#[derive(Debug, Clone)]
pub enum Template {
    /// A jq expression; its first output (null when none or on error).
    Jq(JqProgram),
    /// A number, boolean or null, passed through.
    Literal(Value),
    /// An object whose values are templates (key order kept).
    Object(Vec<(String, Template)>),
    /// An array of templates.
    Array(Vec<Template>),
}

impl Template {
    fn compile(value: &Value, index: usize, field: &str) -> Result<Template, MappingError> {
        Ok(match value {
            Value::String(code) => {
                Template::Jq(JqProgram::compile(code).map_err(|e| MappingError::Field {
                    index,
                    field: field.to_string(),
                    reason: e.message,
                })?)
            }
            Value::Object(map) => Template::Object(
                map.iter()
                    .map(|(k, v)| Ok((k.clone(), Template::compile(v, index, &format!("{field}.{k}"))?)))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Array(items) => Template::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| Template::compile(v, index, &format!("{field}[{i}]")))
                    .collect::<Result<_, _>>()?,
            ),
            other => Template::Literal(other.clone()),
        })
    }

    /// Render against `input`; runtime errors become null plus a warning.
    pub fn render(
        &self,
        input: &Val,
        ctx: &EvalCtx<'_>,
        index: usize,
        field: &str,
        warnings: &mut Vec<Warning>,
    ) -> Value {
        match self {
            Template::Literal(v) => v.clone(),
            Template::Jq(p) => match p.first(input, ctx.env, ctx.budget).and_then(|o| match o {
                Some(v) => jq::from_val(&v),
                None => Ok(Value::Null),
            }) {
                Ok(v) => v,
                Err(e) => {
                    warnings.push(Warning {
                        index,
                        field: field.to_string(),
                        message: e.0,
                    });
                    Value::Null
                }
            },
            Template::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(k, t)| {
                        (
                            k.clone(),
                            t.render(input, ctx, index, &format!("{field}.{k}"), warnings),
                        )
                    })
                    .collect(),
            ),
            Template::Array(items) => Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, t)| t.render(input, ctx, index, &format!("{field}[{i}]"), warnings))
                    .collect(),
            ),
        }
    }

    /// The expression text, for display (`check`, `render`).
    pub fn describe(&self) -> String {
        match self {
            Template::Jq(p) => p.source().to_string(),
            Template::Literal(v) => v.to_string(),
            Template::Object(_) => "{…}".into(),
            Template::Array(_) => "[…]".into(),
        }
    }
}

/// When a mapping applies.
#[derive(Debug, Clone)]
pub enum Enabled {
    /// A literal boolean (or one of the compat boolean strings).
    Literal(bool),
    /// A jq expression that must yield exactly `true`.
    Jq(JqProgram),
}

/// `report.*` expressions.
#[derive(Debug, Clone, Default)]
pub struct ReportMapping {
    /// `report.status`.
    pub status: Option<Template>,
    /// `report.link` (string or list of strings).
    pub link: Option<Template>,
    /// `report.summary`.
    pub summary: Option<Template>,
    /// `report.externalRunId`.
    pub external_run_id: Option<Template>,
    /// `report.statusLabel`.
    pub status_label: Option<Template>,
}

/// One compiled mapping.
#[derive(Debug, Clone)]
pub struct Mapping {
    /// Position in the file.
    pub index: usize,
    /// `enabled` (default true).
    pub enabled: Enabled,
    /// `method`.
    pub method: Option<Template>,
    /// `url`.
    pub url: Option<Template>,
    /// `body`.
    pub body: Option<Template>,
    /// `headers`.
    pub headers: Option<Template>,
    /// `query`.
    pub query: Option<Template>,
    /// `report`.
    pub report: Option<ReportMapping>,
    /// `fieldsToDecryptPaths`.
    pub decrypt_paths: Vec<String>,
    /// Keys the agent does not know (ignored, reported once at load).
    pub unknown_keys: Vec<String>,
}

impl Mapping {
    /// The fields this mapping sets, for `check`.
    pub fn fields_set(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        for (name, present) in [
            ("method", self.method.is_some()),
            ("url", self.url.is_some()),
            ("body", self.body.is_some()),
            ("headers", self.headers.is_some()),
            ("query", self.query.is_some()),
            ("report", self.report.is_some()),
            ("fieldsToDecryptPaths", !self.decrypt_paths.is_empty()),
        ] {
            if present {
                out.push(name);
            }
        }
        out
    }

    /// The URL, when the mapping gives it as a literal jq string
    /// (`"\"https://ci.example.com/hook\""`), for `check`.
    pub fn literal_url(&self) -> Option<String> {
        match &self.url {
            Some(Template::Jq(p)) => serde_json::from_str::<String>(p.source().trim()).ok(),
            _ => None,
        }
    }

    /// `enabled` as written, for display.
    pub fn enabled_text(&self) -> String {
        match &self.enabled {
            Enabled::Literal(b) => b.to_string(),
            Enabled::Jq(p) => p.source().to_string(),
        }
    }
}

/// Evaluation context shared by every expression of one message.
pub struct EvalCtx<'a> {
    /// `env` / `$ENV`.
    pub env: &'a JqEnv,
    /// Limits of each evaluation.
    pub budget: Budget,
}

/// Why a mapping was passed over during selection.
#[derive(Debug, Clone, PartialEq)]
pub struct PassedOver {
    /// Index of the mapping.
    pub index: usize,
    /// Reason, e.g. "enabled is false" or "enabled yielded \"yes\"".
    pub reason: String,
}

/// The result of selection.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    /// The first matching mapping.
    pub index: Option<usize>,
    /// The mappings before it, and why each did not match.
    pub passed_over: Vec<PassedOver>,
}

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

/// The run report (`PATCH /v1/actions/runs/{id}`): keys that are `None` are
/// not sent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunReport {
    /// `SUCCESS` / `FAILURE`.
    pub status: Option<Value>,
    /// Link(s) shown on the run.
    pub link: Option<Value>,
    /// Summary text.
    pub summary: Option<Value>,
    /// The target system's run id.
    pub external_run_id: Option<Value>,
    /// A short label shown beside the run's status.
    pub status_label: Option<Value>,
}

impl RunReport {
    /// Nothing to send?
    pub fn is_empty(&self) -> bool {
        self.status.is_none()
            && self.link.is_none()
            && self.summary.is_none()
            && self.external_run_id.is_none()
            && self.status_label.is_none()
    }

    /// The PATCH body: the non-null keys, in a fixed order.
    pub fn to_body(&self) -> Value {
        let mut m = Map::new();
        for (k, v) in [
            ("status", &self.status),
            ("link", &self.link),
            ("summary", &self.summary),
            ("externalRunId", &self.external_run_id),
            ("statusLabel", &self.status_label),
        ] {
            if let Some(v) = v {
                m.insert(k.into(), v.clone());
            }
        }
        Value::Object(m)
    }
}

/// The compiled mapping file.
#[derive(Debug, Clone)]
pub struct MappingSet {
    /// Mappings in file order.
    pub mappings: Vec<Mapping>,
}

const KNOWN_KEYS: &[&str] = &[
    "enabled",
    "method",
    "url",
    "body",
    "headers",
    "query",
    "report",
    "fieldsToDecryptPaths",
];

impl MappingSet {
    /// Load and compile a mapping file.
    pub fn load(path: &Path) -> Result<MappingSet, MappingError> {
        let text = std::fs::read_to_string(path).map_err(|e| MappingError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::parse(&text).map_err(|e| match e {
            MappingError::Format { reason, .. } => MappingError::Format {
                path: path.display().to_string(),
                reason,
            },
            other => other,
        })
    }

    /// Compile mappings from JSON text.
    pub fn parse(text: &str) -> Result<MappingSet, MappingError> {
        let format = |reason: String| MappingError::Format {
            path: "<text>".into(),
            reason,
        };
        let value: Value = serde_json::from_str(text).map_err(|e| format(format!("not JSON: {e}")))?;
        Self::from_value(&value).map_err(|e| match e {
            MappingError::Format { reason, .. } => format(reason),
            other => other,
        })
    }

    /// Compile mappings from a parsed JSON array.
    pub fn from_value(value: &Value) -> Result<MappingSet, MappingError> {
        let items = value.as_array().ok_or_else(|| MappingError::Format {
            path: "<value>".into(),
            reason: "expected a JSON array of mappings".into(),
        })?;
        let mappings = items
            .iter()
            .enumerate()
            .map(|(index, item)| compile_mapping(index, item))
            .collect::<Result<_, _>>()?;
        Ok(MappingSet { mappings })
    }

    /// The first mapping whose `enabled` is `true` (SPEC §5). `enabled` sees
    /// the message before decryption.
    pub fn select(&self, message: &Val, ctx: &EvalCtx<'_>, warnings: &mut Vec<Warning>) -> Selection {
        let mut passed_over = Vec::new();
        for m in &self.mappings {
            let reason = match &m.enabled {
                Enabled::Literal(true) => None,
                Enabled::Literal(false) => Some("enabled is false".to_string()),
                Enabled::Jq(p) => match p.first(message, ctx.env, ctx.budget) {
                    Ok(Some(v)) if jq::is_true(&v) => None,
                    Ok(Some(v)) => Some(format!(
                        "enabled yielded {}",
                        jq::from_val(&v).map(|v| v.to_string()).unwrap_or_else(|e| e.0)
                    )),
                    Ok(None) => Some("enabled yielded no output".to_string()),
                    Err(e) => {
                        warnings.push(Warning {
                            index: m.index,
                            field: "enabled".into(),
                            message: e.0.clone(),
                        });
                        Some(format!("enabled raised an error: {}", e.0))
                    }
                },
            };
            match reason {
                None => {
                    return Selection {
                        index: Some(m.index),
                        passed_over,
                    }
                }
                Some(reason) => passed_over.push(PassedOver {
                    index: m.index,
                    reason,
                }),
            }
        }
        Selection {
            index: None,
            passed_over,
        }
    }

    /// The mapping at `index`.
    pub fn get(&self, index: usize) -> Option<&Mapping> {
        self.mappings.get(index)
    }
}

fn compile_mapping(index: usize, item: &Value) -> Result<Mapping, MappingError> {
    let obj = item.as_object().ok_or_else(|| MappingError::Field {
        index,
        field: "(mapping)".into(),
        reason: "expected an object".into(),
    })?;
    let field = |name: &str| -> Result<Option<Template>, MappingError> {
        match obj.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => Template::compile(v, index, name).map(Some),
        }
    };
    let enabled = match obj.get("enabled") {
        None | Some(Value::Null) => Enabled::Literal(true),
        Some(Value::Bool(b)) => Enabled::Literal(*b),
        Some(Value::String(s)) => match parse_bool(s) {
            Some(b) => Enabled::Literal(b),
            None => Enabled::Jq(JqProgram::compile(s).map_err(|e| MappingError::Field {
                index,
                field: "enabled".into(),
                reason: e.message,
            })?),
        },
        Some(other) => {
            return Err(MappingError::Field {
                index,
                field: "enabled".into(),
                reason: format!("expected a boolean or a jq expression, got {other}"),
            })
        }
    };
    let report = match obj.get("report") {
        None | Some(Value::Null) => None,
        Some(Value::Object(r)) => {
            let part = |name: &str| -> Result<Option<Template>, MappingError> {
                match r.get(name) {
                    None | Some(Value::Null) => Ok(None),
                    Some(v) => Template::compile(v, index, &format!("report.{name}")).map(Some),
                }
            };
            Some(ReportMapping {
                status: part("status")?,
                link: part("link")?,
                summary: part("summary")?,
                external_run_id: part("externalRunId")?,
                status_label: part("statusLabel")?,
            })
        }
        Some(_) => {
            return Err(MappingError::Field {
                index,
                field: "report".into(),
                reason: "expected an object with status, link, summary, externalRunId and statusLabel".into(),
            })
        }
    };
    let decrypt_paths = match obj.get("fieldsToDecryptPaths") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(paths)) => paths
            .iter()
            .map(|p| p.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| MappingError::Field {
                index,
                field: "fieldsToDecryptPaths".into(),
                reason: "expected a list of dot paths (strings)".into(),
            })?,
        Some(_) => {
            return Err(MappingError::Field {
                index,
                field: "fieldsToDecryptPaths".into(),
                reason: "expected a list of dot paths (strings)".into(),
            })
        }
    };
    Ok(Mapping {
        index,
        enabled,
        method: field("method")?,
        url: field("url")?,
        body: field("body")?,
        headers: field("headers")?,
        query: field("query")?,
        report,
        decrypt_paths,
        unknown_keys: obj
            .keys()
            .filter(|k| !KNOWN_KEYS.contains(&k.as_str()))
            .cloned()
            .collect(),
    })
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
    let url = match render(&mapping.url, "url", warnings) {
        Some(v) => url_string(&v)?,
        None => defaults.url.map(str::to_string),
    }
    .filter(|u| !u.is_empty())
    .ok_or(BuildError::NoUrl)?;
    match url::Url::parse(&url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => {}
        _ => return Err(BuildError::BadUrl(url)),
    }
    Ok(RequestSpec {
        method: method.to_ascii_uppercase(),
        url,
        body: render(&mapping.body, "body", warnings).unwrap_or_else(|| message.clone()),
        headers: render(&mapping.headers, "headers", warnings).unwrap_or_else(|| Value::Object(Map::new())),
        query: render(&mapping.query, "query", warnings).unwrap_or_else(|| Value::Object(Map::new())),
    })
}

/// The default report (SPEC §7.2 step 4).
pub fn default_report(synchronized: bool, response: &ResponseContext, detailed: bool) -> RunReport {
    if response.ok() {
        RunReport {
            status: synchronized.then(|| Value::from("SUCCESS")),
            ..RunReport::default()
        }
    } else {
        let mut summary = format!(
            "Failed to invoke the webhook with status code: {}.",
            response.status
        );
        // A redirect that was not followed (another host, or
        // AGENT_TARGET_REDIRECTS=none): say where it pointed.
        if let Some(location) = response
            .header("location")
            .filter(|_| (300..400).contains(&response.status))
        {
            summary.push_str(&format!(" Location: {location}"));
        }
        if detailed && !response.text.is_empty() {
            summary.push_str(&format!(" Response: {}", response.text));
        }
        RunReport {
            status: Some(Value::from("FAILURE")),
            summary: Some(Value::from(summary)),
            ..RunReport::default()
        }
    }
}

/// Apply `report.*` overrides on top of `report`: a present expression
/// replaces the default, and a null result removes the key.
pub fn apply_report_mapping(
    mapping: &Mapping,
    mut report: RunReport,
    message: &Value,
    request: &RequestSpec,
    response: &ResponseContext,
    ctx: &EvalCtx<'_>,
    warnings: &mut Vec<Warning>,
) -> RunReport {
    let Some(rm) = &mapping.report else {
        return report;
    };
    let mut c = Map::new();
    c.insert("body".into(), message.clone());
    c.insert("request".into(), request.to_context());
    c.insert("response".into(), response.to_context());
    let input = jq::to_val(&Value::Object(c));
    for (template, slot, name) in [
        (&rm.status, &mut report.status, "report.status"),
        (&rm.link, &mut report.link, "report.link"),
        (&rm.summary, &mut report.summary, "report.summary"),
        (
            &rm.external_run_id,
            &mut report.external_run_id,
            "report.externalRunId",
        ),
        (&rm.status_label, &mut report.status_label, "report.statusLabel"),
    ] {
        if let Some(t) = template {
            let v = t.render(&input, ctx, mapping.index, name, warnings);
            *slot = (!v.is_null()).then_some(v);
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx_env() -> JqEnv {
        JqEnv::new([("TOKEN".to_string(), "t0k".to_string())])
    }

    fn set(v: Value) -> MappingSet {
        MappingSet::from_value(&v).unwrap()
    }

    #[test]
    fn compile_errors_name_index_field_and_position() {
        let e =
            MappingSet::from_value(&json!([{"enabled": true}, {"body": {"a": {"b": ".x |"}}}])).unwrap_err();
        match e {
            MappingError::Field { index, field, reason } => {
                assert_eq!((index, field.as_str()), (1, "body.a.b"));
                assert!(
                    reason.contains("syntax error") && reason.contains("end of the expression"),
                    "{reason}"
                );
            }
            other => panic!("{other:?}"),
        }
        let e = MappingSet::from_value(&json!([{"enabled": ".a == "}])).unwrap_err();
        assert!(e.to_string().starts_with("mapping #0, field 'enabled'"), "{e}");
        assert!(MappingSet::parse("{").is_err());
        assert!(MappingSet::parse("{}").unwrap_err().to_string().contains("array"));
    }

    #[test]
    fn selection_takes_the_first_true_and_explains_the_rest() {
        let s = set(json!([
            {"enabled": false},
            {"enabled": "no"},
            {"enabled": ".action | error"},
            {"enabled": ".action"},
            {"enabled": ".action == \"deploy\""},
            {"enabled": true}
        ]));
        let env = ctx_env();
        let ctx = EvalCtx {
            env: &env,
            budget: Budget::default(),
        };
        let mut w = Vec::new();
        let sel = s.select(&jq::to_val(&json!({"action": "deploy"})), &ctx, &mut w);
        assert_eq!(sel.index, Some(4));
        let reasons: Vec<_> = sel.passed_over.iter().map(|p| p.reason.as_str()).collect();
        assert_eq!(reasons[0], "enabled is false");
        assert_eq!(reasons[1], "enabled is false");
        assert!(reasons[2].starts_with("enabled raised an error"));
        assert_eq!(reasons[3], "enabled yielded \"deploy\"");
        assert_eq!(w.len(), 1);
        assert_eq!((w[0].index, w[0].field.as_str()), (2, "enabled"));
        let sel = set(json!([{"enabled": "false"}])).select(&jq::to_val(&json!({})), &ctx, &mut w);
        assert_eq!(sel.index, None);
    }

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

    #[test]
    fn report_defaults_and_overrides() {
        let ok = ResponseContext {
            status: 200,
            headers: vec![],
            text: "{\"id\":7}".into(),
        };
        let bad = ResponseContext {
            status: 500,
            headers: vec![],
            text: "oops".into(),
        };
        assert_eq!(default_report(false, &ok, true), RunReport::default());
        assert_eq!(
            default_report(true, &ok, true).to_body(),
            json!({"status": "SUCCESS"})
        );
        assert_eq!(
            default_report(false, &bad, true).to_body(),
            json!({"status": "FAILURE", "summary": "Failed to invoke the webhook with status code: 500. Response: oops"})
        );
        assert_eq!(
            default_report(false, &bad, false).to_body()["summary"],
            "Failed to invoke the webhook with status code: 500."
        );

        let env = ctx_env();
        let ctx = EvalCtx {
            env: &env,
            budget: Budget::default(),
        };
        let s = set(json!([{"report": {
            "status": "null",
            "link": "[\"http://x/\" + (.response.json.id | tostring)]",
            "externalRunId": ".response.json.id | tostring",
            "summary": ".body.name"
        }}]));
        let req = RequestSpec {
            method: "POST".into(),
            url: "http://t/".into(),
            body: json!({}),
            headers: json!({}),
            query: json!({}),
        };
        let mut w = Vec::new();
        let r = apply_report_mapping(
            &s.mappings[0],
            default_report(true, &ok, true),
            &json!({"name": "n1"}),
            &req,
            &ok,
            &ctx,
            &mut w,
        );
        assert_eq!(
            r.to_body(),
            json!({"link": ["http://x/7"], "summary": "n1", "externalRunId": "7"})
        );
    }
}
