//! The dead-letter topic (`AGENT_DLQ_TOPIC`): a message the agent
//! could not process is written there with its key, its headers and five
//! `x-port-agent-*` headers saying why and where it came from.

use std::time::Duration;

use rdkafka::error::KafkaResult;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tracing::{error, info};

use super::KafkaOptions;
use crate::delivery::Delivery;
use crate::outcome::Outcome;
use crate::telemetry::metrics;

/// The dead-letter producer and its topic.
pub(super) struct Dlq {
    topic: String,
    producer: FutureProducer,
}

impl Dlq {
    /// A producer for `opts.settings.dlq_topic`; `None` when there is no such topic.
    pub(super) fn connect(opts: &KafkaOptions) -> KafkaResult<Option<Dlq>> {
        let Some(topic) = &opts.settings.dlq_topic else {
            return Ok(None);
        };
        let mut c = opts.client_config();
        c.set("message.timeout.ms", "30000");
        Ok(Some(Dlq {
            topic: topic.clone(),
            producer: c.create::<FutureProducer>()?,
        }))
    }

    /// Write `d` (with its original `headers`) to the dead-letter topic;
    /// a failure is logged, and the message is dropped after that.
    pub(super) async fn send(&self, d: &Delivery, headers: &[(String, Vec<u8>)], outcome: &Outcome) {
        let reason = match &outcome.result {
            crate::outcome::Disposition::Skipped(s) => s.to_string(),
            crate::outcome::Disposition::InternalError(p) => format!("internal error: {p}"),
            _ => outcome
                .port_errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        };
        let partition = d.partition.to_string();
        let offset = d.offset.to_string();
        let mut h = OwnedHeaders::new();
        for (k, v) in headers {
            h = h.insert(Header {
                key: k,
                value: Some(v.as_slice()),
            });
        }
        for (k, v) in [
            ("x-port-agent-error", reason.as_str()),
            ("x-port-agent-outcome", outcome.name()),
            ("x-port-agent-topic", d.topic.as_str()),
            ("x-port-agent-partition", partition.as_str()),
            ("x-port-agent-offset", offset.as_str()),
        ] {
            h = h.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        let mut record = FutureRecord::to(&self.topic).payload(&d.payload).headers(h);
        if let Some(k) = &d.key {
            record = record.key(k);
        }
        match self.producer.send(record, Duration::from_secs(30)).await {
            Ok(_) => {
                metrics::dead_lettered();
                info!(
                    dlq = self.topic.as_str(),
                    "message written to the dead-letter topic"
                );
            }
            Err((e, _)) => {
                error!(dlq = self.topic.as_str(), error = %e, "could not write to the dead-letter topic; the message is dropped after logging")
            }
        }
    }
}
