//! Message signatures (SPEC §4).
//!
//! Port signs each Kafka message with the client secret; the agent verifies
//! it before doing anything, and signs every outgoing request the same way so
//! the target can verify the agent. Both use
//! `"v1," + base64(HMAC-SHA256(secret, timestamp + "." + json))` and differ
//! only in how the JSON is serialised (see [`crate::json_canon`]).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::json_canon;

/// Header that carries the signature, in messages and outgoing requests.
pub const SIGNATURE_HEADER: &str = "X-Port-Signature";
/// Header that carries the signing timestamp.
pub const TIMESTAMP_HEADER: &str = "X-Port-Timestamp";

/// Why an incoming message did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// `.headers` lacks the signature or the timestamp.
    #[error("message has no X-Port-Signature/X-Port-Timestamp headers")]
    Missing,
    /// The signature does not match the message.
    #[error("message signature does not match its content")]
    Mismatch,
}

/// Compute `"v1," + base64(HMAC-SHA256(secret, timestamp "." text))`.
pub fn sign(secret: &str, timestamp: &str, text: &str) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        // HMAC accepts keys of any length; this arm is unreachable.
        Err(_) => return String::new(),
    };
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(text.as_bytes());
    format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
}

/// The timestamp as it was written: a number's digits or a string's content.
fn timestamp_text(value: &Value) -> Option<String> {
    match value {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

/// Strip the signature headers from `message` in place and return the
/// signature and timestamp that were there.
///
/// The `headers` object keeps its position (possibly empty); for invocation
/// type `GITLAB` the whole `headers` key is removed, as Port signs it that way.
/// When either header is missing nothing is changed.
pub fn strip_signature_headers(message: &mut Value, gitlab: bool) -> Option<(String, String)> {
    let headers = message.get_mut("headers")?.as_object_mut()?;
    let signature = headers.get(SIGNATURE_HEADER)?.as_str()?.to_string();
    let timestamp = timestamp_text(headers.get(TIMESTAMP_HEADER)?)?;
    // `shift_remove` keeps the order of the remaining headers.
    headers.shift_remove(SIGNATURE_HEADER);
    headers.shift_remove(TIMESTAMP_HEADER);
    if gitlab {
        if let Some(obj) = message.as_object_mut() {
            obj.shift_remove("headers");
        }
    }
    Some((signature, timestamp))
}

/// Verify an incoming message in place: on success the signature headers are
/// gone from `message` (see [`strip_signature_headers`]).
pub fn verify_incoming(message: &mut Value, secret: &str, gitlab: bool) -> Result<(), SignatureError> {
    let (given, timestamp) = strip_signature_headers(message, gitlab).ok_or(SignatureError::Missing)?;
    let expected = sign(secret, &timestamp, &json_canon::to_raw_string(message));
    if bool::from(expected.as_bytes().ct_eq(given.as_bytes())) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// Headers and body for an outgoing request: the body is the exact string
/// that was signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedBody {
    /// `X-Port-Timestamp` value (Unix seconds).
    pub timestamp: String,
    /// `X-Port-Signature` value.
    pub signature: String,
    /// The serialised body, sent byte for byte.
    pub body: String,
}

/// Serialise `body` the way the Python agent signs it and sign it.
pub fn sign_outgoing(secret: &str, timestamp: u64, body: &Value) -> SignedBody {
    let text = json_canon::to_ascii_string(body);
    let timestamp = timestamp.to_string();
    SignedBody {
        signature: sign(secret, &timestamp, &text),
        timestamp,
        body: text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn missing_headers_leave_the_message_untouched() {
        let mut m = json!({"a": 1, "headers": {"X-Port-Signature": "v1,x"}});
        let before = m.clone();
        assert_eq!(verify_incoming(&mut m, "k", false), Err(SignatureError::Missing));
        assert_eq!(m, before);
        let mut m = json!({"a": 1});
        assert_eq!(verify_incoming(&mut m, "k", false), Err(SignatureError::Missing));
    }

    #[test]
    fn a_signature_from_another_secret_is_a_mismatch() {
        let mut m = json!({"a": 1, "headers": {}});
        let sig = sign("right", "5", &json_canon::to_raw_string(&m));
        m["headers"] = json!({"X-Port-Signature": sig, "X-Port-Timestamp": 5});
        let mut wrong = m.clone();
        assert_eq!(
            verify_incoming(&mut wrong, "wrong", false),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(verify_incoming(&mut m, "right", false), Ok(()));
        assert_eq!(m, json!({"a": 1, "headers": {}}));
    }
}
