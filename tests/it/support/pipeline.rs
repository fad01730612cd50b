//! The in-process pipeline's configuration as the tests start from it
//! (library types, so it lives in the test binary, not in testkit).

use port_agent::delivery::Delivery;
use port_agent::delivery::Trust;
use port_agent::mapping::Budget;
use port_agent::pipeline::Config;
use port_agent::secret::Secret;
use port_agent::settings::ReportSettings;

use super::SECRET;

/// Verified with [`SECRET`], topics `org_1.runs` and `org_1.change.log`,
/// detailed logging, run logs on, unmatched node runs failed, the default
/// jq budget, no idempotency headers, the clock's timestamps, Kafka
/// deliveries. Tests change what they need with `Config { …, ..config() }`.
pub fn config() -> Config {
    Config {
        secret: Some(Secret::new(SECRET)),
        skip_signature_check: false,
        runs_topic: "org_1.runs".into(),
        change_log_topic: "org_1.change.log".into(),
        report: ReportSettings::default(),
        budget: Budget::default(),
        infer_topics: false,
        idempotency_headers: false,
        fixed_timestamp: None,
        recording: false,
    }
}

/// A signed-source (Kafka) delivery of `payload` on `topic`, partition 0,
/// at `offset`.
pub fn delivery(topic: &str, payload: impl Into<Vec<u8>>, offset: i64) -> Delivery {
    Delivery {
        topic: topic.into(),
        partition: 0,
        offset,
        key: None,
        payload: payload.into(),
        trust: Trust::Signed,
    }
}
