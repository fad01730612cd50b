//! Keeping secrets out of what the agent prints: logs, errors, warnings,
//! run logs, failure summaries, and the requests `render` and `dry-run` show.
//!
//! Two rules, in one place:
//! - a value whose *name* looks sensitive ([`sensitive_name`]: a header, a
//!   query parameter, a body key at any depth, an environment variable) is
//!   shown as [`REDACTED`];
//! - a known secret *value* (a decrypted field, the value of a sensitive
//!   environment variable, the client secret) is replaced wherever it
//!   occurs inside a text, also in its JSON-escaped and percent-encoded
//!   forms, because error texts quote values with escapes.

use serde_json::Value;

/// Shown instead of a secret.
pub const REDACTED: &str = "<redacted>";

/// Environment values shorter than this are not searched for in texts:
/// replacing every `1` or `yes` would mangle the output and hide nothing.
/// (Their names still redact them where they are keys.)
pub const MIN_ENV_SECRET_LEN: usize = 4;

/// Does a header, query, body-key or variable name look like it holds a
/// secret? `token|secret|passw|api[-_]?key|authorization|credential|private`,
/// case-insensitive, anywhere in the name; plus `cookie` and Port's
/// signature header.
pub fn sensitive_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    const PARTS: [&str; 9] = [
        "token",
        "secret",
        "passw",
        "apikey",
        "api-key",
        "api_key",
        "authorization",
        "credential",
        "private",
    ];
    PARTS.iter().any(|p| n.contains(p)) || n.contains("cookie") || n == "x-port-signature"
}

/// Replaces known secret values in texts and JSON values.
#[derive(Clone, Default)]
pub struct Redactor {
    /// Longest first, so a secret that contains another is replaced whole.
    needles: Vec<String>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redactor({} needles)", self.needles.len())
    }
}

impl Redactor {
    /// Redact each of `secrets` (empty ones are ignored).
    pub fn new<S: AsRef<str>>(secrets: impl IntoIterator<Item = S>) -> Redactor {
        let mut r = Redactor::default();
        r.extend(secrets);
        r
    }

    /// Add more secrets.
    pub fn extend<S: AsRef<str>>(&mut self, secrets: impl IntoIterator<Item = S>) {
        for s in secrets {
            let s = s.as_ref();
            if s.is_empty() {
                continue;
            }
            let escaped = serde_json::to_string(s).unwrap_or_default();
            let escaped = escaped
                .strip_prefix('"')
                .and_then(|e| e.strip_suffix('"'))
                .unwrap_or(s)
                .to_string();
            let ascii_escaped = crate::json_canon::to_ascii_string(&Value::String(s.to_string()));
            let ascii_escaped = ascii_escaped
                .strip_prefix('"')
                .and_then(|e| e.strip_suffix('"'))
                .unwrap_or(s)
                .to_string();
            let percent: String = url::form_urlencoded::byte_serialize(s.as_bytes()).collect();
            for form in [
                s.to_string(),
                escaped,
                ascii_escaped,
                percent.replace('+', "%20"),
                percent,
            ] {
                if !self.needles.contains(&form) {
                    self.needles.push(form);
                }
            }
        }
        self.needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
    }

    /// `text` with every secret replaced by [`REDACTED`].
    pub fn text(&self, text: &str) -> String {
        self.needles
            .iter()
            .fold(text.to_string(), |acc, n| acc.replace(n.as_str(), REDACTED))
    }

    /// Every string inside `v` redacted (keys are kept).
    pub fn value(&self, v: &Value) -> Value {
        match v {
            Value::String(s) => Value::String(self.text(s)),
            Value::Array(items) => Value::Array(items.iter().map(|i| self.value(i)).collect()),
            Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), self.value(v))).collect()),
            other => other.clone(),
        }
    }

    /// Like [`Redactor::value`], and the whole (non-null) value of any key
    /// whose name is [`sensitive_name`], at any depth, is [`REDACTED`].
    pub fn value_by_name(&self, v: &Value) -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, v)| {
                        let shown = if sensitive_name(k) && !v.is_null() {
                            Value::String(REDACTED.into())
                        } else {
                            self.value_by_name(v)
                        };
                        (k.clone(), shown)
                    })
                    .collect(),
            ),
            Value::Array(items) => Value::Array(items.iter().map(|i| self.value_by_name(i)).collect()),
            other => self.value(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_that_hold_secrets() {
        for name in [
            "Authorization",
            "PRIVATE-TOKEN",
            "x-api-key",
            "API_KEY",
            "apikey",
            "client_secret",
            "password",
            "Passwd",
            "aws_credentials",
            "private_key",
            "Cookie",
            "X-Port-Signature",
            "acme_TOKEN",
        ] {
            assert!(sensitive_name(name), "{name}");
        }
        for name in [
            "ref",
            "Content-Type",
            "variables",
            "X-Port-Timestamp",
            "url",
            "api",
            "key",
        ] {
            assert!(!sensitive_name(name), "{name}");
        }
    }

    #[test]
    fn secrets_are_replaced_in_every_form_they_are_quoted_in() {
        let r = Redactor::new(["a/b+c= d\"é"]);
        assert_eq!(r.text("raw a/b+c= d\"é."), "raw <redacted>.");
        assert_eq!(r.text(r#"json "a/b+c= d\"é""#), r#"json "<redacted>""#);
        assert_eq!(r.text(r#"ascii "a/b+c= d\"\u00e9""#), r#"ascii "<redacted>""#);
        assert_eq!(r.text("q=a%2Fb%2Bc%3D+d%22%C3%A9"), "q=<redacted>");
        assert_eq!(r.text("p=a%2Fb%2Bc%3D%20d%22%C3%A9"), "p=<redacted>");
        assert_eq!(Redactor::new([""]).text("x"), "x");
    }

    #[test]
    fn sensitive_keys_are_redacted_at_any_depth() {
        let r = Redactor::new(["s3"]);
        let v = json!({"ref": "main", "token": "t", "n": {"apiKey": {"a": 1}, "x": ["s3!", null]},
                       "password": null});
        assert_eq!(
            r.value_by_name(&v),
            json!({"ref": "main", "token": REDACTED, "n": {"apiKey": REDACTED, "x": ["<redacted>!", null]},
                   "password": null})
        );
    }
}
