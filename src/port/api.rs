//! Port's typed endpoints, beside the run calls of [`PortCall`](super::PortCall):
//! claiming and acking polled runs (SPEC §2.2), the Kafka credentials
//! (SPEC §2.1) and the streamer name recorded on the organization. Request
//! bodies are serde types; answers are read leniently (a field of another
//! type counts as missing), as the agent always has.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::{Endpoint, PortClient, PortError};
use crate::secret::Secret;

/// The installation id Port's polling API expects.
const INSTALLATION_ID: &str = "_PORT_EXEC_AGENT";

/// The body of a claim (`installationId`, `limit`, and for action runs
/// `invocationMethod`), in this order.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ClaimRequest {
    installation_id: &'static str,
    limit: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    invocation_method: Option<&'static str>,
}

/// The body of an action-run ack.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AckRunsRequest<'a> {
    run_ids: [&'a str; 1],
}

/// The body of a node-run ack.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AckNodeRunRequest<'a> {
    node_run_identifier: &'a str,
}

/// What Port answered to an ack.
#[derive(Debug, Clone, PartialEq)]
pub struct Acked {
    /// Port confirmed the ack (`ackedCount` above 0, or `acked: true`).
    pub confirmed: bool,
    /// The answer, for the log when Port did not confirm.
    pub answer: Value,
}

/// The brokers and credentials of Port's Kafka, from `/v1/kafka-credentials`.
#[derive(Debug, Clone)]
pub struct KafkaCredentials {
    /// Broker addresses (never empty).
    pub brokers: Vec<String>,
    /// SASL user name.
    pub username: Option<String>,
    /// SASL password.
    pub password: Option<Secret>,
}

fn to_json(body: &impl Serialize) -> Value {
    // A struct of strings and numbers always serialises.
    serde_json::to_value(body).unwrap_or(Value::Null)
}

/// How deep a run (or a Kafka message) may nest: serde_json's limit, the
/// same on both transports.
pub const MAX_NESTING: usize = 128;

/// One item of a claim answer.
#[derive(Debug, Clone, PartialEq)]
pub enum ClaimedItem {
    /// The item, as JSON.
    Run(Value),
    /// An item that is valid JSON but cannot be read as a run (nested
    /// deeper than [`MAX_NESTING`] levels): its id (`id`, or `identifier`
    /// for node runs) when that can be read, and why.
    Unreadable {
        /// `id` or `identifier`.
        id: Option<String>,
        /// The parse error.
        error: String,
    },
}

/// The ids of a claimed item, read without reading the rest.
#[derive(Deserialize)]
struct ItemIds {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    identifier: Option<String>,
}

/// The items of the list named `key` in a claim answer. An answer that is
/// not JSON is an error; one without that list has no items; each item is
/// read on its own, so that one unreadable run does not hide the others.
/// (serde_json skips over a raw value without a nesting limit.)
fn claimed_items(call: &str, text: &str, key: &str) -> Result<Vec<ClaimedItem>, PortError> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let top = match serde_json::from_str::<HashMap<String, &RawValue>>(text) {
        Ok(top) => top,
        Err(e) => {
            return match serde_json::from_str::<&RawValue>(text) {
                // JSON, but not an object: no runs, as before.
                Ok(_) => Ok(Vec::new()),
                Err(_) => Err(PortError {
                    call: call.to_string(),
                    message: format!("the answer ({} bytes) is not JSON: {e}", text.len()),
                    permanent: false,
                    ..PortError::default()
                }),
            };
        }
    };
    let Some(list) = top
        .get(key)
        .and_then(|raw| serde_json::from_str::<Vec<&RawValue>>(raw.get()).ok())
    else {
        return Ok(Vec::new());
    };
    Ok(list
        .into_iter()
        .map(|raw| match serde_json::from_str::<Value>(raw.get()) {
            Ok(run) => ClaimedItem::Run(run),
            Err(e) => {
                let ids = serde_json::from_str::<ItemIds>(raw.get()).ok();
                let id = ids.and_then(|i| if key == "nodeRuns" { i.identifier } else { i.id });
                let error = if e.to_string().contains("recursion limit") {
                    format!("nested deeper than {MAX_NESTING} levels")
                } else {
                    e.to_string()
                };
                ClaimedItem::Unreadable { id, error }
            }
        })
        .collect())
}

impl PortClient {
    /// `POST /v1/actions/runs/claim-pending`: at most `limit` pending action
    /// runs of the webhook invocation method (the raw items of `runs`).
    pub async fn claim_runs(&self, limit: u32) -> Result<Vec<ClaimedItem>, PortError> {
        let body = ClaimRequest {
            installation_id: INSTALLATION_ID,
            limit,
            invocation_method: Some("WEBHOOK"),
        };
        let route = Endpoint::ClaimRuns.route("");
        let answer = self.call_text(&route, Some(&to_json(&body))).await?;
        claimed_items(&route.to_string(), &answer, "runs")
    }

    /// `POST /v1/workflows/runs/claim-pending`: at most `limit` pending
    /// workflow node runs (the raw items of `nodeRuns`).
    pub async fn claim_node_runs(&self, limit: u32) -> Result<Vec<ClaimedItem>, PortError> {
        let body = ClaimRequest {
            installation_id: INSTALLATION_ID,
            limit,
            invocation_method: None,
        };
        let route = Endpoint::ClaimNodeRuns.route("");
        let answer = self.call_text(&route, Some(&to_json(&body))).await?;
        claimed_items(&route.to_string(), &answer, "nodeRuns")
    }

