//! Messages as Port produces them: action runs, signed with the client
//! secret, with secret inputs encrypted.
//!
//! An implementation independent of the agent's (`port_agent::signature`,
//! `port_agent::json_canon`): Port signs `HMAC-SHA256(secret, "{timestamp}.{message}")`
//! over the message serialised as JavaScript's `JSON.stringify` writes it
//! (compact, keys in order, non-ASCII raw), which is `serde_json`'s compact
//! form with `preserve_order`.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

/// `PORT_CLIENT_SECRET` of the agent in the tests (HMAC key of the
/// messages, AES key of the encrypted fields).
pub const SECRET: &str = "s3cr3t-client-secret-0123456789abcdef";

/// Port's signature of `text` at `timestamp`: `v1,` and the base64 of
/// `HMAC-SHA256(secret, "{timestamp}.{text}")`.
pub fn sign(secret: &str, timestamp: &str, text: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(text.as_bytes());
    let digest = mac.finalize().into_bytes();
    format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(digest))
}

/// Sign `message` as Port does: `X-Port-Signature` and `X-Port-Timestamp`
/// added to `.headers` (created when missing), signed over the message as
/// it was before.
pub fn signed(mut message: Value, secret: &str, ts: u64) -> Value {
    if message.get("headers").is_none() {
        message["headers"] = json!({});
    }
    let sig = sign(secret, &ts.to_string(), &message.to_string());
    let headers = message["headers"].as_object_mut().expect("headers object");
    headers.insert("X-Port-Signature".into(), Value::String(sig));
    headers.insert("X-Port-Timestamp".into(), json!(ts));
    message
}

/// An action-run message for `url`, unsigned.
pub fn action_run(run_id: &str, url: &str, method: &str, synchronized: bool) -> Value {
    json!({
        "action": "deploy_service",
        "resourceType": "run",
        "status": "TRIGGERED",
        "trigger": {"by": {"orgId": "org_1", "userId": "u_1"}, "origin": "UI", "at": "2026-11-01T12:00:00.000Z"},
        "context": {"entity": "svc-a", "blueprint": "microservice", "runId": run_id},
        "payload": {
            "entity": {"identifier": "svc-a", "properties": {"region": "eu-west-1"}},
            "action": {"invocationMethod": {"type": "WEBHOOK", "agent": true, "synchronized": synchronized,
                                            "method": method, "url": url}},
            "properties": {"version": "1.2.3"}
        },
        "headers": {}
    })
}

/// `plaintext` encrypted as Port encrypts secret inputs, with [`SECRET`]'s
/// first 32 bytes (AES-256-GCM, 16-byte IV 00..0f, base64 of IV ‖ sealed).
pub fn encrypt(plaintext: &str) -> String {
    use aes_gcm::aead::consts::U16;
    use aes_gcm::aead::{Aead, KeyInit};
    use aes_gcm::aes::Aes256;
    use aes_gcm::{AesGcm, Nonce};
    let iv: [u8; 16] = core::array::from_fn(|i| i as u8);
    let cipher = AesGcm::<Aes256, U16>::new_from_slice(&SECRET.as_bytes()[..32]).expect("a 32-byte key");
    let sealed = cipher
        .encrypt(Nonce::<U16>::from_slice(&iv), plaintext.as_bytes())
        .expect("AES-GCM encryption of a short text");
    base64::engine::general_purpose::STANDARD.encode([iv.as_slice(), &sealed].concat())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_covers_the_message_before_its_signature_headers() {
        let message = action_run("r_1", "http://127.0.0.1:1/hook", "POST", false);
        let text = message.to_string();
        let s = signed(message, SECRET, 1700000000);
        assert_eq!(s["headers"]["X-Port-Timestamp"], json!(1700000000));
        assert_eq!(
            s["headers"]["X-Port-Signature"],
            json!(sign(SECRET, "1700000000", &text))
        );
        let sig = sign(SECRET, "1700000000", &text);
        assert!(sig.starts_with("v1,") && sig.len() == 3 + 44, "{sig}");
        assert_ne!(sig, sign("another secret", "1700000000", &text));
    }

    #[test]
    fn encryption_is_iv_then_sealed_text_in_base64() {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(encrypt("hunter2"))
            .expect("base64");
        let iv: Vec<u8> = (0..16).collect();
        assert_eq!(&raw[..16], iv.as_slice());
        assert_eq!(
            raw.len(),
            16 + "hunter2".len() + 16,
            "IV, ciphertext, 16-byte tag"
        );
    }
}
