//! Keeping secrets out of everything the agent sends or prints other than
//! the request to the target: run logs, status reports, `/response`, node-run
//! PATCHes, log lines, errors, warnings, and what `render` and `dry-run` show.
//!
//! Two rules, in one place:
//! - a value whose *name* looks sensitive ([`sensitive_name`]: a header, a
//!   query parameter, a body key at any depth, an environment variable) is
//!   shown as [`REDACTED`] (where requests are shown: `render`, `dry-run`);
//! - a known secret *value* (a decrypted field, the value of a sensitive
//!   environment variable, the client secret) is replaced wherever it
//!   occurs inside a text ([`Redactor`]), in every form the agent or a
//!   mapping can make of it:
//!   - as it is, JSON-escaped (also `\uXXXX` for non-ASCII and `\/`);
//!   - percent-encoded in full or in part, in any case, once or twice: the
//!     text is compared after decoding (`+` read both as `+` and as a
//!     space), so every form the URL parser or `@uri` produces is found;
//!   - as the URL parser rewrites a path: tabs and line breaks dropped, `\`
//!     made `/`, dot segments (`.`, `..`, `%2e`) resolved; and each piece
//!     of it before or after a `#` or `?` (a URL ends its path there);
//!   - base64, standard and URL-safe, padded or not, alone or inside a
//!     longer base64 text (e.g. `Basic base64(user:secret)`), at any of the
//!     three byte alignments.
//!
//!   Forms other than the value itself that are shorter than
//!   [`MIN_ENV_SECRET_LEN`] characters (base64 fragments: 8) are not searched
//!   for: they would match ordinary text and hide nothing.

use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use base64::Engine as _;
use serde_json::Value;

/// Shown instead of a secret.
pub const REDACTED: &str = "<redacted>";

/// Environment values shorter than this are not searched for in texts:
/// replacing every `1` or `yes` would mangle the output and hide nothing.
/// (Their names still redact them where they are keys.) The same bound
/// applies to the derived forms of every secret (pieces, URL forms).
pub const MIN_ENV_SECRET_LEN: usize = 4;

/// A base64 fragment of a secret at an alignment is searched for only
/// from this length (shorter ones occur in ordinary base64 by chance).
const MIN_BASE64_FRAGMENT_LEN: usize = 8;

/// How many times a text is percent-decoded when it is searched.
const DECODE_LEVELS: usize = 2;

/// How many times JSON escapes are undone when a text is searched (a
/// secret `@json`-encoded in a request body that a target echoes inside
/// its JSON answer is three levels deep).
const JSON_LEVELS: usize = 3;

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
    /// Every searched form of every secret, longest first, so a secret
    /// that contains another is replaced whole.
    needles: Vec<String>,
    /// The forms searched for in the decoded views of a text (no escaped
    /// forms: the view is unescaped), longest first.
    decoded_needles: Vec<Vec<u8>>,
    /// The secrets themselves.
    secrets: Vec<String>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redactor({} needles)", self.needles.len())
    }
}

/// `s` as a JSON string's content, with the quotes cut off.
fn unquoted(quoted: String) -> String {
    quoted
        .strip_prefix('"')
        .and_then(|e| e.strip_suffix('"'))
        .map(str::to_string)
        .unwrap_or(quoted)
}

/// A path as the URL parser leaves it: tabs and line breaks dropped, `\`
/// made `/`, `%2e` read as `.`, and the dot segments resolved.
fn url_path_form(s: &str) -> String {
    let cleaned: String = s
        .chars()
        .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
        .map(|c| if c == '\\' { '/' } else { c })
        .collect();
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = cleaned.split('/').collect();
    let last = segments.len().saturating_sub(1);
    for (i, seg) in segments.iter().enumerate() {
        let dots = seg.to_ascii_lowercase().replace("%2e", ".");
        match dots.as_str() {
            "." => {
                if i == last {
                    out.push("");
                }
            }
            ".." => {
                out.pop();
                if i == last {
                    out.push("");
                }
            }
            _ => out.push(seg),
        }
    }
    out.join("/")
}

