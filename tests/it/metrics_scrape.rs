//! A real `/metrics` scrape of the built binary, for the observability pack
//! (issue 16): the binary runs against librdkafka's mock cluster, the fake
//! Port API and a fake target, with traffic that makes every Kafka-path
//! metric appear (a delivered run, a mapping error, a target that refuses
//! connections, a Port call refused for good after a retry, an unparsable
//! message dead-lettered). The scrape at start-up and the scrape after the
//! traffic are written to `$CARGO_TARGET_TMPDIR/metrics-scrape/`, where
//! `tests/deploy/deploy_check.py promql` reads the metric names that the
//! alert rules and the Grafana dashboard may use.

use std::time::{Duration, Instant};

use crate::support::broker::{free_port, AgentProcess};
use crate::support::{action_run, closed_port, http_get, signed, FakePort, FakeTarget, SECRET};
use rdkafka::config::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{json, Value};

const RUNS: &str = "org_1.runs";
const CHANGES: &str = "org_1.change.log";
const DLQ: &str = "org_1.dlq";

fn wait_for<T>(within: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sum of every sample of metric `name` (all label sets).
fn total(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The metric names of an exposition (sample lines only).
fn names(text: &str) -> std::collections::BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next().map(str::to_string))
        .collect()
}

/// The metric families of an exposition (a histogram's `_bucket`, `_sum`
/// and `_count` are its family).
fn families(text: &str) -> std::collections::BTreeSet<String> {
    names(text)
        .into_iter()
        .map(|n| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| n.strip_suffix(s).filter(|f| f.ends_with("_seconds")))
                .map(str::to_string)
                .unwrap_or(n)
        })
        .collect()
}

/// The families the README's metrics table lists, with the transport each
/// exists in (`both`, `Kafka`, `polling`).
fn readme_families() -> Vec<(String, String)> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README.md");
    let rows: Vec<(String, String)> = readme
        .lines()
        .skip_while(|l| !l.starts_with("| metric | transport | type | labels |"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            (
                format!("port_agent_{}", cells[1].trim_matches('`')),
                cells[2].to_string(),
            )
        })
        .collect();
    assert!(rows.len() >= 20, "the README's metrics table: {rows:?}");
    rows
}

