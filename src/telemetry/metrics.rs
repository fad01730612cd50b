//! Prometheus metrics (SPEC §9), through the `metrics` facade.
//!
//! Components record with the small functions below; the names and labels
//! live here only. Until [`install`] runs (the `run` command does it) every
//! call is a cheap no-op, so dry-run, the offline commands and the tests pay
//! nothing and need no set-up.

use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

/// Messages handed to the pipeline, by topic.
pub const CONSUMED: &str = "port_agent_messages_consumed_total";
/// Messages done, by outcome.
pub const DONE: &str = "port_agent_messages_done_total";
/// Messages being processed (or waiting for a same-key predecessor).
pub const IN_FLIGHT: &str = "port_agent_messages_in_flight";
/// Mapping expressions that failed at runtime, by mapping index and field.
pub const MAPPING_ERRORS: &str = "port_agent_mapping_errors_total";
/// Target request attempts, by method and status class.
pub const TARGET_REQUESTS: &str = "port_agent_target_requests_total";
/// Target request attempt duration.
pub const TARGET_DURATION: &str = "port_agent_target_request_duration_seconds";
/// Retries, by what was retried (`target`, `port`).
pub const RETRIES: &str = "port_agent_retries_total";
/// Port API calls (after retries), by endpoint kind and outcome.
pub const PORT_CALLS: &str = "port_agent_port_api_calls_total";
/// Consumer lag per partition.
pub const CONSUMER_LAG: &str = "port_agent_consumer_lag";
/// Offset commits, by result.
pub const COMMITS: &str = "port_agent_commits_total";
/// Messages written to the dead-letter topic.
pub const DEAD_LETTERED: &str = "port_agent_dlq_messages_total";
/// Polling claims, by result.
pub const CLAIMS: &str = "port_agent_polling_claims_total";
/// Runs whose next Port call failed after its retries and waits to be
/// retried (the target was called; the status is not in Port yet).
pub const REPORTS_PENDING: &str = "port_agent_reports_pending";
/// Port calls Port refused for good (a 4xx other than 401/408/429), by kind.
pub const REPORTS_REJECTED: &str = "port_agent_reports_rejected_total";
/// Messages started and not yet confirmed committed (what a crash now would
/// re-run; at most `AGENT_MAX_IN_FLIGHT`).
pub const UNCOMMITTED: &str = "port_agent_uncommitted_messages";
/// Answers 429 from Port's API (its rate limiter), each attempt.
pub const PORT_RATE_LIMITED: &str = "port_agent_port_rate_limited_total";
/// Gauge: calls left in Port's rate-limit period, as Port last said
/// (appears with the first answer that carries the headers).
pub const PORT_RATE_LIMIT_REMAINING: &str = "port_agent_port_rate_limit_remaining";
/// Mapping reloads, by result (`ok`, `error`).
pub const MAPPING_RELOADS: &str = "port_agent_mapping_reloads_total";
/// 1 for the mapping file version in force (label `sha256`), 0 for earlier ones.
pub const MAPPING_INFO: &str = "port_agent_mapping_info";
/// Partitions this replica holds (Kafka only; 0 for a warm standby).
pub const PARTITIONS_ASSIGNED: &str = "port_agent_partitions_assigned";
/// Panics caught while processing a message (the message was failed).
pub const PANICS: &str = "port_agent_panics_total";
/// Messages not processed again because the agent died that many times
/// while they were in flight (the crash-loop guard gave them up).
pub const POISON: &str = "port_agent_poison_messages_total";
/// Always 1; labels carry the version.
pub const BUILD_INFO: &str = "port_agent_build_info";
/// Polling: Unix time of the last successful claim (0 before the first).
pub const LAST_CLAIM: &str = "port_agent_polling_last_claim_timestamp_seconds";