/// The base64 texts of `s` (standard and URL-safe): the whole encoding
/// with and without padding, and, at each of the three byte alignments, the
/// characters that depend on `s` alone (what any longer base64 text that
/// holds `s` at that alignment contains).
fn base64_forms(s: &str) -> Vec<String> {
    let mut forms = Vec::new();
    for engine in [&STANDARD, &URL_SAFE] {
        let whole = engine.encode(s);
        forms.push(whole.trim_end_matches('=').to_string());
        forms.push(whole);
        for lead in 0..3usize {
            let mut bytes = vec![0u8; lead];
            bytes.extend_from_slice(s.as_bytes());
            let full_groups = bytes.len() / 3;
            let encoded = engine.encode(bytes.get(..full_groups * 3).unwrap_or_default());
            // Characters that hold bits of the leading filler bytes.
            let skip = (lead * 8).div_ceil(6);
            if let Some(fragment) = encoded.get(skip..) {
                if fragment.len() >= MIN_BASE64_FRAGMENT_LEN {
                    forms.push(fragment.to_string());
                }
            }
        }
    }
    forms
}

/// `s` as JSON and Python's `json.dumps` write it inside a string, and as
/// an echo that quotes such a string writes it again (JSON in JSON), each
/// also with `/` escaped as `\/`.
fn escaped_forms(s: &str) -> Vec<String> {
    let json = |t: &str| unquoted(serde_json::to_string(t).unwrap_or_default());
    let ascii = |t: &str| unquoted(crate::json_canon::to_ascii_string(&Value::String(t.to_string())));
    let mut out = Vec::new();
    for once in [json(s), ascii(s)] {
        for form in [json(&once), ascii(&once), once] {
            out.push(form.replace('/', "\\/"));
            out.push(form);
        }
    }
    out
}

/// Every form of `s` that is searched for in a text as it is (see the
/// module documentation), `s` itself first; and the forms searched for in
/// its decoded views (`s`, what a URL makes of it, its base64).
fn forms(s: &str) -> (Vec<String>, Vec<Vec<u8>>) {
    let percent: String = url::form_urlencoded::byte_serialize(s.as_bytes()).collect();
    // What a URL makes of `s` (also of its pieces around `#` and `?`).
    let mut bases = vec![
        s.to_string(),
        url_path_form(s),
        // The URL parser drops tabs and line breaks everywhere, and makes
        // `\\` a `/` in paths only.
        s.replace(['\t', '\n', '\r'], ""),
        s.replace('\\', "/"),
    ];
    for piece in s.split(['#', '?']).filter(|p| p.len() < s.len()) {
        bases.push(piece.to_string());
        bases.push(url_path_form(piece));
    }
    bases.extend(base64_forms(s));
    let long_enough = |f: &String| f == s || f.chars().count() >= MIN_ENV_SECRET_LEN;
    let mut all = vec![s.to_string(), percent.replace('+', "%20"), percent];
    // Escaped forms in the text as it is; the decoded views (escapes undone)
    // find the others.
    all.extend(escaped_forms(s));
    all.extend(bases.iter().cloned());
    let all = all.into_iter().filter(long_enough).collect();
    // A view decodes the `%XX` that `s` holds itself too (the URL parser
    // keeps them): each base also as decoded bytes.
    let decoded = bases
        .into_iter()
        .filter(long_enough)
        .flat_map(|b| {
            let bytes = percent_decode(b.as_bytes(), &[], false).0;
            [b.into_bytes(), bytes]
        })
        .collect();
    (all, decoded)
}

