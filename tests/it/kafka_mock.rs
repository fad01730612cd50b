//! The Kafka engine against librdkafka's in-process mock cluster: ordering,
//! watermark commits, rebalances and injected failures.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{action_run, signed, SECRET};
use port_agent::http::ResponseContext;
use port_agent::invoke::{InvokeError, Invoker, OutgoingRequest, TargetResponse};
use port_agent::mapping::{JqEnv, MappingSet};
use port_agent::pipeline::Pipeline;
use port_agent::port::{PortCall, PortError, RecordingReporter, Reporter};
use port_agent::report::FailureSummary;
use port_agent::settings::RunLogs;
use port_agent::settings::{KafkaSettings, LimitSettings};
use port_agent::shutdown;
use port_agent::source::kafka::{Connection, KafkaOptions, KafkaSource, Status};
use port_agent::telemetry::server::Health;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;
use tokio::sync::Notify;

/// The tests that make the agent panic run one at a time: the one that
/// counts panics reads a process-wide metric.
static PANIC_TESTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const RUNS: &str = "org_1.runs";
const CHANGES: &str = "org_1.change.log";
/// The longest a test may take, its runtime's shutdown included
/// ([`testkit::wait::bounded`]): a hang fails the test with a message.
const TEST_LIMIT: std::time::Duration = std::time::Duration::from_secs(300);

#[derive(Debug, Clone)]
enum Event {
    Start(String),
    End(String),
}

/// A target stand-in that records when each run starts and ends, can hold a
/// run until released, and tracks how many requests overlap.
#[derive(Default)]
struct TestTarget {
    events: Mutex<Vec<Event>>,
    gates: Mutex<HashMap<String, Arc<Notify>>>,
    delay: Mutex<Duration>,
    /// Runs whose request makes the invoker panic (a bug stand-in).
    panic_on: Mutex<BTreeSet<String>>,
    active: AtomicUsize,
    max_active: AtomicUsize,
}

impl TestTarget {
    fn hold(&self, run: &str) -> Arc<Notify> {
        let n = Arc::new(Notify::new());
        self.gates.lock().unwrap().insert(run.to_string(), n.clone());
        n
    }
    fn ended(&self) -> Vec<String> {
        let events = self.events.lock().unwrap();
        events
            .iter()
            .filter_map(|e| {
                if let Event::End(r) = e {
                    Some(r.clone())
                } else {
                    None
                }
            })
            .collect()
    }
}

#[derive(Clone)]
struct SharedTarget(Arc<TestTarget>);

impl Invoker for SharedTarget {
    async fn send(&self, request: &OutgoingRequest) -> Result<TargetResponse, InvokeError> {
        let body: Value = serde_json::from_str(&request.body).unwrap();
        let run = body["context"]["runId"].as_str().unwrap().to_string();
        let t = &self.0;
        t.events.lock().unwrap().push(Event::Start(run.clone()));
        if t.panic_on.lock().unwrap().contains(&run) {
            panic!("test invoker panics on {run}");
        }
        let now = t.active.fetch_add(1, Ordering::SeqCst) + 1;
        t.max_active.fetch_max(now, Ordering::SeqCst);
        let gate = t.gates.lock().unwrap().get(&run).cloned();
        match gate {
            Some(g) => g.notified().await,
            None => {
                let d = *t.delay.lock().unwrap();
                tokio::time::sleep(d).await
            }
        }
        t.active.fetch_sub(1, Ordering::SeqCst);
        t.events.lock().unwrap().push(Event::End(run));
        Ok(TargetResponse {
            response: ResponseContext {
                status: 200,
                headers: vec![],
                text: String::new(),
            },
            attempts: 1,
            truncated: false,
        })
    }
}

/// A Kafka source that connects when run, and the pipeline it runs
/// through; `status` is the source's, readable while it runs.
struct KafkaEngine<I, R> {
    opts: KafkaOptions,
    pipeline: Arc<Pipeline<I, R>>,
    status: Arc<Status>,
}