/// What start-up knows: the transport, and the label values of the series
/// exported at 0 from the first scrape.
pub struct Known<'a> {
    /// Polling (`STREAMER_NAME=POLLING`); else Kafka.
    pub polling: bool,
    /// The topics whose messages are counted (`messages_consumed_total`).
    pub topics: Vec<&'a str>,
    /// The fields of the mapping file in force that a runtime error can
    /// name, with their mapping's index (`MappingSet::error_fields`).
    pub mapping_fields: &'a [(usize, String)],
    /// Every outcome a message can end with (`Outcome::NAMES`).
    pub outcomes: &'a [&'static str],
    /// The label of every Port endpoint (`Endpoint::labels`).
    pub port_calls: &'a [&'static str],
    /// Its SHA-256 (`mapping_info`).
    pub mapping_sha: &'a str,
}

/// Target latency buckets (seconds): from a local service to a slow CI API.
const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Install the global recorder and return the handle that renders the text
/// format. Call once, from the binary.
pub fn install(known: &Known<'_>) -> Result<PrometheusHandle, BuildError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(TARGET_DURATION.to_string()), DURATION_BUCKETS)?
        .install_recorder()?;
    describe();
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    zero(known);
    Ok(handle)
}

/// Every family of the transport is exported from the first scrape: each
/// series whose labels have a known set of values (outcomes, status classes,
/// Port endpoint kinds, results, the topics, each mapping's fields) at 0, so
/// that `rate()`, `increase()` and `absent()` work at once. Only
/// `consumer_lag` waits for its partitions (Kafka), and Port's rate-limit
/// budget is NaN (unknown) until Port states it.
fn zero(known: &Known<'_>) {
    gauge!(IN_FLIGHT).set(0.0);
    gauge!(REPORTS_PENDING).set(0.0);
    counter!(PANICS).absolute(0);
    counter!(PORT_RATE_LIMITED).absolute(0);
    // Not 0: that would say the budget is spent.
    gauge!(PORT_RATE_LIMIT_REMAINING).set(f64::NAN);
    // Registered: the buckets, sum and count are exported at 0.
    drop(histogram!(TARGET_DURATION));
    for topic in &known.topics {
        counter!(CONSUMED, "topic" => topic.to_string()).absolute(0);
    }
    mapping_fields(known.mapping_fields);
    mapping_info(known.mapping_sha, None);
    if known.polling {
        gauge!(LAST_CLAIM).set(0.0);
        for result in ["ok", "error"] {
            counter!(CLAIMS, "result" => result).absolute(0);
        }
    } else {
        gauge!(UNCOMMITTED).set(0.0);
        gauge!(PARTITIONS_ASSIGNED).set(0.0);
        counter!(POISON).absolute(0);
        counter!(DEAD_LETTERED).absolute(0);
        for result in ["ok", "error"] {
            counter!(COMMITS, "result" => result).absolute(0);
        }
    }
    for &outcome in known.outcomes {
        counter!(DONE, "outcome" => outcome).absolute(0);
    }
    for method in KNOWN_METHODS.iter().copied().chain(["other"]) {
        for class in ["1xx", "2xx", "3xx", "4xx", "5xx", "error"] {
            counter!(TARGET_REQUESTS, "method" => method, "status_class" => class).absolute(0);
        }
    }
    for to in RetryOf::ALL {
        counter!(RETRIES, "to" => to.label()).absolute(0);
    }
    for &kind in known.port_calls {
        for outcome in ["ok", "error"] {
            counter!(PORT_CALLS, "kind" => kind, "outcome" => outcome).absolute(0);
        }
    }
    for kind in [
        "run_log",
        "node_run_log",
        "run_response",
        "run_patch",
        "node_run_patch",
    ] {
        counter!(REPORTS_REJECTED, "kind" => kind).absolute(0);
    }
    for result in ["ok", "error"] {
        counter!(MAPPING_RELOADS, "result" => result).absolute(0);
    }
}

/// Each field of each mapping that a runtime error can name, at 0 (kept
/// when already counted): at start-up and for each new mapping version.
pub fn mapping_fields(fields: &[(usize, String)]) {
    for (index, field) in fields {
        counter!(MAPPING_ERRORS, "mapping" => index.to_string(), "field" => field.clone()).increment(0);
    }
}