/// One percent-decoding of `text`, with the span of the original each
/// decoded byte came from (`spans` gives the spans of `text`'s own bytes).
fn percent_decode(
    text: &[u8],
    spans: &[(usize, usize)],
    plus_as_space: bool,
) -> (Vec<u8>, Vec<(usize, usize)>) {
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(text.len());
    let mut out_spans = Vec::with_capacity(text.len());
    let mut i = 0;
    while let Some(&b) = text.get(i) {
        let pair = (
            text.get(i + 1).copied().and_then(hex),
            text.get(i + 2).copied().and_then(hex),
        );
        match (b, pair) {
            (b'%', (Some(h), Some(l))) => {
                out.push((h * 16 + l) as u8);
                let start = spans.get(i).map_or(i, |s| s.0);
                let end = spans.get(i + 2).map_or(i + 3, |s| s.1);
                out_spans.push((start, end));
                i += 3;
            }
            _ => {
                out.push(if plus_as_space && b == b'+' { b' ' } else { b });
                out_spans.push(spans.get(i).copied().unwrap_or((i, i + 1)));
                i += 1;
            }
        }
    }
    (out, out_spans)
}

/// One JSON-unescaping of `text` (`\\`, `\"`, `\/`, `\b`, `\f`, `\n`,
/// `\r`, `\t`, `\uXXXX` with surrogate pairs), with spans as for
/// [`percent_decode`]; anything else is kept as it is.
fn json_unescape(text: &[u8], spans: &[(usize, usize)]) -> (Vec<u8>, Vec<(usize, usize)>) {
    let span = |from: usize, to: usize| {
        (
            spans.get(from).map_or(from, |s| s.0),
            spans.get(to - 1).map_or(to, |s| s.1),
        )
    };
    let hex4 = |at: usize| -> Option<u32> {
        let digits = text.get(at..at + 4)?;
        let digits = std::str::from_utf8(digits).ok()?;
        u32::from_str_radix(digits, 16).ok()
    };
    let mut out = Vec::with_capacity(text.len());
    let mut out_spans = Vec::with_capacity(text.len());
    let mut i = 0;
    while let Some(&b) = text.get(i) {
        let simple = match (b, text.get(i + 1)) {
            (b'\\', Some(b'\\')) => Some(b'\\'),
            (b'\\', Some(b'"')) => Some(b'"'),
            (b'\\', Some(b'/')) => Some(b'/'),
            (b'\\', Some(b'b')) => Some(0x08),
            (b'\\', Some(b'f')) => Some(0x0c),
            (b'\\', Some(b'n')) => Some(b'\n'),
            (b'\\', Some(b'r')) => Some(b'\r'),
            (b'\\', Some(b't')) => Some(b'\t'),
            _ => None,
        };
        if let Some(c) = simple {
            out.push(c);
            out_spans.push(span(i, i + 2));
            i += 2;
            continue;
        }
        if b == b'\\' && text.get(i + 1) == Some(&b'u') {
            let (c, len) = match hex4(i + 2) {
                Some(hi @ 0xD800..=0xDBFF) => match (text.get(i + 6..i + 8), hex4(i + 8)) {
                    (Some(b"\\u"), Some(lo @ 0xDC00..=0xDFFF)) => (
                        char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)),
                        12,
                    ),
                    _ => (None, 0),
                },
                Some(code) => (char::from_u32(code), 6),
                None => (None, 0),
            };
            if let Some(c) = c {
                let mut buf = [0u8; 4];
                for byte in c.encode_utf8(&mut buf).bytes() {
                    out.push(byte);
                    out_spans.push(span(i, i + len));
                }
                i += len;
                continue;
            }
        }
        out.push(b);
        out_spans.push(spans.get(i).copied().unwrap_or((i, i + 1)));
        i += 1;
    }
    (out, out_spans)
}