impl<I: Invoker + 'static, R: Reporter + 'static> KafkaEngine<I, R> {
    fn new(opts: KafkaOptions, pipeline: Arc<Pipeline<I, R>>) -> Self {
        let status = Arc::default();
        KafkaEngine {
            opts,
            pipeline,
            status,
        }
    }

    async fn run(self, stop: shutdown::Shutdown) -> rdkafka::error::KafkaResult<()> {
        let health = Health::new("test");
        let source = KafkaSource::connect(&self.opts, self.status, health, stop.clone())?;
        let Ok(()) = port_agent::source::run(source, self.pipeline, self.opts.limits.clone(), stop).await;
        Ok(())
    }
}

type Engine = KafkaEngine<SharedTarget, RecordingReporter>;

fn engine(brokers: &str, target: &Arc<TestTarget>, max_in_flight: usize) -> Engine {
    engine_with(brokers, target, max_in_flight, RecordingReporter::default(), None)
}

/// [`engine`] reporting to `reporter` (a clone shares its calls), with an
/// optional dead-letter topic.
fn engine_with(
    brokers: &str,
    target: &Arc<TestTarget>,
    max_in_flight: usize,
    reporter: RecordingReporter,
    dlq_topic: Option<&str>,
) -> Engine {
    engine_reporting_to(brokers, target, max_in_flight, reporter, dlq_topic)
}

/// [`engine_with`] for any reporter.
fn engine_reporting_to<R: Reporter + 'static>(
    brokers: &str,
    target: &Arc<TestTarget>,
    max_in_flight: usize,
    reporter: R,
    dlq_topic: Option<&str>,
) -> KafkaEngine<SharedTarget, R> {
    let mut config = crate::support::pipeline::config();
    config.report.run_logs = RunLogs::Off;
    let mappings = MappingSet::parse(r#"[{"enabled": true}]"#).unwrap();
    let pipeline = Pipeline::new(
        config,
        Arc::new(mappings),
        JqEnv::default(),
        SharedTarget(target.clone()),
        reporter,
    );
    let opts = KafkaOptions {
        settings: KafkaSettings {
            group_id: "org_1.test".into(),
            runs_topic: RUNS.into(),
            change_log_topic: CHANGES.into(),
            session_timeout_ms: 6000,
            dlq_topic: dlq_topic.map(str::to_string),
            ..KafkaSettings::default()
        },
        connection: Connection {
            extra: vec![("topic.metadata.refresh.interval.ms".into(), "500".into())],
            ..Connection::to(brokers)
        },
        limits: LimitSettings {
            max_in_flight,
            drain_timeout: Duration::from_secs(10),
            ..LimitSettings::default()
        },
        commit_interval: Duration::from_millis(100),
    };
    KafkaEngine::new(opts, Arc::new(pipeline))
}

async fn produce(brokers: String, messages: Vec<(i32, Option<String>, Value)>) {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &brokers);
    crate::support::broker::produce_with(config, RUNS, messages).await;
}

fn run_msg(id: &str) -> Value {
    signed(
        action_run(id, "http://target.invalid/x", "POST", false),
        SECRET,
        1,
    )
}

/// Committed offsets of the test group, per partition of the runs topic.
fn committed(brokers: &str, partitions: i32) -> BTreeMap<i32, i64> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "org_1.test")
        .create()
        .unwrap();
    (0..partitions)
        .zip(crate::support::broker::committed_offsets(&c, RUNS, partitions))
        .collect()
}

/// Wait for `cond`, failing after a generous deadline (no fixed sleeps).
async fn eventually(what: &str, cond: impl FnMut() -> bool) {
    crate::support::broker::eventually(what, Duration::from_secs(60), cond).await
}