fn describe() {
    describe_counter!(CONSUMED, "Messages handed to the pipeline, by topic.");
    describe_counter!(DONE, "Messages done, by outcome.");
    describe_gauge!(
        IN_FLIGHT,
        "Messages being processed or waiting for a same-key predecessor."
    );
    describe_counter!(
        MAPPING_ERRORS,
        "Mapping expressions that failed at runtime, by mapping index and field."
    );
    describe_counter!(
        TARGET_REQUESTS,
        "Target request attempts, by method and status class."
    );
    describe_histogram!(TARGET_DURATION, Unit::Seconds, "Target request attempt duration.");
    describe_counter!(RETRIES, "Retries, by what was retried (target or port).");
    describe_counter!(
        PORT_CALLS,
        "Port API calls after retries, by endpoint kind and outcome."
    );
    describe_gauge!(
        CONSUMER_LAG,
        "Messages behind the partition's end, per partition."
    );
    describe_counter!(COMMITS, "Offset commits, by result.");
    describe_counter!(DEAD_LETTERED, "Messages written to the dead-letter topic.");
    describe_counter!(CLAIMS, "Polling claim requests, by result.");
    describe_gauge!(
        REPORTS_PENDING,
        "Runs whose next Port call failed after retries and waits to be retried."
    );
    describe_counter!(
        REPORTS_REJECTED,
        "Port calls refused for good by Port (4xx other than 401/408/429), by kind."
    );
    describe_counter!(PANICS, "Panics caught while processing a message.");
    describe_counter!(
        POISON,
        "Messages not processed again: the agent died that many times while they were in flight."
    );
    describe_counter!(MAPPING_RELOADS, "Mapping file reloads, by result.");
    describe_gauge!(
        MAPPING_INFO,
        "1 for the mapping file version in force (sha256 label), 0 for earlier ones."
    );
    describe_counter!(
        PORT_RATE_LIMITED,
        "Answers 429 from Port's API (its rate limiter), each attempt."
    );
    describe_gauge!(
        PORT_RATE_LIMIT_REMAINING,
        "Calls left in Port's API rate-limit period, as its last answer said."
    );
    describe_gauge!(
        PARTITIONS_ASSIGNED,
        "Partitions this replica holds (Kafka; 0 for a warm standby)."
    );
    describe_gauge!(
        UNCOMMITTED,
        "Messages started and not yet confirmed committed: what a crash now would re-run."
    );
    describe_gauge!(BUILD_INFO, "Build information; the value is always 1.");
    describe_gauge!(
        LAST_CLAIM,
        Unit::Seconds,
        "Polling: Unix time of the last successful claim from Port (0 before the first)."
    );
}

/// A delivery was handed to the pipeline.
pub fn consumed(topic: &str) {
    counter!(CONSUMED, "topic" => topic.to_string()).increment(1);
    gauge!(IN_FLIGHT).increment(1.0);
}

/// A delivery is done with `outcome` (see `Outcome::name`).
pub fn done(outcome: &'static str) {
    counter!(DONE, "outcome" => outcome).increment(1);
    gauge!(IN_FLIGHT).decrement(1.0);
}

/// A run's Port call starts (`+1`) or stops (`-1`) waiting for Port.
pub fn reports_pending(delta: f64) {
    gauge!(REPORTS_PENDING).increment(delta);
}

/// Port refused a call for good.
pub fn report_rejected(kind: &'static str) {
    counter!(REPORTS_REJECTED, "kind" => kind).increment(1);
}

/// A mapping reload ended (`ok`: the new version is in force).
pub fn mapping_reload(ok: bool) {
    counter!(MAPPING_RELOADS, "result" => if ok { "ok" } else { "error" }).increment(1);
}

/// The mapping file version `sha256` is in force (`previous` no longer).
pub fn mapping_info(sha256: &str, previous: Option<&str>) {
    if let Some(previous) = previous {
        gauge!(MAPPING_INFO, "sha256" => previous.to_string()).set(0.0);
    }
    gauge!(MAPPING_INFO, "sha256" => sha256.to_string()).set(1.0);
}

/// Port's rate limiter answered 429.
pub fn port_rate_limited() {
    counter!(PORT_RATE_LIMITED).increment(1);
}

