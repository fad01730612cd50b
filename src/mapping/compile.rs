//! Load and compile the mapping file: JSON text → [`MappingSet`], with an
//! error that names the mapping, the field and the position of a jq syntax
//! error ([`MappingError`]).

use std::path::Path;

use serde_json::{Map, Value};

use super::{Enabled, JqProgram, Mapping, MappingError, MappingSet, ReportMapping, Template};
use crate::settings::parse_bool;

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

    /// Compile mappings from a parsed JSON array. Every error of the file
    /// is found: one is returned as [`MappingError::Field`], several as
    /// [`MappingError::Fields`] (in file order).
    pub fn from_value(value: &Value) -> Result<MappingSet, MappingError> {
        let (set, mut errors) = Self::compile_all(value)?;
        match errors.len() {
            0 => Ok(set),
            1 => Err(errors.remove(0)),
            _ => Err(MappingError::Fields(errors)),
        }
    }

    /// Compile every mapping of a parsed JSON array, and list every field
    /// error (in file order) instead of stopping at the first: a field in
    /// error stands as null (`enabled` as false) in the set returned, so
    /// that `check` can look at the rest. `Err` only when `value` is not an
    /// array.
    pub fn compile_all(value: &Value) -> Result<(MappingSet, Vec<MappingError>), MappingError> {
        let items = value.as_array().ok_or_else(|| MappingError::Format {
            path: "<value>".into(),
            reason: "expected a JSON array of mappings".into(),
        })?;
        let mut errors = Vec::new();
        let mappings = items
            .iter()
            .enumerate()
            .filter_map(|(index, item)| compile_mapping(index, item, &mut errors))
            .collect();
        Ok((MappingSet { mappings }, errors))
    }

    /// [`MappingSet::compile_all`] of a file: `Err` when the file cannot
    /// be read or is not a JSON array.
    pub fn load_all(path: &Path) -> Result<(MappingSet, Vec<MappingError>), MappingError> {
        let text = std::fs::read_to_string(path).map_err(|e| MappingError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let format = |reason: String| MappingError::Format {
            path: path.display().to_string(),
            reason,
        };
        let value: Value = serde_json::from_str(&text).map_err(|e| format(format!("not JSON: {e}")))?;
        Self::compile_all(&value).map_err(|e| match e {
            MappingError::Format { reason, .. } => format(reason),
            other => other,
        })
    }
}

impl Template {
    /// Compile a template from its JSON form: strings are jq, containers
    /// are walked, other values are literals. A jq string that does not
    /// compile adds its error to `errors` (and stands as null).
    pub(crate) fn compile(
        value: &Value,
        index: usize,
        field: &str,
        errors: &mut Vec<MappingError>,
    ) -> Template {
        match value {
            Value::String(code) => match JqProgram::compile(code) {
                Ok(p) => Template::Jq(p),
                Err(e) => {
                    errors.push(field_error(index, field, e.message));
                    Template::Literal(Value::Null)
                }
            },
            Value::Object(map) => Template::Object(
                map.iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            Template::compile(v, index, &format!("{field}.{k}"), errors),
                        )
                    })
                    .collect(),
            ),
            Value::Array(items) => Template::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| Template::compile(v, index, &format!("{field}[{i}]"), errors))
                    .collect(),
            ),
            other => Template::Literal(other.clone()),
        }
    }
}

/// The field error of mapping `index`.
fn field_error(index: usize, field: &str, reason: impl Into<String>) -> MappingError {
    MappingError::Field {
        index,
        field: field.to_string(),
        reason: reason.into(),
    }
}

/// `obj[name]` compiled as a template; absent or null is `None`.
fn template(
    obj: &Map<String, Value>,
    index: usize,
    name: &str,
    field: &str,
    errors: &mut Vec<MappingError>,
) -> Option<Template> {
    match obj.get(name) {
        None | Some(Value::Null) => None,
        Some(v) => Some(Template::compile(v, index, field, errors)),
    }
}