/// README: every family of the transport is in the first scrape, and none
/// of the other transport's.
fn assert_every_family_of(transport: &str, first_scrape: &str, except: &[&str]) {
    let seen = families(first_scrape);
    for (family, exists_in) in readme_families() {
        let ours = exists_in == "both" || exists_in == transport;
        if except.contains(&family.as_str()) {
            continue;
        }
        assert_eq!(
            seen.contains(&family),
            ours,
            "{family} ({exists_in}) in the first scrape of a {transport} agent:\n{first_scrape}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrape_of_the_binary_with_every_kafka_metric() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic(RUNS, 1, 1).expect("runs topic");
    cluster.create_topic(CHANGES, 1, 1).expect("change-log topic");
    cluster.create_topic(DLQ, 1, 1).expect("dlq topic");
    let brokers = cluster.bootstrap_servers();
    let (port, target) = (FakePort::start().await, FakeTarget::start().await);
    // A limit far above what the test uses: its headers make the
    // remaining-budget gauge appear.
    port.rate_limit(1_000_000, Duration::from_secs(3600));
    target.answer_json(200, json!({"ok": true}));
    let mapping = std::env::temp_dir().join(format!("scrape-mapping-{}.json", std::process::id()));
    std::fs::write(
        &mapping,
        json!([{"enabled": true, "body": {"ref": ".payload.properties.ref | ascii_downcase"}}]).to_string(),
    )
    .expect("mapping");

    let http = format!("127.0.0.1:{}", free_port());
    let http_port = http.rsplit(':').next().unwrap_or_default().to_string();
    let env = crate::support::broker::agent_env(
        &brokers,
        &port.base(),
        &mapping,
        "org_1.scrape",
        &[
            ("AGENT_HTTP_PORT", &http_port),
            ("LOG_LEVEL", "info"),
            ("AGENT_DLQ_TOPIC", DLQ),
            ("AGENT_RETRY_MAX_ATTEMPTS", "2"),
            ("AGENT_RETRY_INITIAL_BACKOFF_MS", "10"),
            ("AGENT_PORT_RETRY_MAX_ATTEMPTS", "2"),
        ],
    );
    let agent = AgentProcess::start(&env, "scrape");

    let startup = wait_for(Duration::from_secs(30), "/metrics", || {
        http_get(&http, "/metrics").and_then(|(s, t)| (s == 200).then_some(t))
    });
    // Zero from the first scrape: every series whose labels have a known,
    // small set of values, so that rate(), increase() and absent() work at
    // once.
    let sample = |line: &str| startup.lines().any(|l| l == line);
    for outcome in port_agent::outcome::Outcome::NAMES {
        let line = format!("port_agent_messages_done_total{{outcome=\"{outcome}\"}} 0");
        assert!(sample(&line), "{line} in:\n{startup}");
    }
    for line in [
        "port_agent_messages_in_flight 0",
        "port_agent_reports_pending 0",
        "port_agent_uncommitted_messages 0",
        "port_agent_panics_total 0",
        "port_agent_dlq_messages_total 0",
        "port_agent_port_rate_limited_total 0",
        "port_agent_retries_total{to=\"target\"} 0",
        "port_agent_retries_total{to=\"port\"} 0",
        "port_agent_commits_total{result=\"ok\"} 0",
        "port_agent_commits_total{result=\"error\"} 0",
        // Issue 28: these appeared only after the first run.
        "port_agent_messages_consumed_total{topic=\"org_1.runs\"} 0",
        "port_agent_messages_consumed_total{topic=\"org_1.change.log\"} 0",
        "port_agent_mapping_errors_total{mapping=\"0\",field=\"body.ref\"} 0",
        "port_agent_mapping_errors_total{mapping=\"0\",field=\"url\"} 0",
        "port_agent_target_request_duration_seconds_count 0",
        "port_agent_target_request_duration_seconds_bucket{le=\"+Inf\"} 0",
        "port_agent_partitions_assigned 0",
        // The alert on increase(…{result="error"}) must see the first refusal.
        "port_agent_mapping_reloads_total{result=\"ok\"} 0",
        "port_agent_mapping_reloads_total{result=\"error\"} 0",
        "port_agent_poison_messages_total 0",
        "port_agent_reports_rejected_total{kind=\"run_patch\"} 0",
        "port_agent_port_api_calls_total{kind=\"run_patch\",outcome=\"error\"} 0",
        "port_agent_target_requests_total{method=\"POST\",status_class=\"5xx\"} 0",
        "port_agent_target_requests_total{method=\"other\",status_class=\"error\"} 0",
    ] {
        assert!(sample(line), "{line} in:\n{startup}");
    }
    // Every family the README lists for Kafka but the per-partition lag,
    // which waits for an assignment (checked after the traffic below).
    assert_every_family_of("Kafka", &startup, &["port_agent_consumer_lag"]);
    wait_for(
        Duration::from_secs(60),
        "/readyz 200 (partition assigned)",
        || http_get(&http, "/readyz").and_then(|(s, _)| (s == 200).then_some(())),
    );

    // The next Port call (the first run's first report) gets a 503, retried,
    // then a 404: refused for good, so that message is also dead-lettered.
    port.fail_next(&[503, 404]);
    let good = target.url("/hook");
    let refused = format!("http://127.0.0.1:{}/gone", closed_port());
    let run = |id: &str, url: &str, props: Value| {
        let mut m = action_run(id, url, "POST", false);
        m["payload"]["properties"] = props;
        signed(m, SECRET, 1).to_string()
    };
    let messages = [
        run("r_rejected", &good, json!({"ref": "Main"})),
        run("r_ok", &good, json!({"ref": "Dev"})),
        run("r_warn", &good, json!({})),
        run("r_fail", &refused, json!({"ref": "x"})),
        "not json".to_string(),
    ];
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("linger.ms", "0")
        .create()
        .expect("producer");
    for payload in &messages {
        // One at a time, so that r_rejected's report is the next Port call.
        producer
            .send(
                FutureRecord::<(), _>::to(RUNS).partition(0).payload(payload),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("produce");
    }

    let text = wait_for(
        Duration::from_secs(90),
        "every message done, committed and lag 0",
        || {
            let (_, text) = http_get(&http, "/metrics")?;
            let lag = text.lines().find_map(|l| {
                l.strip_prefix(&format!(
                    "port_agent_consumer_lag{{topic=\"{RUNS}\",partition=\"0\"}} "
                ))
            });
            (total(&text, "port_agent_messages_done_total") == messages.len() as f64
                && total(&text, "port_agent_commits_total") >= 1.0
                && total(&text, "port_agent_dlq_messages_total") >= 2.0
                && lag == Some("0"))
            .then_some(text)
        },
    );
    drop(agent);

    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("metrics-scrape");
    std::fs::create_dir_all(&dir).expect("scrape dir");
    std::fs::write(dir.join("startup.prom"), &startup).expect("write startup scrape");
    std::fs::write(dir.join("traffic.prom"), &text).expect("write traffic scrape");
    eprintln!("scrapes written to {}", dir.display());

    let seen = names(&text);
    for want in [
        "port_agent_messages_consumed_total",
        "port_agent_messages_done_total",
        "port_agent_messages_in_flight",
        "port_agent_mapping_errors_total",
        "port_agent_target_requests_total",
        "port_agent_target_request_duration_seconds_bucket",
        "port_agent_retries_total",
        "port_agent_port_api_calls_total",
        "port_agent_consumer_lag",
        "port_agent_commits_total",
        "port_agent_dlq_messages_total",
        "port_agent_reports_pending",
        "port_agent_reports_rejected_total",
        "port_agent_panics_total",
        "port_agent_port_rate_limit_remaining",
        "port_agent_build_info",
    ] {
        assert!(seen.contains(want), "{want} missing from the scrape:\n{text}");
    }
    assert!(text.contains("port_agent_retries_total{to=\"port\"}"), "{text}");
    assert!(text.contains("port_agent_retries_total{to=\"target\"}"), "{text}");
    assert!(
        text.contains("port_agent_target_requests_total{method=\"POST\",status_class=\"error\"}"),
        "{text}"
    );
}

/// Issue 28: a polling agent's first scrape has every family the README
/// lists for polling (and none of Kafka's), the last-claim gauge at 0 while
/// claims fail, then the time of the first successful claim. The scrape is
/// written beside the Kafka ones for `tests/deploy/deploy_check.py promql`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrape_of_a_polling_agent_from_the_first_scrape() {
    let port = FakePort::start().await;
    // Every Port call but the token fails until the test lets them through.
    port.fail_next(&vec![503; 100_000]);
    let http_port = free_port().to_string();
    let http = format!("127.0.0.1:{http_port}");
    let env = crate::support::agent::polling_env(
        &port,
        "scrape-polling",
        &json!([{"enabled": ".payload.action.invocationMethod.type == \"WEBHOOK\"",
                 "report": {"link": ".response.json.url"}}]),
        &[
            ("AGENT_HTTP_PORT", &http_port),
            ("POLLING_INITIAL_BACKOFF_SECONDS", "0.05"),
            ("POLLING_MAX_BACKOFF_SECONDS", "0.1"),
        ],
    );
    let agent = AgentProcess::start(&env, "scrape-polling");
    let first = wait_for(Duration::from_secs(30), "/metrics", || {
        http_get(&http, "/metrics").and_then(|(s, t)| (s == 200).then_some(t))
    });
    assert_every_family_of("polling", &first, &[]);
    let sample = |text: &str, line: &str| text.lines().any(|l| l == line);
    for line in [
        "port_agent_polling_last_claim_timestamp_seconds 0",
        "port_agent_polling_claims_total{result=\"ok\"} 0",
        "port_agent_messages_consumed_total{topic=\"org_1.runs\"} 0",
        "port_agent_mapping_errors_total{mapping=\"0\",field=\"enabled\"} 0",
        "port_agent_mapping_errors_total{mapping=\"0\",field=\"report.link\"} 0",
        "port_agent_target_request_duration_seconds_count 0",
        // Unknown until Port states it (0 would say the budget is spent).
        "port_agent_port_rate_limit_remaining NaN",
    ] {
        assert!(sample(&first, line), "{line} in:\n{first}");
    }
    // Claims fail: the gauge stays 0 while the error counter grows.
    let failing = wait_for(Duration::from_secs(30), "failed claims", || {
        let (_, t) = http_get(&http, "/metrics")?;
        (total(&t, "port_agent_polling_claims_total") >= 4.0).then_some(t)
    });
    assert!(
        sample(&failing, "port_agent_polling_last_claim_timestamp_seconds 0"),
        "{failing}"
    );
    assert!(
        sample(&failing, "port_agent_polling_claims_total{result=\"ok\"} 0"),
        "{failing}"
    );

    let unix = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default()
    };
    let before = unix();
    port.state.fail_next.lock().unwrap().clear();
    let claimed = wait_for(Duration::from_secs(30), "a successful claim", || {
        let (_, t) = http_get(&http, "/metrics")?;
        (total(&t, "port_agent_polling_last_claim_timestamp_seconds") > 0.0).then_some(t)
    });
    let after = unix();
    let at = total(&claimed, "port_agent_polling_last_claim_timestamp_seconds");
    assert!(
        before - 1.0 <= at && at <= after + 1.0,
        "last claim at {at}, between {before} and {after}"
    );
    drop(agent);
    assert_every_family_of("polling", &claimed, &[]);
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("metrics-scrape");
    std::fs::create_dir_all(&dir).expect("scrape dir");
    std::fs::write(dir.join("polling.prom"), &claimed).expect("write polling scrape");
}