/// Port said how many calls are left in its rate-limit period.
pub fn port_rate_limit_remaining(n: u64) {
    gauge!(PORT_RATE_LIMIT_REMAINING).set(n as f64);
}

/// The replica now holds `n` partitions.
pub fn partitions_assigned(n: usize) {
    gauge!(PARTITIONS_ASSIGNED).set(n as f64);
}

/// The uncommitted window now holds `n` messages.
pub fn uncommitted(n: usize) {
    gauge!(UNCOMMITTED).set(n as f64);
}

/// A panic was caught while processing a message.
pub fn panicked() {
    counter!(PANICS).increment(1);
}

/// The crash-loop guard gave a message up.
pub fn poison() {
    counter!(POISON).increment(1);
}

/// A mapping expression failed at runtime.
pub fn mapping_error(index: usize, field: &str) {
    counter!(MAPPING_ERRORS, "mapping" => index.to_string(), "field" => field.to_string()).increment(1);
}

/// The status class label of a target answer (`2xx` … `5xx`), or `error`
/// when no answer came.
pub fn status_class(status: Option<u16>) -> &'static str {
    match status {
        Some(100..=199) => "1xx",
        Some(200..=299) => "2xx",
        Some(300..=399) => "3xx",
        Some(400..=499) => "4xx",
        Some(500..=599) => "5xx",
        _ => "error",
    }
}

/// One target request attempt ended (`status` is `None` on a transport error).
pub fn target_request(method: &str, status: Option<u16>, elapsed: Duration) {
    counter!(TARGET_REQUESTS, "method" => method_label(method), "status_class" => status_class(status))
        .increment(1);
    histogram!(TARGET_DURATION).record(elapsed.as_secs_f64());
}

/// The standard methods, each its own `method` label.
const KNOWN_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT",
];

/// The `method` label: one of the standard methods, else `other` (a
/// mapping computes the method, and a label per made-up method would let
/// messages grow the metrics without bound).
pub fn method_label(method: &str) -> &'static str {
    KNOWN_METHODS
        .iter()
        .find(|k| k.eq_ignore_ascii_case(method))
        .copied()
        .unwrap_or("other")
}

/// A retry is about to happen (`to`: `target` or `port`).
pub fn retry(to: RetryOf) {
    counter!(RETRIES, "to" => to.label()).increment(1);
}

/// Whose call was retried (the `to` label of `retries_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryOf {
    /// A target request.
    Target,
    /// A Port API call.
    Port,
}

impl RetryOf {
    /// Both, for the series at 0.
    pub const ALL: [RetryOf; 2] = [RetryOf::Target, RetryOf::Port];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            RetryOf::Target => "target",
            RetryOf::Port => "port",
        }
    }
}

/// A Port API call finished (after retries).
pub fn port_call(kind: &'static str, ok: bool) {
    counter!(PORT_CALLS, "kind" => kind, "outcome" => if ok { "ok" } else { "error" }).increment(1);
}

/// The consumer's lag on one partition.
pub fn consumer_lag(topic: &str, partition: i32, lag: i64) {
    gauge!(CONSUMER_LAG, "topic" => topic.to_string(), "partition" => partition.to_string()).set(lag as f64);
}

/// An offset commit finished.
pub fn commit(ok: bool) {
    counter!(COMMITS, "result" => if ok { "ok" } else { "error" }).increment(1);
}

/// A message was written to the dead-letter topic.
pub fn dead_lettered() {
    counter!(DEAD_LETTERED).increment(1);
}