/// Start offsets of `needle` in `haystack`.
fn find_all(haystack: &[u8], needle: &[u8]) -> Vec<usize> {
    if let (Ok(h), Ok(n)) = (std::str::from_utf8(haystack), std::str::from_utf8(needle)) {
        if n.is_empty() {
            return Vec::new();
        }
        return h.match_indices(n).map(|(at, _)| at).collect();
    }
    let Some(&first) = needle.first() else {
        return Vec::new();
    };
    let mut found = Vec::new();
    let mut i = 0;
    while i + needle.len() <= haystack.len() {
        if haystack.get(i) == Some(&first) && haystack.get(i..i + needle.len()) == Some(needle) {
            found.push(i);
            i += needle.len();
        } else {
            i += 1;
        }
    }
    found
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
            if s.is_empty() || self.secrets.iter().any(|known| known == s) {
                continue;
            }
            self.secrets.push(s.to_string());
            let (all, decoded) = forms(s);
            for form in all {
                if !self.needles.contains(&form) {
                    self.needles.push(form);
                }
            }
            for form in decoded {
                if !self.decoded_needles.contains(&form) {
                    self.decoded_needles.push(form);
                }
            }
        }
        self.needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
        self.decoded_needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
    }

    /// Does `text` hold a known secret in any form?
    pub fn finds(&self, text: &str) -> bool {
        self.text(text) != text
    }

    /// `text` with every secret, in every form, replaced by [`REDACTED`].
    pub fn text(&self, text: &str) -> String {
        if self.needles.is_empty() {
            return text.to_string();
        }
        // Every match of every form, in the text as it is and in its
        // decoded views, is collected first and replaced once: replacing one
        // secret must not break the match of another that overlaps it.
        let plain = text;
        let mut hits: Vec<(usize, usize)> = Vec::new();
        for n in &self.needles {
            hits.extend(plain.match_indices(n.as_str()).map(|(at, m)| (at, at + m.len())));
        }
        // Compare after decoding: collect the spans of the text whose
        // decodings hold a secret, then replace them. Views: JSON escapes
        // undone 0 to 3 times, each then percent-decoded 0 to 2 times
        // (`+` kept, or read as a space).
        let mut json_view = plain.as_bytes().to_vec();
        let mut json_spans: Vec<(usize, usize)> = (0..json_view.len()).map(|i| (i, i + 1)).collect();
        for json_level in 0..=JSON_LEVELS {
            if json_level > 0 {
                if !json_view.contains(&b'\\') {
                    break;
                }
                let (unescaped, spans) = json_unescape(&json_view, &json_spans);
                if unescaped == json_view {
                    break;
                }
                (json_view, json_spans) = (unescaped, spans);
                self.search(&json_view, &json_spans, &mut hits);
            }
            for plus_as_space in [false, true] {
                let (mut view, mut spans) = (json_view.clone(), json_spans.clone());
                for _ in 0..DECODE_LEVELS {
                    if !(view.contains(&b'%') || plus_as_space && view.contains(&b'+')) {
                        break;
                    }
                    let (decoded, decoded_spans) = percent_decode(&view, &spans, plus_as_space);
                    if decoded == view {
                        break;
                    }
                    self.search(&decoded, &decoded_spans, &mut hits);
                    (view, spans) = (decoded, decoded_spans);
                }
            }
        }
        if hits.is_empty() {
            return plain.to_string();
        }
        hits.sort();
        let mut merged: Vec<(usize, usize)> = Vec::new();
        for (s, e) in hits {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        let mut out = String::with_capacity(plain.len());
        let mut at = 0;
        for (s, e) in merged {
            if !plain.is_char_boundary(s) || !plain.is_char_boundary(e) || s < at {
                continue;
            }
            out.push_str(plain.get(at..s).unwrap_or_default());
            out.push_str(REDACTED);
            at = e;
        }
        out.push_str(plain.get(at..).unwrap_or_default());
        out
    }

    /// Where the decoded-view needles occur in `view`: their spans in the
    /// original text.
    fn search(&self, view: &[u8], spans: &[(usize, usize)], hits: &mut Vec<(usize, usize)>) {
        for n in &self.decoded_needles {
            for at in find_all(view, n) {
                let start = spans.get(at).map(|s| s.0);
                let end = spans.get(at + n.len() - 1).map(|s| s.1);
                if let (Some(start), Some(end)) = (start, end) {
                    hits.push((start, end));
                }
            }
        }
    }

    /// Every string inside `v`, keys included, redacted.
    pub fn value(&self, v: &Value) -> Value {
        match v {
            Value::String(s) => Value::String(self.text(s)),
            Value::Array(items) => Value::Array(items.iter().map(|i| self.value(i)).collect()),
            Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (self.text(k), self.value(v))).collect()),
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
                        (self.text(k), shown)
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

    /// Every form the URL parser, `@uri`, `@json`, `@base64` (standard and
    /// URL-safe) and Basic auth make of a secret with `/ + = : @ % # \\`,
    /// spaces, tabs and dot segments is found.
    #[test]
    fn every_encoding_of_a_secret_is_found() {
        use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
        let secrets = [
            "ghp-a/b c-SECRET",
            "k+e=y:u@h;o,s!t'z",
            "pc%41t#frag-SECRET",
            "back\\slash\tTAB-SECRET",
            "x/../DOTTED-SECRET/./end",
            "plainSECRETvalue",
            "é-ünï/cödé SECRET",
        ];
        for secret in secrets {
            let r = Redactor::new([secret]);
            let mut url = url::Url::parse("http://h.example/hook/").unwrap();
            let path = format!("http://h.example/hook/{secret}/x");
            let mut shown: Vec<String> = Vec::new();
            if let Ok(u) = url::Url::parse(&path) {
                shown.push(u.to_string());
                shown.push(u.path().to_string());
            }
            url.query_pairs_mut().append_pair("q", secret);
            shown.push(url.to_string());
            let mut frag = url::Url::parse("http://h.example/").unwrap();
            frag.set_fragment(Some(secret));
            shown.push(frag.to_string());
            let mut user = url::Url::parse("http://h.example/").unwrap();
            let _ = user.set_password(Some(secret));
            let _ = user.set_username(secret);
            shown.push(user.to_string());
            let uri: String = secret
                .bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect();
            let lower: String = secret
                .bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02x}")
                    }
                })
                .collect();
            shown.push(uri.clone());
            shown.push(lower);
            shown.push(url::form_urlencoded::byte_serialize(uri.as_bytes()).collect());
            shown.push(serde_json::to_string(secret).unwrap());
            shown.push(crate::json_canon::to_ascii_string(&Value::String(secret.into())));
            shown.push(STANDARD.encode(secret));
            shown.push(URL_SAFE.encode(secret));
            shown.push(STANDARD_NO_PAD.encode(secret));
            shown.push(URL_SAFE_NO_PAD.encode(secret));
            for user in ["u", "us", "use", "user"] {
                shown.push(format!("Basic {}", STANDARD.encode(format!("{user}:{secret}"))));
                shown.push(URL_SAFE.encode(format!("{user}:{secret}:tail")));
            }
            for text in shown {
                let out = r.text(&format!("before {text} after"));
                for leak in [
                    "SECRET", "DOTTED", "TAB-", "frag", "ghp-a", "k+e=y", "plainSEC", "c%C3%B6",
                ] {
                    if secret.contains(leak) || secret.contains("cöd") && leak == "c%C3%B6" {
                        assert!(
                            !out.contains(leak),
                            "{secret:?} leaks as {leak} in {out} (from {text})"
                        );
                    }
                }
                assert!(out.contains(REDACTED), "{secret:?} not found in {text}");
                assert!(out.starts_with("before ") && out.ends_with(" after"), "{out}");
            }
        }
    }

    #[test]
    fn ordinary_text_is_left_alone() {
        let r = Redactor::new(["ghp-a/b c-SECRET"]);
        for text in ["status 500: a/b c", "http://h/hook/x?q=a+b%20c", "QUJD", "100%"] {
            assert_eq!(r.text(text), text);
        }
        assert!(r.finds("http://h/ghp-a/b%20c-SECRET"));
        assert!(!r.finds("http://h/ghp-a/"));
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