fn cluster(partitions: i32) -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("port_agent=debug,info")
        .try_init();
    let c = MockCluster::new(3).unwrap();
    c.create_topic(RUNS, partitions, 1).unwrap();
    c.create_topic(CHANGES, 1, 1).unwrap();
    c
}

#[test]
fn same_key_runs_in_order_while_keyless_messages_overlap() {
    testkit::wait::bounded(
        stringify!(same_key_runs_in_order_while_keyless_messages_overlap),
        TEST_LIMIT,
        same_key_runs_in_order_while_keyless_messages_overlap_body,
    )
}

async fn same_key_runs_in_order_while_keyless_messages_overlap_body() {
    let cluster = cluster(1);
    let brokers = cluster.bootstrap_servers();
    let mut msgs = Vec::new();
    for i in 0..10 {
        for key in ["a", "b"] {
            msgs.push((0, Some(key.to_string()), run_msg(&format!("r_{key}{i:02}"))));
        }
        msgs.push((0, None, run_msg(&format!("r_n{i:02}"))));
    }
    produce(brokers.clone(), msgs).await;
    let target = Arc::new(TestTarget::default());
    *target.delay.lock().unwrap() = Duration::from_millis(15);
    let engine = engine(&brokers, &target, 16);
    let (trigger, stop) = shutdown::channel();
    let run = tokio::spawn(async move { engine.run(stop).await });
    eventually("30 runs done", || target.ended().len() == 30).await;
    trigger.fire();
    run.await.unwrap().unwrap();

    let events = target.events.lock().unwrap().clone();
    for key in ["a", "b"] {
        // Starts and ends of one key alternate: start i, end i, start i+1 …
        let seq: Vec<String> = events
            .iter()
            .filter_map(|e| match e {
                Event::Start(r) if r.starts_with(&format!("r_{key}")) => Some(format!("S{r}")),
                Event::End(r) if r.starts_with(&format!("r_{key}")) => Some(format!("E{r}")),
                _ => None,
            })
            .collect();
        let want: Vec<String> = (0..10)
            .flat_map(|i| [format!("Sr_{key}{i:02}"), format!("Er_{key}{i:02}")])
            .collect();
        assert_eq!(seq, want, "key {key} must run strictly in order");
    }
    assert!(
        target.max_active.load(Ordering::SeqCst) > 2,
        "keyless and distinct keys overlap"
    );
    assert_eq!(committed(&brokers, 1)[&0], 30);
}

#[test]
fn an_unfinished_message_holds_the_commit_back() {
    testkit::wait::bounded(
        stringify!(an_unfinished_message_holds_the_commit_back),
        TEST_LIMIT,
        an_unfinished_message_holds_the_commit_back_body,
    )
}

async fn an_unfinished_message_holds_the_commit_back_body() {
    let cluster = cluster(1);
    let brokers = cluster.bootstrap_servers();
    let msgs: Vec<_> = (0..10).map(|i| (0, None, run_msg(&format!("r_{i}")))).collect();
    produce(brokers.clone(), msgs).await;
    let target = Arc::new(TestTarget::default());
    let gate = target.hold("r_3");
    let engine = engine(&brokers, &target, 16);
    let (trigger, stop) = shutdown::channel();
    let run = tokio::spawn(async move { engine.run(stop).await });

    eventually("the other 9 runs done", || target.ended().len() == 9).await;
    // The watermark reaches offset 3 (the held message) and stops there.
    eventually("offset 3 committed", || {
        committed(&brokers, 1).get(&0) == Some(&3)
    })
    .await;
    assert!(!target.ended().contains(&"r_3".to_string()));
    assert_eq!(committed(&brokers, 1)[&0], 3, "never past an unfinished message");

    gate.notify_one();
    eventually("all committed", || committed(&brokers, 1).get(&0) == Some(&10)).await;
    trigger.fire();
    run.await.unwrap().unwrap();
    assert_eq!(target.ended().len(), 10);
}

