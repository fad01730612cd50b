//! `KafkaSource` with a no-op pipeline against librdkafka's mock cluster:
//! the Kafka side of the agent alone (consumer, prefetch, runner, watermark
//! commits), with nothing behind it. It checks that a backlog is drained
//! and committed; the rate it prints (`--nocapture`) is the ceiling the
//! Kafka side puts on the agent, for profiling (`perf record` on the test
//! binary, release build). No timed assertion: rates are not tested here.
//!
//!     cargo test --release --test it kafka_source_noop -- --nocapture

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use port_agent::delivery::Delivery;
use port_agent::outcome::{Disposition, Outcome};
use port_agent::settings::{KafkaSettings, LimitSettings};
use port_agent::shutdown;
use port_agent::source::kafka::{Connection, KafkaOptions, KafkaSource, Status};
use port_agent::source::Process;
use port_agent::telemetry::server::Health;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::BaseConsumer;
use rdkafka::mocking::MockCluster;
use serde_json::json;

const RUNS: &str = "org_1.runs";
const CHANGES: &str = "org_1.change.log";
const PARTITIONS: i32 = 3;
/// The longest a test may take, its runtime's shutdown included
/// ([`testkit::wait::bounded`]): a hang fails the test with a message.
const TEST_LIMIT: std::time::Duration = std::time::Duration::from_secs(300);

/// Counts deliveries, notes the first and the last, and answers
/// "delivered" at once.
#[derive(Default)]
struct NoOp {
    seen: AtomicUsize,
    first: OnceLock<Instant>,
    last: Mutex<Option<Instant>>,
}

fn delivered() -> Outcome {
    Outcome::new(Disposition::Delivered(200))
}

impl Process for NoOp {
    async fn process(&self, _delivery: &Delivery) -> Outcome {
        let now = Instant::now();
        self.first.get_or_init(|| now);
        *self.last.lock().unwrap() = Some(now);
        self.seen.fetch_add(1, Ordering::Relaxed);
        delivered()
    }

    async fn internal_error(&self, _delivery: &Delivery, _panic: &str) -> Outcome {
        delivered()
    }

    async fn given_up(&self, _delivery: &Delivery, _summary: &str) -> Outcome {
        delivered()
    }
}

fn options(brokers: &str) -> KafkaOptions {
    KafkaOptions {
        settings: KafkaSettings {
            group_id: "org_1.noop".into(),
            runs_topic: RUNS.into(),
            change_log_topic: CHANGES.into(),
            session_timeout_ms: 6000,
            ..KafkaSettings::default()
        },
        connection: Connection::to(brokers),
        limits: LimitSettings {
            max_in_flight: 64,
            drain_timeout: Duration::from_secs(10),
            ..LimitSettings::default()
        },
        commit_interval: Duration::from_millis(100),
    }
}

#[test]
fn a_backlog_drains_and_commits_through_a_no_op_pipeline() {
    testkit::wait::bounded(
        stringify!(a_backlog_drains_and_commits_through_a_no_op_pipeline),
        TEST_LIMIT,
        a_backlog_drains_and_commits_through_a_no_op_pipeline_body,
    )
}

async fn a_backlog_drains_and_commits_through_a_no_op_pipeline_body() {
    // 4,500 messages of about 1 KB (the mock keeps 5 MiB per partition).
    const N: usize = 4_500;
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic(RUNS, PARTITIONS, 1).unwrap();
    cluster.create_topic(CHANGES, 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let pad = "n".repeat(900);
    let messages = (0..N)
        .map(|i| {
            (
                (i % PARTITIONS as usize) as i32,
                None,
                json!({"i": i, "pad": pad}),
            )
        })
        .collect();
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &brokers);
    testkit::tansu::produce_with(config, RUNS, messages).await;

    let noop = Arc::new(NoOp::default());
    let opts = options(&brokers);
    let (trigger, stop) = shutdown::channel();
    let source =
        KafkaSource::connect(&opts, Arc::<Status>::default(), Health::new("test"), stop.clone()).unwrap();
    let runner = tokio::spawn(port_agent::source::run(
        source,
        noop.clone(),
        opts.limits.clone(),
        stop,
    ));
    testkit::wait::eventually("every message processed", Duration::from_secs(60), || {
        noop.seen.load(Ordering::Relaxed) >= N
    })
    .await;
    let first = *noop.first.get().unwrap();
    let last = noop.last.lock().unwrap().unwrap();
    let elapsed = last.duration_since(first).as_secs_f64();
    eprintln!(
        "KafkaSource, no-op pipeline, mock cluster: {N} messages, first to last {elapsed:.3} s ({:.0} msg/s)",
        (N - 1) as f64 / elapsed.max(1e-9)
    );
    trigger.fire();
    let _ = runner.await.unwrap();
    assert_eq!(noop.seen.load(Ordering::Relaxed), N, "each message once");

    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "org_1.noop")
        .create()
        .unwrap();
    testkit::wait::eventually(
        "every partition committed to its end",
        Duration::from_secs(30),
        || {
            testkit::tansu::committed_offsets(&c, RUNS, PARTITIONS)
                .iter()
                .sum::<i64>()
                == N as i64
        },
    )
    .await;
}
