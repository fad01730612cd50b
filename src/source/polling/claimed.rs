//! What Port's polling API hands out, as the pipeline will see it: a
//! claimed action run or workflow node run becomes the message the Kafka
//! topic would have carried (SPEC §2.2).

use serde_json::{json, Value};
use tracing::{info, warn};

use crate::port::ClaimedItem;

/// A claimed run, as the pipeline will see it.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedRun {
    /// `r_…` or `wfnr_…`.
    pub id: String,
    /// A workflow node run (acked and failed through the workflow endpoints).
    pub node_run: bool,
    /// The message handed to the pipeline.
    pub message: Value,
    /// `agent` was true.
    pub for_agent: bool,
    /// Port handed the run out, but it cannot be read (nested too deep):
    /// why. Such a run is acked and reported FAILURE, never processed.
    pub unreadable: Option<String>,
}

impl ClaimedRun {
    /// A run whose id could be read but whose body could not.
    pub fn unreadable(id: String, node_run: bool, error: String) -> ClaimedRun {
        ClaimedRun {
            id,
            node_run,
            message: Value::Null,
            for_agent: true,
            unreadable: Some(error),
        }
    }
}

/// Build the message of an action run claimed from
/// `/v1/actions/runs/claim-pending` (SPEC §2.2).
pub fn action_run_message(run: &Value) -> Option<ClaimedRun> {
    let id = run
        .get("id")?
        .as_str()
        .filter(|id| crate::port::is_usable_run_id(id))?
        .to_string();
    let payload = run.get("payload")?.as_object()?;
    let for_agent = payload.get("agent").and_then(Value::as_bool) == Some(true);
    let mut method = payload.clone();
    method.shift_remove("agent");
    method.shift_remove("body");
    let mut message = match payload.get("body") {
        Some(Value::Object(body)) => body.clone(),
        _ => serde_json::Map::new(),
    };
    message.insert(
        "headers".into(),
        payload.get("headers").cloned().unwrap_or_else(|| json!({})),
    );
    set_path(
        &mut message,
        &["payload", "action", "invocationMethod"],
        Value::Object(method),
    );
    set_path(&mut message, &["context", "runId"], Value::String(id.clone()));
    Some(ClaimedRun {
        id,
        node_run: false,
        message: Value::Object(message),
        for_agent,
        unreadable: None,
    })
}

/// Build the message of a node run claimed from
/// `/v1/workflows/runs/claim-pending` (SPEC §2.2).
pub fn node_run_message(run: &Value) -> Option<ClaimedRun> {
    let id = run
        .get("identifier")?
        .as_str()
        .filter(|id| crate::port::is_usable_run_id(id))?
        .to_string();
    let config = run.get("config")?.as_object()?;
    let for_agent = config.get("agent").and_then(Value::as_bool) == Some(true);
    let mut method = config.clone();
    method.shift_remove("agent");
    let message = json!({
        "headers": config.get("headers").cloned().unwrap_or_else(|| json!({})),
        "payload": {"action": {"invocationMethod": Value::Object(method)}},
        "context": {"runId": id, "nodeConfig": Value::Object(config.clone())},
    });
    Some(ClaimedRun {
        id,
        node_run: true,
        message,
        for_agent,
        unreadable: None,
    })
}

/// The runs of a claim answer's items (node runs when `node_runs`) that
/// are ours to process: each run for the agent, and each run that cannot
/// be read but whose id can (to be reported FAILURE). Every item left out
/// is logged with why.
pub fn runs_to_process(items: Vec<ClaimedItem>, node_runs: bool) -> Vec<ClaimedRun> {
    let (key, build): (_, fn(&Value) -> Option<ClaimedRun>) = if node_runs {
        ("nodeRuns", node_run_message)
    } else {
        ("runs", action_run_message)
    };
    let mut runs = Vec::new();
    for item in items {
        let item = match item {
            ClaimedItem::Run(item) => item,
            ClaimedItem::Unreadable { id: Some(id), error } if crate::port::is_usable_run_id(&id) => {
                warn!(run_id = %id, error = %error, "claimed run cannot be read; it will be reported FAILURE");
                runs.push(ClaimedRun::unreadable(id, node_runs, error));
                continue;
            }
            ClaimedItem::Unreadable { error, .. } => {
                warn!(kind = key, error = %error, "claimed item cannot be read and has no usable id; skipped");
                continue;
            }
        };
        match build(&item) {
            Some(run) if run.for_agent => runs.push(run),
            Some(run) => info!(run_id = %run.id, "claimed run is not for the agent; skipped"),
            None => warn!(kind = key, "claimed item without an id or payload; skipped"),
        }
    }
    runs
}

fn set_path(map: &mut serde_json::Map<String, Value>, path: &[&str], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = map;
    for key in parents {
        let slot = cur.entry(key.to_string()).or_insert_with(|| json!({}));
        if !slot.is_object() {
            *slot = json!({});
        }
        let Value::Object(next) = slot else { return };
        cur = next;
    }
    cur.insert(last.to_string(), value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_run_message_follows_the_spec() {
        let run = json!({"id": "r_1", "payload": {
            "type": "WEBHOOK", "url": "http://svc/hook", "agent": true, "synchronized": true,
            "method": "POST", "headers": {"X-A": "1"},
            "body": {"action": {"identifier": "deploy"}, "payload": {"properties": {"v": 1}},
                     "context": {"blueprint": "svc"}}}});
        let claimed = action_run_message(&run).expect("a run");
        assert_eq!(claimed.id, "r_1");
        assert!(claimed.for_agent && !claimed.node_run);
        assert_eq!(
            claimed.message,
            json!({
                "action": {"identifier": "deploy"},
                "payload": {"properties": {"v": 1},
                            "action": {"invocationMethod": {"type": "WEBHOOK", "url": "http://svc/hook",
                                "synchronized": true, "method": "POST", "headers": {"X-A": "1"}}}},
                "context": {"blueprint": "svc", "runId": "r_1"},
                "headers": {"X-A": "1"},
            })
        );
        let not_for_agent = json!({"id": "r_2", "payload": {"agent": false, "body": {}}});
        assert!(!action_run_message(&not_for_agent).expect("a run").for_agent);
        assert_eq!(action_run_message(&json!({"payload": {}})), None);
        for id in ["", ".", ".."] {
            let run = json!({"id": id, "payload": {"agent": true, "body": {}}});
            assert_eq!(action_run_message(&run), None, "{id:?} is not a usable run id");
            let node = json!({"identifier": id, "config": {"agent": true}});
            assert_eq!(node_run_message(&node), None, "{id:?} is not a usable run id");
        }
    }

    #[test]
    fn node_run_message_follows_the_spec() {
        let config = json!({"type": "WEBHOOK", "url": "http://svc/n", "method": "PUT", "agent": true,
                            "headers": {"H": "v"}, "synchronized": false});
        let claimed = node_run_message(&json!({"identifier": "wfnr_1", "config": config})).expect("a run");
        assert!(claimed.node_run && claimed.for_agent);
        assert_eq!(
            claimed.message,
            json!({
                "headers": {"H": "v"},
                "payload": {"action": {"invocationMethod": {"type": "WEBHOOK", "url": "http://svc/n",
                    "method": "PUT", "headers": {"H": "v"}, "synchronized": false}}},
                "context": {"runId": "wfnr_1", "nodeConfig": config},
            })
        );
    }
}