#[test]
fn two_consumers_split_the_partitions_and_a_rebalance_loses_nothing() {
    testkit::wait::bounded(
        stringify!(two_consumers_split_the_partitions_and_a_rebalance_loses_nothing),
        TEST_LIMIT,
        two_consumers_split_the_partitions_and_a_rebalance_loses_nothing_body,
    )
}

async fn two_consumers_split_the_partitions_and_a_rebalance_loses_nothing_body() {
    let cluster = cluster(4);
    let brokers = cluster.bootstrap_servers();
    let first: Vec<_> = (0..200)
        .map(|i| (i % 4, None, run_msg(&format!("r_{i:03}"))))
        .collect();
    produce(brokers.clone(), first).await;

    let target = Arc::new(TestTarget::default());
    *target.delay.lock().unwrap() = Duration::from_millis(5);
    let (trigger, stop) = shutdown::channel();
    let a = engine(&brokers, &target, 8);
    let b = engine(&brokers, &target, 8);
    let (a_status, b_status) = (a.status.clone(), b.status.clone());
    let run_a = tokio::spawn({
        let stop = stop.clone();
        async move { a.run(stop).await }
    });
    eventually("A makes progress", || target.ended().len() >= 20).await;
    // B joins mid-stream: the group rebalances while A has work in flight.
    let run_b = tokio::spawn({
        let stop = stop.clone();
        async move { b.run(stop).await }
    });
    eventually("both consumers hold partitions", || {
        a_status.assigned.load(Ordering::SeqCst) > 0 && b_status.assigned.load(Ordering::SeqCst) > 0
    })
    .await;
    assert_eq!(
        a_status.assigned.load(Ordering::SeqCst) + b_status.assigned.load(Ordering::SeqCst),
        5,
        "the five partitions (4 runs, 1 change log) are split between the two"
    );
    let more: Vec<_> = (200..300)
        .map(|i| (i % 4, None, run_msg(&format!("r_{i:03}"))))
        .collect();
    produce(brokers.clone(), more).await;

    let all: BTreeSet<String> = (0..300).map(|i| format!("r_{i:03}")).collect();
    eventually("every run delivered", || {
        target.ended().iter().cloned().collect::<BTreeSet<_>>() == all
    })
    .await;
    eventually("every partition committed to the end", || {
        committed(&brokers, 4).values().sum::<i64>() == 300
    })
    .await;
    trigger.fire();
    run_a.await.unwrap().unwrap();
    run_b.await.unwrap().unwrap();
    // At least once. The number of duplicates is not bounded here: the mock
    // cluster answers every commit with REBALANCE_IN_PROGRESS while the group
    // rebalances (real Kafka accepts them from the current generation, which
    // the commit on revoke relies on), so whatever was processed since the
    // last commit comes again. The bound is checked against a real broker in
    // tests/it/kafka_tansu.rs.
    assert!(target.ended().len() >= 300, "at least once");
}

#[test]
fn injected_errors_and_a_broker_outage_lose_nothing() {
    testkit::wait::bounded(
        stringify!(injected_errors_and_a_broker_outage_lose_nothing),
        TEST_LIMIT,
        injected_errors_and_a_broker_outage_lose_nothing_body,
    )
}