/// A polling claim finished (a success is the last claim's time).
pub fn claim(ok: bool) {
    counter!(CLAIMS, "result" => if ok { "ok" } else { "error" }).increment(1);
    if ok {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        gauge!(LAST_CLAIM).set(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_labels_are_bounded() {
        assert_eq!(method_label("post"), "POST");
        assert_eq!(method_label("PATCH"), "PATCH");
        assert_eq!(method_label("X-RANDOM-123"), "other");
        assert_eq!(method_label(""), "other");
    }

    #[test]
    fn status_classes() {
        let cases = [
            (Some(101), "1xx"),
            (Some(200), "2xx"),
            (Some(299), "2xx"),
            (Some(302), "3xx"),
            (Some(404), "4xx"),
            (Some(503), "5xx"),
            (Some(600), "error"),
            (None, "error"),
        ];
        for (status, class) in cases {
            assert_eq!(status_class(status), class, "{status:?}");
        }
    }

    /// Each transport's families from the start, and not the other's.
    #[test]
    fn zero_exports_the_families_of_the_transport() {
        let set = crate::mapping::MappingSet::parse(r#"[{"body": {"ref": ".r", "n": 1}}]"#).unwrap();
        for polling in [false, true] {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(TARGET_DURATION.to_string()), DURATION_BUCKETS)
                .map(PrometheusBuilder::build_recorder)
                .unwrap();
            let handle = recorder.handle();
            let known = Known {
                polling,
                topics: vec!["o.runs"],
                mapping_fields: &set.error_fields(),
                mapping_sha: "abc",
                outcomes: &crate::outcome::Outcome::NAMES,
                port_calls: &crate::port::Endpoint::labels(),
            };
            metrics::with_local_recorder(&recorder, || zero(&known));
            let text = handle.render();
            let has = |line: &str| text.lines().any(|l| l == line);
            for line in [
                "port_agent_messages_consumed_total{topic=\"o.runs\"} 0",
                "port_agent_mapping_errors_total{mapping=\"0\",field=\"body.ref\"} 0",
                "port_agent_mapping_errors_total{mapping=\"0\",field=\"url\"} 0",
                "port_agent_target_request_duration_seconds_count 0",
                "port_agent_port_rate_limit_remaining NaN",
                "port_agent_mapping_info{sha256=\"abc\"} 1",
            ] {
                assert!(has(line), "{line} in:\n{text}");
            }
            assert!(
                !text.contains("field=\"body.n\""),
                "a literal cannot fail:\n{text}"
            );
            for (family, kafka) in [
                (LAST_CLAIM, false),
                (CLAIMS, false),
                (PARTITIONS_ASSIGNED, true),
                (COMMITS, true),
                (UNCOMMITTED, true),
                (DEAD_LETTERED, true),
                (POISON, true),
            ] {
                let present = text.lines().any(|l| l.starts_with(family));
                assert_eq!(present, kafka != polling, "{family}, polling {polling}:\n{text}");
            }
        }
    }

    #[test]
    fn rendered_names_carry_the_prefix_and_labels() {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(TARGET_DURATION.to_string()), DURATION_BUCKETS)
            .map(PrometheusBuilder::build_recorder);
        let Ok(recorder) = recorder else {
            panic!("recorder builds");
        };
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            consumed("org_1.runs");
            done("delivered");
            mapping_error(2, "body.ref");
            target_request("POST", Some(201), Duration::from_millis(3));
            retry(RetryOf::Port);
            port_call("run_log", true);
            consumer_lag("org_1.runs", 1, 7);
            commit(false);
            dead_lettered();
        });
        let text = handle.render();
        for line in [
            "port_agent_messages_consumed_total{topic=\"org_1.runs\"} 1",
            "port_agent_messages_done_total{outcome=\"delivered\"} 1",
            "port_agent_messages_in_flight 0",
            "port_agent_mapping_errors_total{mapping=\"2\",field=\"body.ref\"} 1",
            "port_agent_target_requests_total{method=\"POST\",status_class=\"2xx\"} 1",
            "port_agent_target_request_duration_seconds_bucket{le=\"0.005\"} 1",
            "port_agent_target_request_duration_seconds_bucket{le=\"0.0025\"} 0",
            "port_agent_retries_total{to=\"port\"} 1",
            "port_agent_port_api_calls_total{kind=\"run_log\",outcome=\"ok\"} 1",
            "port_agent_consumer_lag{topic=\"org_1.runs\",partition=\"1\"} 7",
            "port_agent_commits_total{result=\"error\"} 1",
            "port_agent_dlq_messages_total 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing `{line}` in:\n{text}");
        }
    }
}
