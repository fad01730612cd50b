//! A message that kills the agent (issue 23, "a crash cannot loop"),
//! through the built binary and librdkafka's mock cluster: the binary is
//! built with `--features fault-injection` (scripts/test.sh does), which
//! makes it abort, as an OOM kill would, on the run named by
//! `PORT_AGENT_FAULT_ABORT_RUN_ID`. The test restarts it as Kubernetes
//! would (same group) every time it dies.
//!
//! The mock cluster, not tansu: the guard keeps what was in flight in the
//! metadata of the committed offsets, which tansu 0.6 does not keep (its
//! OffsetFetch answers an empty string; the agent then says the guard is
//! off, `kafka_tansu::the_agent_says_when_the_broker_drops_commit_metadata`)
//! and librdkafka's mock cluster, like Kafka, does.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::support::agent::{mapping_file, patches_of};
use crate::support::broker::{agent_env, eventually, produce_with, AgentProcess};
use crate::support::{action_run, http_get, signed, FakePort, FakeTarget, SECRET};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};

const RUNS: &str = "org_1.runs";
const CHANGES: &str = "org_1.change.log";
const DLQ: &str = "org_1.dlq";
const GROUP: &str = "org_1.crash-loop";
const POISON: &str = "r_poison";
/// `AGENT_CRASH_LOOP_LIMIT`'s default.
const LIMIT: usize = 3;

/// The committed offset of the runs topic's partition 0 and its metadata.
fn committed(brokers: &str) -> (i64, String) {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", GROUP)
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(RUNS, 0);
    let answer = c
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed offsets");
    let e = answer.find_partition(RUNS, 0).expect("partition 0");
    let offset = match e.offset() {
        Offset::Offset(o) => o,
        _ => -1,
    };
    (offset, e.metadata().to_string())
}

/// The headers of the first message of `topic` partition 0, if any within
/// `within`.
fn first_message_headers(brokers: &str, topic: &str, within: Duration) -> Option<BTreeMap<String, String>> {
    use rdkafka::message::{Headers, Message};
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "org_1.dlq-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning).ok()?;
    c.assign(&tpl).ok()?;
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            let headers = m.headers()?;
            return Some(
                headers
                    .iter()
                    .map(|h| {
                        let v = h.value.map(|v| String::from_utf8_lossy(v).into_owned());
                        (h.key.to_string(), v.unwrap_or_default())
                    })
                    .collect(),
            );
        }
    }
    None
}