async fn injected_errors_and_a_broker_outage_lose_nothing_body() {
    let cluster = cluster(3);
    let brokers = cluster.bootstrap_servers();
    let msgs: Vec<_> = (0..90)
        .map(|i| (i % 3, Some(format!("k{}", i % 7)), run_msg(&format!("r_{i:02}"))))
        .collect();
    produce(brokers.clone(), msgs[..45].to_vec()).await;

    let target = Arc::new(TestTarget::default());
    *target.delay.lock().unwrap() = Duration::from_millis(2);
    let engine = engine(&brokers, &target, 8);
    let (trigger, stop) = shutdown::channel();
    let run = tokio::spawn(async move { engine.run(stop).await });
    eventually("some progress", || target.ended().len() >= 10).await;

    // Fetches and commits fail for a while, then a broker goes down and up.
    let errs = [RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION; 5];
    cluster.request_errors(RDKafkaApiKey::Fetch, &errs);
    let errs = [RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT; 3];
    cluster.request_errors(RDKafkaApiKey::OffsetCommit, &errs);
    cluster.broker_down(1).unwrap();
    let rest = tokio::spawn(produce(brokers.clone(), msgs[45..].to_vec()));
    // Keep the broker down long enough for clients to notice; correctness
    // does not depend on this pause, only on everything arriving afterwards.
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.broker_up(1).unwrap();
    // Bounded, so that a stuck producer fails the test instead of hanging it.
    tokio::time::timeout(Duration::from_secs(120), rest)
        .await
        .expect("the second half is produced within 2 minutes")
        .unwrap();

    let all: BTreeSet<String> = (0..90).map(|i| format!("r_{i:02}")).collect();
    eventually("every run delivered", || {
        target.ended().iter().cloned().collect::<BTreeSet<_>>() == all
    })
    .await;
    eventually("committed to the end", || {
        committed(&brokers, 3).values().sum::<i64>() == 90
    })
    .await;
    trigger.fire();
    tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the source stops within 2 minutes of the shutdown")
        .unwrap()
        .unwrap();
}

/// Read `n` messages of `topic` partition 0 from the start: each one's
/// headers, by name.
fn read_topic(brokers: &str, topic: &str, n: usize) -> Vec<BTreeMap<String, String>> {
    use rdkafka::message::{Headers, Message};
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "org_1.dlq-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning).unwrap();
    c.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut out = Vec::new();
    while out.len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} messages on {topic}",
            out.len()
        );
        let Some(m) = c.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = m.unwrap();
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        let v = h.value.map(|v| String::from_utf8_lossy(v).into_owned());
                        (h.key.to_string(), v.unwrap_or_default())
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push(headers);
    }
    out
}

/// Issue 11: a panic while processing one message (here in the invoker) is
/// that message's failure: reported to Port with the internal-error summary
/// (COMPLETED/FAILED for a node run), counted, dead-lettered, and acked, so
/// the partition's commit moves past it and nothing stalls, even with a
/// window of 4 in flight.
#[test]
fn a_panic_fails_only_its_run_and_stalls_nothing() {
    testkit::wait::bounded(
        stringify!(a_panic_fails_only_its_run_and_stalls_nothing),
        TEST_LIMIT,
        a_panic_fails_only_its_run_and_stalls_nothing_body,
    )
}

