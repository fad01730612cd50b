//! The mapping file ("control the payload", SPEC §5): its types and
//! selection. Loading and compiling is in [`compile`], building the request
//! in [`request`], the jq engine in [`jq`]; the run report a mapping's
//! `report.*` overrides is built in [`crate::report`].
//!
//! Everything here is pure: a [`MappingSet`] is compiled once at start-up and
//! shared; selection and rendering take a message and return values plus the
//! warnings met on the way ([`Warning`]), which the caller logs and counts.

pub mod compile;
pub mod jq;
pub mod reload;
pub mod request;

use std::fmt;

use jaq_json::Val;
use serde_json::Value;

pub use jq::{Budget, JqEnv, JqProgram};
pub use request::{build_request, build_request_from, BuildError, Defaults, RequestSpec};

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
    /// Several fields do not compile: every [`MappingError::Field`], in
    /// file order (`check` lists them one a line).
    #[error("{} errors: {}", .0.len(), .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Fields(Vec<MappingError>),
}

impl MappingError {
    /// The errors one a line: each field error of [`MappingError::Fields`],
    /// or this error alone.
    pub fn each(&self) -> Vec<&MappingError> {
        match self {
            MappingError::Fields(all) => all.iter().collect(),
            one => vec![one],
        }
    }
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

    /// The path of each jq expression in the template (`field`, `field.k`,
    /// `field[i]`), as [`Template::render`] names them in its warnings.
    fn jq_paths(&self, field: &str, out: &mut Vec<String>) {
        match self {
            Template::Jq(_) => out.push(field.to_string()),
            Template::Literal(_) => {}
            Template::Object(fields) => fields
                .iter()
                .for_each(|(k, t)| t.jq_paths(&format!("{field}.{k}"), out)),
            Template::Array(items) => items
                .iter()
                .enumerate()
                .for_each(|(i, t)| t.jq_paths(&format!("{field}[{i}]"), out)),
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
    /// Every `field` a runtime error of this mapping can name (a
    /// [`Warning`], a [`BuildError`]): `enabled` when it is jq, each jq
    /// expression of the templates by its path (`body.ref`,
    /// `report.status`), `url`, and `method` when the mapping sets one. The
    /// metrics export each at 0 from start-up.
    pub fn error_fields(&self) -> Vec<String> {
        let mut out = Vec::new();
        if matches!(self.enabled, Enabled::Jq(_)) {
            out.push("enabled".to_string());
        }
        let report = self.report.as_ref();
        let templates = [
            ("method", self.method.as_ref()),
            ("url", self.url.as_ref()),
            ("body", self.body.as_ref()),
            ("headers", self.headers.as_ref()),
            ("query", self.query.as_ref()),
            ("report.status", report.and_then(|r| r.status.as_ref())),
            ("report.link", report.and_then(|r| r.link.as_ref())),
            ("report.summary", report.and_then(|r| r.summary.as_ref())),
            (
                "report.externalRunId",
                report.and_then(|r| r.external_run_id.as_ref()),
            ),
            ("report.statusLabel", report.and_then(|r| r.status_label.as_ref())),
        ];
        for (name, t) in templates {
            if let Some(t) = t {
                t.jq_paths(name, &mut out);
            }
        }
        let built = ["url"].into_iter().chain(self.method.as_ref().map(|_| "method"));
        for field in built {
            if !out.iter().any(|f| f == field) {
                out.push(field.to_string());
            }
        }
        out
    }

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
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// The compiled mapping file.
#[derive(Debug, Clone)]
pub struct MappingSet {
    /// Mappings in file order.
    pub mappings: Vec<Mapping>,
}

impl MappingSet {
    /// Each field of each mapping that a runtime error can name, with the
    /// mapping's index (the `mapping_errors_total` series at 0).
    pub fn error_fields(&self) -> Vec<(usize, String)> {
        self.mappings
            .iter()
            .flat_map(|m| m.error_fields().into_iter().map(|f| (m.index, f)))
            .collect()
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

/// Helpers for the unit tests of the mapping and of the report.
#[cfg(test)]
pub(crate) mod testing {
    use super::{JqEnv, MappingSet};
    use serde_json::Value;

    /// The environment the tests evaluate in: `TOKEN=t0k`.
    pub(crate) fn ctx_env() -> JqEnv {
        JqEnv::new([("TOKEN".to_string(), "t0k".to_string())])
    }

    /// Compile `v`, a JSON array of mappings the test knows is valid.
    pub(crate) fn set(v: Value) -> MappingSet {
        MappingSet::from_value(&v).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{ctx_env, set};
    use super::*;
    use serde_json::json;

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
}