/// How many times the target received each run.
fn at_target(target: &FakeTarget) -> BTreeMap<String, usize> {
    let mut n = BTreeMap::new();
    for r in target.requests() {
        let id = r.json()["context"]["runId"].as_str().unwrap_or("?").to_string();
        *n.entry(id).or_insert(0) += 1;
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_kills_the_agent_is_failed_after_three_deaths_and_the_others_run_once() {
    if !cfg!(feature = "fault-injection") {
        panic!("this test needs the binary built with `--features fault-injection` (scripts/test.sh builds it so)");
    }
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic(RUNS, 1, 1).expect("runs topic");
    cluster.create_topic(CHANGES, 1, 1).expect("change log topic");
    cluster.create_topic(DLQ, 1, 1).expect("DLQ topic");
    let brokers = cluster.bootstrap_servers();
    let port = FakePort::start().await;
    let target = FakeTarget::start().await;
    target.answer(200, "");
    let url = target.url("/run");
    let run = |id: &str| signed(action_run(id, &url, "POST", true), SECRET, 1);
    let produce = |msgs: Vec<(i32, Option<String>, Value)>| {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &brokers);
        produce_with(config, RUNS, msgs)
    };

    let mapping = mapping_file("crash-loop", &json!([{"enabled": true}]));
    let http_port = testkit::net::free_port().to_string();
    let env = agent_env(
        &brokers,
        &port.base(),
        &mapping,
        GROUP,
        &[
            ("KAFKA_CONSUMER_SESSION_TIMEOUT_MS", "3000"),
            ("AGENT_MAX_IN_FLIGHT", "4"),
            ("AGENT_DLQ_TOPIC", DLQ),
            ("AGENT_RUN_LOGS", "off"),
            ("AGENT_HTTP_PORT", &http_port),
            ("LOG_LEVEL", "info"),
            ("PORT_AGENT_FAULT_ABORT_RUN_ID", POISON),
        ],
    );
    let reported = |id: &str| patches_of(&port, id);

    // Five runs done and committed: before the poison, nothing suspect.
    let before: Vec<String> = (0..5).map(|i| format!("r_a{i}")).collect();
    produce(before.iter().map(|id| (0, None, run(id))).collect()).await;
    let mut agent = AgentProcess::start(&env, "crash-loop-0");
    eventually(
        "the first five runs reported and committed",
        Duration::from_secs(60),
        || before.iter().all(|id| reported(id).len() == 1) && committed(&brokers).0 == 5,
    )
    .await;

    // The poison, then five runs of the same key: they wait for it, so
    // none of them is in flight when it kills the agent.
    let after: Vec<String> = (0..5).map(|i| format!("r_b{i}")).collect();
    let mut msgs = vec![(0, Some("k".to_string()), run(POISON))];
    msgs.extend(after.iter().map(|id| (0, Some("k".to_string()), run(id))));
    produce(msgs).await;

    // Restart it every time it dies, as Kubernetes would.
    let mut deaths = 0;
    let deadline = Instant::now() + Duration::from_secs(240);
    while reported(POISON).is_empty() {
        if let Some(status) = agent.exited().expect("wait for the agent") {
            deaths += 1;
            assert!(
                !status.success(),
                "the agent exited cleanly: {status}; log: {}",
                agent.log_tail(20)
            );
            assert!(
                deaths <= LIMIT,
                "the agent died {deaths} times on the same run and never gave it up: a crash loop; last log: {}",
                agent.log_tail(30)
            );
            agent = AgentProcess::start(&env, &format!("crash-loop-{deaths}"));
        }
        assert!(
            Instant::now() < deadline,
            "no FAILURE for the poisoned run after {deaths} deaths; log: {}",
            agent.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eventually("the five runs after it reported", Duration::from_secs(60), || {
        after.iter().all(|id| !reported(id).is_empty())
    })
    .await;
    // And the partition is back to normal: more runs go through.
    let later: Vec<String> = (0..3).map(|i| format!("r_c{i}")).collect();
    produce(later.iter().map(|id| (0, None, run(id))).collect()).await;
    eventually("the later runs reported", Duration::from_secs(60), || {
        later.iter().all(|id| !reported(id).is_empty())
    })
    .await;

    assert_eq!(deaths, LIMIT, "given up at the third death, not earlier or later");
    assert_eq!(
        reported(POISON),
        [json!({"status": "FAILURE", "summary": "the agent stopped 3 times while processing this run"})],
        "the poisoned run is reported FAILURE exactly once"
    );
    let sent = at_target(&target);
    assert!(
        !sent.contains_key(POISON),
        "it never reached the target: {sent:?}"
    );
    for id in before.iter().chain(&after).chain(&later) {
        assert_eq!(sent.get(id), Some(&1), "{id} sent once: {sent:?}");
        assert_eq!(reported(id), [json!({"status": "SUCCESS"})], "{id} reported once");
    }
    let (_, metrics) = http_get(&format!("127.0.0.1:{http_port}"), "/metrics").expect("/metrics answers");
    assert!(
        metrics.lines().any(|l| l == "port_agent_poison_messages_total 1"),
        "{metrics}"
    );
    let dead =
        first_message_headers(&brokers, DLQ, Duration::from_secs(30)).expect("the poison dead-lettered");
    assert_eq!(dead["x-port-agent-offset"], "5");
    assert_eq!(
        dead["x-port-agent-error"],
        "internal error: the agent stopped 3 times while processing this run"
    );
    let log = agent.log_text();
    assert!(
        log.contains("its next messages are processed one at a time"),
        "the restart says why it goes one at a time: {log}"
    );

    agent.signal("-TERM");
    assert_eq!(
        agent.wait(Duration::from_secs(30)),
        Some(0),
        "{}",
        agent.log_text()
    );
    assert_eq!(
        committed(&brokers),
        (14, "port-agent clean".to_string()),
        "committed to the end, left cleanly"
    );
}
