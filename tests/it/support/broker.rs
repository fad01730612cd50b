//! A real Kafka-protocol broker for tests (tansu, from `testkit`) plus the
//! agent binary as a separate process, and what the Kafka tests of the
//! built binary start from ([`World`]).
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use serde_json::Value;

pub use testkit::agent::{agent_env, AgentProcess};
pub use testkit::net::free_port;
pub use testkit::tansu::{committed_offsets, produce, produce_with, Tansu};
pub use testkit::wait::{blocking, eventually, eventually_some};

use super::{action_run, signed, FakeTarget, SECRET};

/// `n` signed action runs for `url`, spread over the 3 partitions.
pub fn signed_runs(n: usize, url: &str, synchronized: bool) -> Vec<(i32, Value)> {
    (0..n)
        .map(|i| {
            (
                (i % 3) as i32,
                signed(
                    action_run(&format!("r_{i:04}"), url, "POST", synchronized),
                    SECRET,
                    1,
                ),
            )
        })
        .collect()
}

/// A mapping file `[{"enabled": true}]` (every message, the defaults),
/// written by the one helper, [`super::agent::mapping_file`].
pub fn write_mapping(tag: &str) -> std::path::PathBuf {
    super::agent::mapping_file(tag, &serde_json::json!([{"enabled": true}]))
}

/// How many times the target received each run id.
pub fn run_ids(target: &FakeTarget) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for r in target.requests() {
        let id = r.json()["context"]["runId"].as_str().unwrap_or("?").to_string();
        *counts.entry(id).or_insert(0) += 1;
    }
    counts
}

/// A tansu broker with the runs (3 partitions) and change-log topics, the
/// fake Port API and target, and a catch-all mapping file: what the tests of
/// the built binary against Kafka start from.
pub struct World {
    /// The broker, with `org_1.runs` (3 partitions) and `org_1.change.log`.
    pub tansu: Tansu,
    /// The fake Port API.
    pub port: super::FakePort,
    /// The fake target.
    pub target: FakeTarget,
    /// A mapping file `[{"enabled": true}]`.
    pub mapping: PathBuf,
    /// The agent's consumer group.
    pub group: String,
}

impl World {
    /// Start them; `tag` names the mapping file.
    pub async fn start(tag: &str, group: &str) -> World {
        let tansu = Tansu::start();
        tansu.create_topic("org_1.runs", 3).await;
        tansu.create_topic("org_1.change.log", 1).await;
        World {
            tansu,
            port: super::FakePort::start().await,
            target: FakeTarget::start().await,
            mapping: write_mapping(tag),
            group: group.to_string(),
        }
    }

    /// The agent's settings: a 6 s session (tansu hands a dead member's
    /// partitions over once it expires), info logs, plus `extra`.
    pub fn env(&self, extra: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
        let mut all = vec![
            ("KAFKA_CONSUMER_SESSION_TIMEOUT_MS", "6000"),
            ("LOG_LEVEL", "info"),
        ];
        all.extend_from_slice(extra);
        agent_env(
            &self.tansu.bootstrap,
            &self.port.base(),
            &self.mapping,
            &self.group,
            &all,
        )
    }
}
