//! `fieldsToDecryptPaths`: AES-256-GCM decryption of message fields (SPEC §6).
//!
//! Port encrypts secret user inputs with the client secret. A value is
//! `base64(IV[16] ‖ ciphertext ‖ tag[16])`, the key the first 32 bytes of
//! `PORT_CLIENT_SECRET`. Decrypted values are secrets: nothing here logs them,
//! and errors never carry them.

use aes_gcm::aead::consts::U16;
use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::aes::Aes256;
use aes_gcm::{AesGcm, Nonce};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::Value;

type Aes256Gcm16 = AesGcm<Aes256, U16>;

const IV_LEN: usize = 16;
const TAG_LEN: usize = 16;

/// Why one field could not be decrypted. Never contains the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecryptError {
    /// The client secret is shorter than the 32 bytes of an AES-256 key.
    #[error("PORT_CLIENT_SECRET is shorter than the 32-byte AES key")]
    KeyTooShort,
    /// The value is not base64.
    #[error("value is not valid base64")]
    Base64,
    /// Fewer bytes than IV and tag need.
    #[error("value is too short to hold an IV and a tag")]
    TooShort,
    /// The tag did not verify (wrong key or tampered value).
    #[error("authentication failed (wrong key or tampered value)")]
    Authentication,
    /// The plaintext is not UTF-8.
    #[error("plaintext is not UTF-8")]
    NotUtf8,
    /// The field holds something other than a string.
    #[error("field is not a string")]
    NotAString,
}

/// Decrypt one base64 value with `secret`.
pub fn decrypt_value(secret: &str, value: &str) -> Result<String, DecryptError> {
    let key = secret.as_bytes().get(..32).ok_or(DecryptError::KeyTooShort)?;
    let raw = B64.decode(value.trim()).map_err(|_| DecryptError::Base64)?;
    if raw.len() < IV_LEN + TAG_LEN {
        return Err(DecryptError::TooShort);
    }
    let cipher = Aes256Gcm16::new_from_slice(key).map_err(|_| DecryptError::KeyTooShort)?;
    let (iv, sealed) = raw.split_at(IV_LEN);
    let plain = cipher
        .decrypt(Nonce::<U16>::from_slice(iv), sealed)
        .map_err(|_| DecryptError::Authentication)?;
    String::from_utf8(plain).map_err(|_| DecryptError::NotUtf8)
}

/// Split a dot path (`payload.properties.token`, `.a.0.b`) into segments.
fn segments(path: &str) -> impl Iterator<Item = &str> {
    path.strip_prefix('.')
        .unwrap_or(path)
        .split('.')
        .filter(|s| !s.is_empty())
}

fn lookup_mut<'a>(root: &'a mut Value, path: &str) -> Option<&'a mut Value> {
    segments(path).try_fold(root, |node, seg| match node {
        Value::Object(map) => map.get_mut(seg),
        Value::Array(items) => seg.parse::<usize>().ok().and_then(move |i| items.get_mut(i)),
        _ => None,
    })
}

/// The result of decrypting a message's fields.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Decrypted {
    /// The plaintexts, so that logs and dry-run output can redact them.
    pub plaintexts: Vec<String>,
    /// Paths that were present but failed, with the reason.
    pub failures: Vec<(String, DecryptError)>,
}

/// Decrypt every path in place. Missing paths are skipped; a failure leaves
/// the field unchanged and is returned (compat: the run goes on).
pub fn decrypt_fields(message: &mut Value, paths: &[String], secret: &str) -> Decrypted {
    let mut out = Decrypted::default();
    for path in paths {
        let Some(field) = lookup_mut(message, path) else {
            continue;
        };
        let result = match field.as_str() {
            Some(s) => decrypt_value(secret, s),
            None => Err(DecryptError::NotAString),
        };
        match result {
            Ok(plain) => {
                *field = Value::String(plain.clone());
                if !plain.is_empty() {
                    out.plaintexts.push(plain);
                }
            }
            Err(e) => out.failures.push((path.clone(), e)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SECRET: &str = "0123456789abcdef0123456789abcdefTAIL-IGNORED";
    const TOKEN: &str = "AAECAwQFBgcICQoLDA0OD4Gu4v+8ErVwrtGa7NB7dYAe5BvLu7BJp0sM/pjrDXk=";

    #[test]
    fn paths_walk_objects_and_arrays_with_optional_leading_dot() {
        let mut m = json!({"payload": {"items": [{"t": TOKEN}], "p": {"t": TOKEN}}});
        let paths = vec![
            ".payload.p.t".to_string(),
            "payload.items.0.t".into(),
            "payload.nope".into(),
        ];
        let d = decrypt_fields(&mut m, &paths, SECRET);
        assert!(d.failures.is_empty());
        assert_eq!(m["payload"]["p"]["t"], "ghp_token_value");
        assert_eq!(m["payload"]["items"][0]["t"], "ghp_token_value");
        assert_eq!(d.plaintexts, vec!["ghp_token_value"; 2]);
    }

    #[test]
    fn a_failure_leaves_the_field_unchanged() {
        let mut m = json!({"a": "%%%", "b": 5});
        let d = decrypt_fields(&mut m, &["a".into(), "b".into()], SECRET);
        assert_eq!(m, json!({"a": "%%%", "b": 5}));
        assert_eq!(
            d.failures,
            vec![
                ("a".into(), DecryptError::Base64),
                ("b".into(), DecryptError::NotAString)
            ]
        );
    }
}