async fn a_panic_fails_only_its_run_and_stalls_nothing_body() {
    // The panic counter is process-wide: no other panic test runs meanwhile.
    let _serial = PANIC_TESTS.lock().await;
    let mappings = port_agent::mapping::MappingSet::parse("[]").expect("no mapping");
    let known = port_agent::telemetry::metrics::Known {
        polling: false,
        topics: vec!["org_1.runs"],
        mapping_fields: &mappings.error_fields(),
        mapping_sha: "",
        outcomes: &port_agent::outcome::Outcome::NAMES,
        port_calls: &port_agent::port::Endpoint::labels(),
    };
    let handle = port_agent::telemetry::metrics::install(&known).expect("the only recorder of this process");
    let cluster = cluster(1);
    cluster.create_topic("org_1.dlq", 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let ids: Vec<String> = (0..20)
        .map(|i| {
            if i == 13 {
                "wfnr_13".to_string()
            } else {
                format!("r_{i:02}")
            }
        })
        .collect();
    // r_07 and r_08 share a key: the successor of a panicked message runs.
    let msgs: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (0, (i == 7 || i == 8).then(|| "k".to_string()), run_msg(id)))
        .collect();
    produce(brokers.clone(), msgs).await;

    let target = Arc::new(TestTarget::default());
    target
        .panic_on
        .lock()
        .unwrap()
        .extend(["r_07".to_string(), "wfnr_13".to_string()]);
    let reporter = RecordingReporter::default();
    let engine = engine_with(&brokers, &target, 4, reporter.clone(), Some("org_1.dlq"));
    let (trigger, stop) = shutdown::channel();
    let run = tokio::spawn(async move { engine.run(stop).await });

    let delivered: BTreeSet<String> = ids
        .iter()
        .filter(|id| *id != "r_07" && *id != "wfnr_13")
        .cloned()
        .collect();
    eventually("the 18 other runs delivered", || {
        target.ended().iter().cloned().collect::<BTreeSet<_>>() == delivered
    })
    .await;
    eventually("committed to the end of the partition", || {
        committed(&brokers, 1).get(&0) == Some(&20)
    })
    .await;
    trigger.fire();
    run.await.unwrap().unwrap();

    assert_eq!(target.ended().len(), 18, "every other run exactly once");
    let starts: Vec<String> = target
        .events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            Event::Start(r) if r == "r_07" || r == "wfnr_13" => Some(r.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(starts, ["r_07", "wfnr_13"], "a panicked run is not re-sent");
    // Async runs that succeed report nothing (run logs are off): the only
    // Port calls are the two failures.
    let mut calls = reporter.take();
    calls.sort_by_key(|c| c.path());
    assert_eq!(
        calls,
        [
            PortCall::RunPatch {
                run_id: "r_07".into(),
                body: serde_json::json!({"status": "FAILURE", "summary": FailureSummary::InternalError.to_string()}),
            },
            PortCall::NodeRunPatch {
                run_id: "wfnr_13".into(),
                body: serde_json::json!({"status": "COMPLETED", "result": "FAILED"}),
            },
        ]
    );
    assert_eq!(
        FailureSummary::InternalError.to_string(),
        "Internal error in the agent while processing this run"
    );

    let mut dead = read_topic(&brokers, "org_1.dlq", 2);
    dead.sort_by_key(|h| h["x-port-agent-offset"].parse::<i64>().unwrap());
    for (h, (offset, run)) in dead.iter().zip([("7", "r_07"), ("13", "wfnr_13")]) {
        assert_eq!(h["x-port-agent-outcome"], "internal_error");
        assert_eq!(h["x-port-agent-topic"], RUNS);
        assert_eq!(h["x-port-agent-partition"], "0");
        assert_eq!(h["x-port-agent-offset"], offset);
        assert_eq!(
            h["x-port-agent-error"],
            format!("internal error: test invoker panics on {run}")
        );
    }

    let text = handle.render();
    assert!(text.contains("\nport_agent_panics_total 2\n"), "{text}");
    assert!(
        text.contains("port_agent_messages_done_total{outcome=\"internal_error\"} 2\n"),
        "{text}"
    );
}

/// A reporter that panics on the first status PATCH of one run (a bug
/// stand-in), recording every other call.
#[derive(Clone)]
struct PanickyReporter {
    inner: RecordingReporter,
    run: &'static str,
    panicked: Arc<std::sync::atomic::AtomicBool>,
}

impl Reporter for PanickyReporter {
    async fn send(&self, call: &PortCall) -> Result<(), PortError> {
        if let PortCall::RunPatch { run_id, .. } = call {
            if run_id == self.run && !self.panicked.swap(true, Ordering::SeqCst) {
                panic!("test reporter panics on {run_id}");
            }
        }
        self.inner.send(call).await
    }
}

/// README: a panic while processing a message is caught for that message
/// alone, here in the reporter: the run is reported failed with the
/// internal-error summary, the others are reported as usual, and the
/// partition is committed to its end.
#[test]
fn a_panic_in_the_reporter_fails_only_its_run() {
    testkit::wait::bounded(
        stringify!(a_panic_in_the_reporter_fails_only_its_run),
        TEST_LIMIT,
        a_panic_in_the_reporter_fails_only_its_run_body,
    )
}

async fn a_panic_in_the_reporter_fails_only_its_run_body() {
    let _serial = PANIC_TESTS.lock().await;
    let cluster = cluster(1);
    let brokers = cluster.bootstrap_servers();
    let ids: Vec<String> = (0..5).map(|i| format!("r_{i:02}")).collect();
    let msgs: Vec<_> = ids
        .iter()
        .map(|id| {
            let run = action_run(id, "http://target.invalid/x", "POST", true);
            (0, None, signed(run, SECRET, 1))
        })
        .collect();
    produce(brokers.clone(), msgs).await;
    let target = Arc::new(TestTarget::default());
    let reporter = PanickyReporter {
        inner: RecordingReporter::default(),
        run: "r_02",
        panicked: Arc::default(),
    };
    let recorded = reporter.inner.clone();
    let panicked = reporter.panicked.clone();
    let engine = engine_reporting_to(&brokers, &target, 4, reporter, None);
    let (trigger, stop) = shutdown::channel();
    let run = tokio::spawn(async move { engine.run(stop).await });
    eventually("committed to the end of the partition", || {
        committed(&brokers, 1).get(&0) == Some(&5)
    })
    .await;
    trigger.fire();
    run.await.unwrap().unwrap();
    assert!(panicked.load(Ordering::SeqCst), "the reporter panicked");
    assert_eq!(target.ended().len(), 5, "every run reached the target once");
    let patches: BTreeMap<String, Value> = recorded
        .take()
        .into_iter()
        .filter_map(|c| match c {
            PortCall::RunPatch { run_id, body } => Some((run_id, body)),
            _ => None,
        })
        .collect();
    for id in &ids {
        let expected = if id == "r_02" {
            serde_json::json!({"status": "FAILURE", "summary": FailureSummary::InternalError.to_string()})
        } else {
            serde_json::json!({"status": "SUCCESS"})
        };
        assert_eq!(patches.get(id), Some(&expected), "{id}: {patches:?}");
    }
}

/// Issue 23's hang, made deterministic: the cluster goes away first, then
/// the runtime is dropped with the Kafka source still running, so the last
/// handle to the consumer is dropped by the runtime's shutdown. Closing the
/// consumer runs the commit on revoke; before the fix that commit waited
/// for the gone brokers with no deadline, on the thread dropping the
/// runtime, for ever. Now the close runs on a thread of its own and every
/// commit has a deadline: dropping the runtime ends within the commit
/// timeout. The test turns a hang into a failure: the drop runs on a
/// thread of its own, waited for 60 s.
#[test]
fn dropping_the_runtime_after_the_cluster_is_gone_does_not_hang() {
    let (done, dropped) = std::sync::mpsc::channel();
    let started = Instant::now();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let cluster = cluster(1);
        let brokers = cluster.bootstrap_servers();
        let target = Arc::new(TestTarget::default());
        let (trigger, stop) = shutdown::channel();
        rt.block_on(async {
            let msgs: Vec<_> = (0..3).map(|i| (0, None, run_msg(&format!("r_{i}")))).collect();
            produce(brokers.clone(), msgs).await;
            let engine = engine(&brokers, &target, 4);
            // Never awaited: the source is still running when the runtime goes.
            tokio::spawn(async move { engine.run(stop).await });
            eventually("3 runs done", || target.ended().len() == 3).await;
            eventually("committed", || committed(&brokers, 1).get(&0) == Some(&3)).await;
        });
        drop(cluster);
        drop(rt);
        drop(trigger);
        let _ = done.send(());
    });
    dropped.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|_| {
        panic!(
            "dropping the runtime did not end within 60 s of the start ({:?} ago): the consumer's close waits for brokers that are gone",
            started.elapsed()
        )
    });
}
