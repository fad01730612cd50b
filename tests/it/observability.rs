//! What operators see, on the built binary against tansu, the fake Port API
//! and a fake target: `/healthz`, `/readyz` as the source connects and loses
//! its broker, `/metrics` over a small end-to-end run, JSON log lines with
//! the message fields, no secrets in any output, and the dead-letter topic.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::agent::mapping_file;
use crate::support::broker::{eventually_some, free_port, produce, signed_runs, AgentProcess, Tansu};
use crate::support::{action_run, closed_port, encrypt, http_get, signed, FakePort, FakeTarget, SECRET};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Headers;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;
use serde_json::{json, Value};

const RUNS: &str = "org_1.runs";
const CHANGES: &str = "org_1.change.log";
const DLQ: &str = "org_1.dlq";

/// The value of one exposition line, `series` being the name with its labels
/// exactly as rendered.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Sum of every sample of metric `name` (all label sets).
fn total(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_flips_as_the_source_connects_and_loses_its_broker() {
    let port = FakePort::start().await;
    let broker_port = free_port();
    let http = format!("127.0.0.1:{}", free_port());
    let mapping = mapping_file("obs-ready", &json!([{"enabled": true}]));
    let http_port = http.rsplit(':').next().unwrap_or_default().to_string();
    // No AGENT_LOG_FORMAT: stdout is a file here, so JSON is the default.
    let env: Vec<(&str, String)> = crate::support::broker::agent_env(
        &format!("127.0.0.1:{broker_port}"),
        &port.base(),
        &mapping,
        "org_1.ready",
        &[("AGENT_HTTP_PORT", &http_port), ("LOG_LEVEL", "info")],
    )
    .into_iter()
    .filter(|(k, _)| *k != "AGENT_LOG_FORMAT")
    .collect();
    let agent = AgentProcess::start(&env, "ready");

    // Alive at once; not ready while no broker answers.
    let (status, _) = eventually_some("/healthz", Duration::from_secs(30), || {
        http_get(&http, "/healthz")
    })
    .await;
    assert_eq!(status, 200);
    // The first reason depends on how far start-up got (the server starts
    // before Port is called and the consumer is created), so it is one of
    // these three, in this order, and settles on the last while no broker
    // answers.
    let reasons = [
        "starting: connecting to Port and the message source",
        "waiting for a partition assignment from the consumer group",
        "no Kafka broker is reachable",
    ];
    let (status, body) = http_get(&http, "/readyz").expect("/readyz answers");
    assert_eq!(status, 503, "{body}");
    let first = serde_json::from_str::<Value>(&body).expect("JSON reason")["reason"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_default();
    let at = reasons
        .iter()
        .position(|r| *r == first)
        .unwrap_or_else(|| panic!("unexpected first reason {body}"));
    let mut seen = at;
    eventually_some(
        "/readyz: no Kafka broker is reachable",
        Duration::from_secs(30),
        || {
            let (status, body) = http_get(&http, "/readyz")?;
            assert_eq!(status, 503, "{body}");
            let reason: Value = serde_json::from_str(&body).expect("JSON reason");
            assert_eq!(reason["status"], "unavailable", "{body}");
            let now = reasons
                .iter()
                .position(|r| reason["reason"] == *r)
                .unwrap_or_else(|| panic!("unexpected reason {body}"));
            assert!(
                now >= seen,
                "readiness went back from {:?} to {body}",
                reasons[seen]
            );
            seen = now;
            (now == 2).then_some(())
        },
    )
    .await;

    // The broker comes: ready once the group has answered.
    let tansu = Tansu::start_on(broker_port);
    tansu.create_topic(RUNS, 1).await;
    tansu.create_topic(CHANGES, 1).await;
    eventually_some("/readyz 200", Duration::from_secs(60), || {
        http_get(&http, "/readyz").filter(|(s, _)| *s == 200)
    })
    .await;

    // The broker goes: not ready again, with the reason; still alive.
    drop(tansu);
    let (_, body) = eventually_some("/readyz 503", Duration::from_secs(60), || {
        http_get(&http, "/readyz").filter(|(s, _)| *s == 503)
    })
    .await;
    let reason: Value = serde_json::from_str(&body).expect("JSON reason");
    assert_eq!(reason["reason"], "no Kafka broker is reachable", "{reason}");
    assert_eq!(http_get(&http, "/healthz").map(|(s, _)| s), Some(200));

    let log = agent.log_text();
    for line in log.lines() {
        serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_logs_and_dead_letters_over_a_small_run() {
    let tansu = Tansu::start();
    tansu.create_topic(RUNS, 3).await;
    tansu.create_topic(CHANGES, 1).await;
    tansu.create_topic(DLQ, 1).await;
    let (port, target) = (FakePort::start().await, FakeTarget::start().await);
    let mapping = mapping_file(
        "obs-metrics",
        &json!([{
            "enabled": true,
            "fieldsToDecryptPaths": ["payload.properties.token"],
            "body": {"ref": ".payload.properties.ref | ascii_downcase",
                     "token": ".payload.properties.token"}
        }]),
    );

    // Four signed runs and one unparsable message:
    //   r_ok1, r_ok2 delivered (r_ok2 carries an encrypted token);
    //   r_warn delivered, but its `ref` expression fails (no ref);
    //   r_fail's target refuses connections (2 attempts, then FAILURE);
    //   "not json" goes to the dead-letter topic.
    let plaintext = "ghp_DecryptedValueNeverLogged_77";
    let good = target.url("/hook");
    let refused = format!("http://127.0.0.1:{}/gone", closed_port());
    let run = |id: &str, url: &str, props: Value| {
        let mut m = action_run(id, url, "POST", false);
        m["payload"]["properties"] = props;
        signed(m, SECRET, 1).to_string()
    };
    let messages = [
        (0, run("r_ok1", &good, json!({"ref": "Main"}))),
        (
            1,
            run("r_ok2", &good, json!({"ref": "Dev", "token": encrypt(plaintext)})),
        ),
        (2, run("r_warn", &good, json!({}))),
        (0, run("r_fail", &refused, json!({"ref": "x"}))),
        (1, "not json".to_string()),
    ];
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &tansu.bootstrap)
        .set("linger.ms", "0")
        .set("batch.num.messages", "1")
        .create()
        .expect("producer");
    for (partition, payload) in &messages {
        let rec = FutureRecord::<(), _>::to(RUNS)
            .partition(*partition)
            .payload(payload)
            .headers(
                rdkafka::message::OwnedHeaders::new().insert(rdkafka::message::Header {
                    key: "trace",
                    value: Some("t-1"),
                }),
            );
        producer
            .send(rec, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)
            .expect("produce");
    }

    let http = format!("127.0.0.1:{}", free_port());
    let http_port = http.rsplit(':').next().unwrap_or_default().to_string();
    let env = crate::support::broker::agent_env(
        &tansu.bootstrap,
        &port.base(),
        &mapping,
        "org_1.metrics",
        &[
            ("AGENT_HTTP_PORT", &http_port),
            ("LOG_LEVEL", "debug"),
            ("AGENT_DLQ_TOPIC", DLQ),
            ("AGENT_RETRY_MAX_ATTEMPTS", "2"),
            ("AGENT_RETRY_INITIAL_BACKOFF_MS", "10"),
        ],
    );
    let mut agent = AgentProcess::start(&env, "metrics");

    let text = eventually_some("all five messages done", Duration::from_secs(90), || {
        let (_, text) = http_get(&http, "/metrics")?;
        (total(&text, "port_agent_messages_done_total") == 5.0).then_some(text)
    })
    .await;
    let expect = |series: &str, value: f64| {
        assert_eq!(sample(&text, series), Some(value), "{series} in:\n{text}");
    };
    expect(
        &format!("port_agent_messages_consumed_total{{topic=\"{RUNS}\"}}"),
        5.0,
    );
    expect("port_agent_messages_done_total{outcome=\"delivered\"}", 3.0);
    expect("port_agent_messages_done_total{outcome=\"request_failed\"}", 1.0);
    expect("port_agent_messages_done_total{outcome=\"unparsable\"}", 1.0);
    expect("port_agent_messages_in_flight", 0.0);
    expect(
        "port_agent_mapping_errors_total{mapping=\"0\",field=\"body.ref\"}",
        1.0,
    );
    expect(
        "port_agent_target_requests_total{method=\"POST\",status_class=\"2xx\"}",
        3.0,
    );
    expect(
        "port_agent_target_requests_total{method=\"POST\",status_class=\"error\"}",
        2.0,
    );
    expect("port_agent_target_request_duration_seconds_count", 5.0);
    expect("port_agent_retries_total{to=\"target\"}", 1.0);
    expect("port_agent_dlq_messages_total", 1.0);
    expect(
        &format!(
            "port_agent_build_info{{version=\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        ),
        1.0,
    );
    // Port calls: the metric agrees with what the fake Port API received.
    // Each of the 4 runs: 5 log lines; a status PATCH only for r_fail (async
    // runs that succeed are reported by the service); one token; the
    // organization PATCH.
    let received = port.accepted_summary();
    let count = |suffix: &str, method: &str| {
        received
            .iter()
            .filter(|(m, p, _)| m == method && p.starts_with("/v1/actions/runs/") && p.ends_with(suffix))
            .count() as f64
    };
    assert_eq!(count("/logs", "POST"), 20.0);
    expect(
        "port_agent_port_api_calls_total{kind=\"run_log\",outcome=\"ok\"}",
        count("/logs", "POST"),
    );
    assert_eq!(count("r_fail", "PATCH"), 1.0);
    expect(
        "port_agent_port_api_calls_total{kind=\"run_patch\",outcome=\"ok\"}",
        count("", "PATCH"),
    );
    expect(
        "port_agent_port_api_calls_total{kind=\"token\",outcome=\"ok\"}",
        1.0,
    );
    expect(
        "port_agent_port_api_calls_total{kind=\"organization\",outcome=\"ok\"}",
        1.0,
    );

    // Commits and lag arrive on their own clocks (1 s, 5 s statistics).
    let text = eventually_some("commits and consumer lag", Duration::from_secs(30), || {
        let (_, text) = http_get(&http, "/metrics")?;
        let lag = sample(
            &text,
            &format!("port_agent_consumer_lag{{topic=\"{RUNS}\",partition=\"0\"}}"),
        )?;
        (sample(&text, "port_agent_commits_total{result=\"ok\"}")? >= 1.0 && lag == 0.0).then_some(text)
    })
    .await;
    assert!(text.contains("# TYPE port_agent_target_request_duration_seconds histogram"));

    // The dead-letter topic holds the original bytes and headers, plus why.
    let dlq: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &tansu.bootstrap)
        .set("group.id", "dlq-reader")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    dlq.subscribe(&[DLQ]).expect("subscribe");
    let m = tokio::time::timeout(Duration::from_secs(60), dlq.recv())
        .await
        .expect("a dead letter within 60 s")
        .expect("dead letter");
    assert_eq!(m.payload(), Some(b"not json".as_slice()));
    let headers: BTreeMap<String, String> = m
        .headers()
        .map(|h| {
            h.iter()
                .map(|x| {
                    (
                        x.key.to_string(),
                        String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(headers.get("trace").map(String::as_str), Some("t-1"));
    assert_eq!(
        headers.get("x-port-agent-outcome").map(String::as_str),
        Some("unparsable")
    );
    assert_eq!(headers.get("x-port-agent-topic").map(String::as_str), Some(RUNS));
    assert_eq!(
        headers.get("x-port-agent-partition").map(String::as_str),
        Some("1")
    );
    assert!(headers
        .get("x-port-agent-error")
        .is_some_and(|e| e.starts_with("unparsable message")));

    agent.signal("-TERM");
    assert_eq!(agent.wait(Duration::from_secs(30)), Some(0));

    // Every line is JSON; lines about a message carry its fields.
    let log = agent.log_text();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    let about_messages: Vec<&Value> = lines.iter().filter(|l| l["span"]["name"] == "message").collect();
    for l in &about_messages {
        let span = &l["span"];
        assert_eq!(span["topic"], RUNS, "{l}");
        assert!(span["partition"].is_i64() && span["offset"].is_i64(), "{l}");
    }
    for id in ["r_ok1", "r_ok2", "r_warn", "r_fail"] {
        assert!(
            about_messages.iter().any(|l| l["span"]["run_id"] == id),
            "no log line carries run_id {id}"
        );
    }
    // No secret, token or decrypted value anywhere in the output, although
    // the decrypted value did reach the target.
    assert!(target.requests().iter().any(|r| r.json()["token"] == plaintext));
    for secret in [SECRET, plaintext, "token-1", "Bearer"] {
        assert!(!log.contains(secret), "`{secret}` appears in the agent's output");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_and_lag_gauges_rise_while_runs_are_held_and_return_to_zero() {
    let tansu = Tansu::start();
    tansu.create_topic(RUNS, 1).await;
    tansu.create_topic(CHANGES, 1).await;
    let (port, target) = (FakePort::start().await, FakeTarget::start().await);
    let http_port = free_port().to_string();
    let http = format!("127.0.0.1:{http_port}");
    let env = crate::support::broker::agent_env(
        &tansu.bootstrap,
        &port.base(),
        &mapping_file("obs-gauges", &json!([{"enabled": true}])),
        "org_1.gauges",
        &[("AGENT_HTTP_PORT", &http_port), ("AGENT_MAX_IN_FLIGHT", "2")],
    );
    let mut agent = AgentProcess::start(&env, "gauges");
    let lag = format!("port_agent_consumer_lag{{topic=\"{RUNS}\",partition=\"0\"}}");
    let gauges = |http: &str| {
        let (_, text) = http_get(http, "/metrics")?;
        Some((
            sample(&text, "port_agent_messages_in_flight")?,
            sample(&text, &lag)?,
        ))
    };
    // One run first, so that an offset is committed and the lag is known.
    let url = target.url("/run");
    let runs: Vec<_> = signed_runs(7, &url, false)
        .into_iter()
        .map(|(_, m)| (0, m))
        .collect();
    produce(&tansu.bootstrap, RUNS, runs[..1].to_vec()).await;
    eventually_some("the first run committed", Duration::from_secs(60), || {
        (tansu.committed("org_1.gauges", RUNS, 1) == [1]).then_some(())
    })
    .await;

    // Six more, held 8 s each at the target: two in flight, committed
    // offset 1, log end 7.
    target.answer_after(200, Duration::from_secs(8));
    produce(&tansu.bootstrap, RUNS, runs[1..].to_vec()).await;
    eventually_some("two held, lag 6", Duration::from_secs(20), || {
        (gauges(&http)? == (2.0, 6.0)).then_some(())
    })
    .await;
    target.answer(200, "");
    eventually_some("nothing in flight, lag 0", Duration::from_secs(40), || {
        (gauges(&http)? == (0.0, 0.0)).then_some(())
    })
    .await;
    assert_eq!(target.requests().len(), 7);
    agent.signal("-TERM");
    assert_eq!(agent.wait(Duration::from_secs(30)), Some(0));
}
