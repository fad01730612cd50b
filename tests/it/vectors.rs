//! Every case in `../shared/vectors/` (signatures, decryption, jq), loaded
//! from the files so that new cases are picked up without code changes.

use std::path::PathBuf;

use port_agent::decrypt::{decrypt_value, DecryptError};
use port_agent::json_canon::to_raw_string;
use port_agent::mapping::jq::{from_val, to_val, Budget, JqEnv, JqProgram};
use port_agent::signature::{self, SignatureError};
use serde_json::Value;

fn vectors(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/vectors")
        .join(name);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

fn cases<'a>(v: &'a Value, key: &str) -> &'a Vec<Value> {
    let cases = v[key].as_array().unwrap_or_else(|| panic!("no '{key}' array"));
    assert!(!cases.is_empty(), "'{key}' has no cases");
    cases
}

#[test]
fn incoming_signatures() {
    let v = vectors("signature.json");
    let secret = v["secret"].as_str().unwrap();
    for case in cases(&v, "incoming") {
        let name = case["name"].as_str().unwrap();
        let mut message = case["message"].clone();
        let gitlab = message.pointer("/payload/action/invocationMethod/type") == Some(&Value::from("GITLAB"));
        let result = signature::verify_incoming(&mut message, secret, gitlab);
        match case["expect"].as_str().unwrap() {
            "valid" => assert_eq!(result, Ok(()), "{name}"),
            "invalid" => assert_eq!(result, Err(SignatureError::Mismatch), "{name}"),
            "missing" => assert_eq!(result, Err(SignatureError::Missing), "{name}"),
            other => panic!("{name}: unknown expectation {other}"),
        }
        if let Some(text) = case["signed_text"].as_str() {
            if result.is_ok() {
                assert_eq!(to_raw_string(&message), text, "{name}: canonical text");
            }
        }
    }
}

#[test]
fn outgoing_signatures() {
    let v = vectors("signature.json");
    let secret = v["secret"].as_str().unwrap();
    for case in cases(&v, "outgoing") {
        let name = case["name"].as_str().unwrap();
        let ts: u64 = case["timestamp"].as_str().unwrap().parse().unwrap();
        let signed = signature::sign_outgoing(secret, ts, &case["body"]);
        assert_eq!(signed.body, case["signed_text"].as_str().unwrap(), "{name}: body");
        assert_eq!(
            signed.signature,
            case["signature"].as_str().unwrap(),
            "{name}: signature"
        );
        assert_eq!(signed.timestamp, case["timestamp"].as_str().unwrap(), "{name}");
    }
}

#[test]
fn decryption() {
    let v = vectors("decrypt.json");
    for case in cases(&v, "cases") {
        let name = case["name"].as_str().unwrap();
        let result = decrypt_value(case["secret"].as_str().unwrap(), case["value"].as_str().unwrap());
        if let Some(plain) = case["expect"].get("plaintext") {
            assert_eq!(result.as_deref(), Ok(plain.as_str().unwrap()), "{name}");
        } else {
            let want = match case["expect"]["error"].as_str().unwrap() {
                "authentication" => DecryptError::Authentication,
                "too short" => DecryptError::TooShort,
                "key" => DecryptError::KeyTooShort,
                "base64" => DecryptError::Base64,
                other => panic!("{name}: unknown error kind {other}"),
            };
            assert_eq!(result, Err(want), "{name}");
        }
    }
}

#[test]
fn jq_first_outputs() {
    let v = vectors("jq.json");
    let env = JqEnv::new(
        v["env"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string())),
    );
    let mut failures = Vec::new();
    for case in cases(&v, "cases") {
        let expr = case["expr"].as_str().unwrap();
        let input = &v[case["input"].as_str().unwrap()];
        let program = match JqProgram::compile(expr) {
            Ok(p) => p,
            Err(e) => {
                failures.push(format!("{expr}: does not compile: {e}"));
                continue;
            }
        };
        let got = program.first(&to_val(input), &env, Budget::default());
        if case.get("error").is_some_and(|e| e != &Value::Bool(false)) {
            if got.is_ok() {
                failures.push(format!("{expr}: expected an error, got {got:?}"));
            }
            continue;
        }
        let want = case["outputs"]
            .as_array()
            .and_then(|o| o.first())
            .cloned()
            .unwrap_or(Value::Null);
        match got {
            Ok(out) => {
                let out = out.map(|o| from_val(&o).unwrap()).unwrap_or(Value::Null);
                if to_raw_string(&out) != to_raw_string(&want) {
                    failures.push(format!(
                        "{expr}: got {} want {}",
                        to_raw_string(&out),
                        to_raw_string(&want)
                    ));
                }
            }
            Err(e) => failures.push(format!("{expr}: error {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} jq vector(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// testkit signs messages with its own implementation (HMAC-SHA256 over
/// serde_json's compact form); the agent's verification accepts them, also
/// for text that JSON escapes (quotes, backslashes, control characters) or
/// writes raw (non-ASCII, U+2028).
#[test]
fn testkit_signatures_verify_with_the_agent() {
    let secret = testkit::message::SECRET;
    let mut run = testkit::message::action_run("r_1", "http://127.0.0.1:1/hook", "POST", false);
    run["payload"]["properties"]["text"] = Value::from("\"q\" \\ \u{1} tab\t é ✓ \u{2028} 😀");
    let mut message = testkit::message::signed(run, secret, 1_700_000_000);
    assert_eq!(signature::verify_incoming(&mut message, secret, false), Ok(()));
    let mut tampered = testkit::message::signed(
        testkit::message::action_run("r_2", "http://127.0.0.1:1/hook", "POST", false),
        secret,
        1_700_000_000,
    );
    tampered["context"]["runId"] = Value::from("r_3");
    assert_eq!(
        signature::verify_incoming(&mut tampered, secret, false),
        Err(SignatureError::Mismatch)
    );
}

/// testkit encrypts with its own AES-256-GCM code; the agent decrypts it.
#[test]
fn testkit_encryption_decrypts_with_the_agent() {
    for plaintext in ["hunter2", "", "é ✓ 😀 \"quoted\""] {
        let sealed = testkit::message::encrypt(plaintext);
        assert_eq!(
            decrypt_value(testkit::message::SECRET, &sealed),
            Ok(plaintext.to_string())
        );
    }
}