    /// `PATCH /v1/actions/runs/ack` for one action run.
    pub async fn ack_run(&self, run_id: &str) -> Result<Acked, PortError> {
        let body = to_json(&AckRunsRequest { run_ids: [run_id] });
        let answer = self.call(&Endpoint::AckRun.route(""), Some(&body)).await?;
        let confirmed = answer
            .get("ackedCount")
            .and_then(Value::as_u64)
            .is_some_and(|n| n > 0);
        Ok(Acked { confirmed, answer })
    }

    /// `PATCH /v1/workflows/runs/ack` for one node run.
    pub async fn ack_node_run(&self, run_id: &str) -> Result<Acked, PortError> {
        let body = to_json(&AckNodeRunRequest {
            node_run_identifier: run_id,
        });

        let answer = self.call(&Endpoint::AckNodeRun.route(""), Some(&body)).await?;
        let confirmed = answer.get("acked").and_then(Value::as_bool) == Some(true);
        Ok(Acked { confirmed, answer })
    }

    /// `GET /v1/kafka-credentials`: the brokers and SASL credentials of
    /// Port's Kafka for this organisation.
    pub async fn kafka_credentials(&self) -> Result<KafkaCredentials, PortError> {
        let route = Endpoint::KafkaCredentials.route("");
        let answer = self.call(&route, None).await?;
        let creds = &answer["credentials"];
        let brokers: Vec<String> = creds["brokers"]
            .as_array()
            .map(|b| b.iter().filter_map(Value::as_str).map(str::to_string).collect())
            .unwrap_or_default();
        if brokers.is_empty() {
            return Err(PortError {
                call: route.to_string(),
                message: "the answer has no brokers".into(),
                permanent: true,
                ..PortError::default()
            });
        }
        Ok(KafkaCredentials {
            brokers,
            username: creds["username"].as_str().map(str::to_string),
            password: creds["password"].as_str().map(Secret::new),
        })
    }

    /// `PATCH /v1/organization`: record which streamer the agent uses
    /// (`portAgentStreamerName`, `KAFKA` or `POLLING`).
    pub async fn record_streamer(&self, streamer: &str) -> Result<(), PortError> {
        let body = json!({"settings": {"portAgentStreamerName": streamer}});
        self.call(&Endpoint::Organization.route(""), Some(&body))
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_bodies_are_the_python_agents_byte_for_byte() {
        let claim = ClaimRequest {
            installation_id: INSTALLATION_ID,
            limit: 7,
            invocation_method: Some("WEBHOOK"),
        };
        assert_eq!(
            to_json(&claim).to_string(),
            r#"{"installationId":"_PORT_EXEC_AGENT","limit":7,"invocationMethod":"WEBHOOK"}"#
        );
        let claim = ClaimRequest {
            invocation_method: None,
            ..claim
        };
        assert_eq!(
            to_json(&claim).to_string(),
            r#"{"installationId":"_PORT_EXEC_AGENT","limit":7}"#
        );
        assert_eq!(
            to_json(&AckRunsRequest { run_ids: ["r_1"] }).to_string(),
            r#"{"runIds":["r_1"]}"#
        );
        assert_eq!(
            to_json(&AckNodeRunRequest {
                node_run_identifier: "wfnr_1"
            })
            .to_string(),
            r#"{"nodeRunIdentifier":"wfnr_1"}"#
        );
    }

    fn items(text: &str, key: &str) -> Vec<ClaimedItem> {
        claimed_items("POST /claim", text, key).expect("readable")
    }

    #[test]
    fn claim_answers_are_read_leniently() {
        assert_eq!(items(r#"{"runs": [{"id": "r_1"}]}"#, "runs").len(), 1);
        assert!(items(r#"{"runs": "x"}"#, "runs").is_empty());
        assert!(items("null", "nodeRuns").is_empty());
        assert!(items("", "runs").is_empty());
    }

    #[test]
    fn an_answer_that_is_not_json_is_an_error_that_says_its_size() {
        let e = claimed_items("POST /claim", r#"{"runs": [{"id": "r_1"}"#, "runs").expect_err("cut short");
        assert!(
            e.message.contains("23 bytes") && e.message.contains("not JSON"),
            "{e}"
        );
        assert!(!e.permanent);
    }

    #[test]
    fn one_run_nested_too_deep_does_not_hide_the_others() {
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        let text = format!(
            r#"{{"runs": [{{"id": "r_deep", "payload": {{"body": {deep}}}}}, {{"id": "r_ok", "payload": {{}}}}]}}"#
        );
        let got = items(&text, "runs");
        assert_eq!(
            got[0],
            ClaimedItem::Unreadable {
                id: Some("r_deep".into()),
                error: format!("nested deeper than {MAX_NESTING} levels")
            }
        );
        assert_eq!(got[1], ClaimedItem::Run(json!({"id": "r_ok", "payload": {}})));
        let nodes = format!(r#"{{"nodeRuns": [{{"identifier": "wfnr_deep", "config": {deep}}}]}}"#);
        assert!(matches!(&items(&nodes, "nodeRuns")[0],
            ClaimedItem::Unreadable { id: Some(id), .. } if id == "wfnr_deep"));
    }
}
