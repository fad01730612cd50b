//! The messages the benchmark produces and the mapping the agent runs.

use serde_json::{json, Value};

use testkit::message::signed;

/// `PORT_CLIENT_SECRET` of the agent under test (HMAC key of the messages).
pub const SECRET: &str = "bench-client-secret-0123456789abcdef-0123";

/// A typical mapping of 7 jq expressions: `enabled`, two headers, a body of
/// four fields. The URL and method come from the invocation method (the fake
/// target). `inputs` forwards `payload.properties`, which carries the
/// produce time.
pub const MAPPING_TYPICAL: &str = r#"[{
  "enabled": ".payload.action.invocationMethod.type == \"WEBHOOK\"",
  "headers": {
    "Authorization": "\"Bearer \" + env.DEPLOYER_TOKEN",
    "X-Port-Run-Id": ".context.runId"
  },
  "body": {
    "action": ".action",
    "runId": ".context.runId",
    "entity": ".payload.entity.identifier",
    "inputs": ".payload.properties"
  }
}]"#;

/// The whole message goes to the target unchanged.
pub const MAPPING_PASSTHROUGH: &str = r#"[{"enabled": true}]"#;

/// Size of a produced message (compact JSON, signature headers included).
pub const MESSAGE_BYTES: usize = 1024;

/// Run `index`'s message, unsigned: about [`MESSAGE_BYTES`] once signed.
pub fn action_run(index: usize, target_url: &str, synchronized: bool, produced_at_ns: Option<u64>) -> Value {
    let mut m = json!({
        "action": "deploy_service",
        "resourceType": "run",
        "status": "TRIGGERED",
        "trigger": {"by": {"orgId": "org_1", "userId": "u_1", "user": {"email": "dev@example.com"}},
                    "origin": "UI", "at": "2026-11-01T12:00:00.000Z"},
        "context": {"entity": "svc-a", "blueprint": "microservice", "runId": format!("r{index}")},
        "payload": {
            "entity": {"identifier": "svc-a", "title": "Service A", "blueprint": "microservice",
                       "properties": {"region": "eu-west-1", "tier": "gold", "owner": "team-platform"}},
            "action": {"identifier": "deploy_service", "invocationMethod": {"type": "WEBHOOK", "agent": true,
                       "synchronized": synchronized, "method": "POST", "url": target_url}},
            "properties": {"version": "1.2.3", "environment": "production", "replicas": 3,
                           "producedAtNs": produced_at_ns.unwrap_or(0), "notes": ""}
        },
        "headers": {}
    });
    // Pad to the size once signed (the run index and URL vary by a few bytes;
    // the signature headers add about 90).
    let missing = MESSAGE_BYTES.saturating_sub(m.to_string().len() + 90);
    m["payload"]["properties"]["notes"] = Value::String("n".repeat(missing));
    m
}

/// Sign as Port does (testkit's signing) and serialise as Port's producer
/// writes it (compact, keys in order).
pub fn signed_bytes(message: Value, timestamp: u64) -> Vec<u8> {
    signed(message, SECRET, timestamp).to_string().into_bytes()
}

/// The body [`MAPPING_TYPICAL`] builds for run `run_id` (what the
/// reference client sends to the target).
pub fn mapped_body(run_id: &str, produced_at_ns: Option<u64>) -> Value {
    let index = run_id.trim_start_matches('r').parse().unwrap_or(0);
    let m = action_run(index, "http://127.0.0.1/", false, produced_at_ns);
    json!({
        "action": m["action"],
        "runId": m["context"]["runId"],
        "entity": m["payload"]["entity"]["identifier"],
        "inputs": m["payload"]["properties"],
    })
}