/// Compile mapping `index`; its errors are added to `errors`, and a field
/// in error stands as null (`enabled` as false). `None` when the item is
/// not an object.
fn compile_mapping(index: usize, item: &Value, errors: &mut Vec<MappingError>) -> Option<Mapping> {
    let Some(obj) = item.as_object() else {
        errors.push(field_error(index, "(mapping)", "expected an object"));
        return None;
    };
    // In this order, so that the first error reported stays the same.
    let enabled = compile_enabled(index, obj.get("enabled")).unwrap_or_else(|e| {
        errors.push(e);
        Enabled::Literal(false)
    });
    let report = compile_report(index, obj.get("report"), errors).unwrap_or_else(|e| {
        errors.push(e);
        None
    });
    let decrypt_paths = compile_decrypt_paths(index, obj.get("fieldsToDecryptPaths")).unwrap_or_else(|e| {
        errors.push(e);
        Vec::new()
    });
    let mut field = |name: &str| template(obj, index, name, name, errors);
    Some(Mapping {
        index,
        enabled,
        method: field("method"),
        url: field("url"),
        body: field("body"),
        headers: field("headers"),
        query: field("query"),
        report,
        decrypt_paths,
        unknown_keys: obj
            .keys()
            .filter(|k| !KNOWN_KEYS.contains(&k.as_str()))
            .cloned()
            .collect(),
    })
}

/// `enabled`: absent or null is true; a boolean or one of the compat
/// boolean strings is a literal; any other string is jq.
fn compile_enabled(index: usize, value: Option<&Value>) -> Result<Enabled, MappingError> {
    Ok(match value {
        None | Some(Value::Null) => Enabled::Literal(true),
        Some(Value::Bool(b)) => Enabled::Literal(*b),
        Some(Value::String(s)) => match parse_bool(s) {
            Some(b) => Enabled::Literal(b),
            None => Enabled::Jq(JqProgram::compile(s).map_err(|e| field_error(index, "enabled", e.message))?),
        },
        Some(other) => {
            return Err(field_error(
                index,
                "enabled",
                format!("expected a boolean or a jq expression, got {other}"),
            ))
        }
    })
}

/// `report`: an object of `report.*` templates; their jq errors go to
/// `errors`.
fn compile_report(
    index: usize,
    value: Option<&Value>,
    errors: &mut Vec<MappingError>,
) -> Result<Option<ReportMapping>, MappingError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(r)) => {
            let mut part = |name: &str| template(r, index, name, &format!("report.{name}"), errors);
            Ok(Some(ReportMapping {
                status: part("status"),
                link: part("link"),
                summary: part("summary"),
                external_run_id: part("externalRunId"),
                status_label: part("statusLabel"),
            }))
        }
        Some(_) => Err(field_error(
            index,
            "report",
            "expected an object with status, link, summary, externalRunId and statusLabel",
        )),
    }
}

/// `fieldsToDecryptPaths`: a list of dot paths.
fn compile_decrypt_paths(index: usize, value: Option<&Value>) -> Result<Vec<String>, MappingError> {
    let wrong = || {
        field_error(
            index,
            "fieldsToDecryptPaths",
            "expected a list of dot paths (strings)",
        )
    };
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(paths)) => paths
            .iter()
            .map(|p| p.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(wrong),
        Some(_) => Err(wrong()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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

        // Every error of the file, in order, each with its mapping and field.
        let bad = json!([
            {"enabled": ".a ==", "body": {"x": ".b |", "ok": ".c", "y": "(("}},
            {"enabled": true},
            "not an object",
            {"report": {"status": ".s +"}, "fieldsToDecryptPaths": [1], "headers": {"H": "]"}}
        ]);
        let e = MappingSet::from_value(&bad).unwrap_err();
        let found: Vec<(usize, String)> = e
            .each()
            .iter()
            .map(|e| match e {
                MappingError::Field { index, field, .. } => (*index, field.clone()),
                other => panic!("{other:?}"),
            })
            .collect();
        let want = [
            (0, "enabled"),
            (0, "body.x"),
            (0, "body.y"),
            (2, "(mapping)"),
            (3, "report.status"),
            (3, "fieldsToDecryptPaths"),
            (3, "headers.H"),
        ];
        assert_eq!(
            found,
            want.iter().map(|(i, f)| (*i, f.to_string())).collect::<Vec<_>>()
        );
        assert!(
            e.to_string().starts_with("7 errors: mapping #0, field 'enabled'"),
            "{e}"
        );
        let (set, errors) = MappingSet::compile_all(&bad).unwrap();
        assert_eq!((set.mappings.len(), errors.len()), (3, 7));
        assert!(MappingSet::parse("{}").unwrap_err().to_string().contains("array"));
    }
}
