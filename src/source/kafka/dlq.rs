//! The dead-letter topic (`KAFKA_CONSUMER_DLQ_TOPIC`): a message the agent
//! could not process is written there with its key, its headers and five
//! `x-port-agent-*` headers saying why and where it came from.

use std::sync::atomic::Ordering;
use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tracing::{error, info};

use super::context::Status;
use crate::pipeline::{Delivery, Outcome};
use crate::telemetry::metrics;

pub(super) async fn dead_letter(
    producer: &FutureProducer,
    topic: &str,
    d: &Delivery,
    headers: &[(String, Vec<u8>)],
    outcome: &Outcome,
    status: &Status,
) {
    let reason = match &outcome.result {
        crate::pipeline::Result_::Skipped(s) => s.to_string(),
        crate::pipeline::Result_::InternalError(p) => format!("internal error: {p}"),
        _ => outcome.port_errors.join("; "),
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
    let mut record = FutureRecord::to(topic).payload(&d.payload).headers(h);
    if let Some(k) = &d.key {
        record = record.key(k);
    }
    match producer.send(record, Duration::from_secs(30)).await {
        Ok(_) => {
            status.dead_lettered.fetch_add(1, Ordering::Relaxed);
            metrics::dead_lettered();
            info!(dlq = topic, "message written to the dead-letter topic");
        }
        Err((e, _)) => {
            error!(dlq = topic, error = %e, "could not write to the dead-letter topic; the message is dropped after logging")
        }
    }
}
