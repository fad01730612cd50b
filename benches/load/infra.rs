//! Processes the harness starts: the tansu broker and the agent under test
//! (testkit's, with the CPU and memory readings the harness takes), both
//! killed on drop, and the producer that fills the runs topic.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};

use testkit::agent::AgentProcess;
use testkit::net::try_free_port;
use testkit::tansu::Tansu;

use crate::procfs;

/// Runs topic of `PORT_ORG_ID=org_1` (the agent's default name).
pub const RUNS_TOPIC: &str = "org_1.runs";
/// Change-log topic of `org_1`.
pub const CHANGE_LOG_TOPIC: &str = "org_1.change.log";
/// Partitions of the runs topic.
pub const RUNS_PARTITIONS: i32 = 3;

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> Result<u16> {
    Ok(try_free_port()?)
}

/// The broker of a run (`--broker`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BrokerKind {
    /// tansu, in memory, in its own process (testkit's).
    Tansu,
    /// librdkafka's mock cluster (`rdkafka::mocking::MockCluster`), in a
    /// process of its own (this executable, `serve-mock-broker`): the agent
    /// and the producer talk TCP to it as to Kafka.
    Mock,
}

impl BrokerKind {
    /// Its name in scenario ids, titles and log file names.
    pub fn name(self) -> &'static str {
        match self {
            BrokerKind::Tansu => "tansu",
            BrokerKind::Mock => "mock",
        }
    }
}

enum BrokerProcess {
    Tansu(Tansu),
    Mock(MockBroker),
}

/// The broker of one scenario run, on 127.0.0.1, logging to a file of the
/// run's directory; killed on drop.
pub struct Broker {
    process: BrokerProcess,
    /// `host:port` of the broker.
    pub bootstrap: String,
}

impl Broker {
    /// Start a broker of `kind`, logging to `<dir>/<kind>.log`.
    pub fn start(kind: BrokerKind, dir: &Path) -> Result<Broker> {
        let log = dir.join(format!("{}.log", kind.name()));
        match kind {
            BrokerKind::Tansu => {
                let tansu = Tansu::try_start(&log).map_err(anyhow::Error::msg)?;
                Ok(Broker {
                    bootstrap: tansu.bootstrap.clone(),
                    process: BrokerProcess::Tansu(tansu),
                })
            }
            BrokerKind::Mock => {
                let mock = MockBroker::start(&log)?;
                Ok(Broker {
                    bootstrap: mock.bootstrap.clone(),
                    process: BrokerProcess::Mock(mock),
                })
            }
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        match &self.process {
            BrokerProcess::Tansu(t) => t.pid(),
            BrokerProcess::Mock(m) => m.child.id(),
        }
    }

    /// Its CPU seconds so far.
    pub fn cpu(&self) -> f64 {
        procfs::cpu_of(self.pid()).unwrap_or(0.0)
    }

    /// An error when `messages` runs of about `messages::MESSAGE_BYTES`
    /// would not all stay on this broker: librdkafka's mock cluster keeps
    /// at most 5 MiB per partition (`rdkafka_mock.c`, `max_size`) and
    /// silently drops the oldest messages beyond that, so the agent would
    /// never see the runs the harness waits for.
    pub fn check_capacity(&self, messages: usize) -> Result<()> {
        if let BrokerProcess::Mock(_) = self.process {
            let per_partition =
                messages.div_ceil(RUNS_PARTITIONS as usize) * (crate::messages::MESSAGE_BYTES + 100);
            if per_partition > MOCK_PARTITION_BYTES {
                bail!(
                    "{messages} messages do not fit the mock cluster (5 MiB per partition, {RUNS_PARTITIONS} partitions: about {} messages)",
                    MOCK_PARTITION_BYTES / (crate::messages::MESSAGE_BYTES + 100) * RUNS_PARTITIONS as usize
                );
            }
        }
        Ok(())
    }

    /// The two topics the agent subscribes to (tansu does not auto-create;
    /// the mock broker creates them at start).
    pub async fn create_topics(&self) -> Result<()> {
        match &self.process {
            BrokerProcess::Tansu(t) => t
                .try_create_topics(&[(RUNS_TOPIC, RUNS_PARTITIONS), (CHANGE_LOG_TOPIC, 1)])
                .await
                .map_err(anyhow::Error::msg),
            BrokerProcess::Mock(_) => Ok(()),
        }
    }

    /// A producer. `batched: false` writes one message per record batch:
    /// tansu 0.6 answers a fetch that starts inside a batch with the next
    /// batch (see tests/it/kafka_tansu.rs), so batch boundaries at every offset
    /// keep that broker bug from losing runs the harness waits for. Batches
    /// (much faster to produce) are for backlogs that are not drained.
    pub fn producer(&self, batched: bool) -> Result<FutureProducer> {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap)
            .set("message.timeout.ms", "120000")
            .set("queue.buffering.max.messages", "1000000")
            .set("queue.buffering.max.kbytes", "1048576")
            .set("max.in.flight.requests.per.connection", "32");
        if batched {
            c.set("linger.ms", "20").set("batch.num.messages", "2000");
        } else {
            c.set("linger.ms", "0").set("batch.num.messages", "1");
        }
        Ok(c.create()?)
    }
}

/// The broker's own share of produce→consume latency: a plain consumer with
/// the agent's fetch settings (no group join: partitions assigned directly)
/// reading the runs topic in a thread of the harness. `join` it for what it
/// saw of the first `count` messages. `fetch_wait_ms` overrides librdkafka's
/// `fetch.wait.max.ms` (500 ms; the agent keeps the default).
pub struct BaselineConsumer {
    thread: std::thread::JoinHandle<Result<Baseline>>,
}

/// What a [`BaselineConsumer`] saw.
pub struct Baseline {
    /// Produce→consume latency of each message, µs (from `"producedAtNs"`).
    pub latencies_us: Vec<u32>,
    /// Receipt time (Unix ns) by run index (from `"runId":"r<index>"`); 0 = not seen.
    pub received_ns: Vec<u64>,
}

impl BaselineConsumer {
    pub fn start(
        broker: &Broker,
        count: usize,
        fetch_wait_ms: Option<u32>,
        deadline: Instant,
    ) -> Result<BaselineConsumer> {
        let mut config = ClientConfig::new();
        if let Some(ms) = fetch_wait_ms {
            config.set("fetch.wait.max.ms", ms.to_string());
        }
        let consumer: BaseConsumer = config
            .set("bootstrap.servers", &broker.bootstrap)
            .set("group.id", "bench-baseline")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .set("queued.min.messages", "1000")
            .set("queued.max.messages.kbytes", "4096")
            .set("fetch.max.bytes", "4194304")
            .set("max.partition.fetch.bytes", "1048576")
            .create()?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..RUNS_PARTITIONS {
            tpl.add_partition_offset(RUNS_TOPIC, p, Offset::Beginning)?;
        }
        consumer.assign(&tpl)?;
        let thread = std::thread::spawn(move || {
            let mut seen = Baseline {
                latencies_us: Vec::with_capacity(count),
                received_ns: vec![0; count],
            };
            let mut messages = 0;
            while messages < count {
                if Instant::now() > deadline {
                    bail!("baseline consumer: {messages} of {count} messages");
                }
                let Some(msg) = consumer.poll(Duration::from_millis(100)) else {
                    continue;
                };
                let now = crate::fakes::unix_ns();
                let msg = msg?;
                let payload = msg.payload().unwrap_or_default();
                messages += 1;
                if let Some(t) = crate::fakes::number_after(payload, br#""producedAtNs":"#) {
                    let us = now.saturating_sub(t) / 1000;
                    seen.latencies_us.push(us.min(u32::MAX as u64) as u32);
                }
                let index = crate::fakes::number_after(payload, br#""runId":"r"#);
                if let Some(slot) = index.and_then(|i| seen.received_ns.get_mut(i as usize)) {
                    if *slot == 0 {
                        *slot = now;
                    }
                }
            }
            Ok(seen)
        });
        Ok(BaselineConsumer { thread })
    }

    pub fn join(self) -> Result<Baseline> {
        self.thread
            .join()
            .map_err(|_| anyhow!("baseline consumer panicked"))?
    }
}

/// Produce `count` messages (keyless, round-robin over the partitions) and
/// wait for every delivery report. `make(i)` is message `i`'s bytes.
pub async fn produce_all(
    producer: &FutureProducer,
    count: usize,
    make: impl Fn(usize) -> Vec<u8>,
) -> Result<()> {
    let mut pending = Vec::with_capacity(count);
    for i in 0..count {
        let payload = make(i);
        let partition = (i % RUNS_PARTITIONS as usize) as i32;
        loop {
            let record = FutureRecord::<(), _>::to(RUNS_TOPIC)
                .partition(partition)
                .payload(&payload);
            match producer.send_result(record) {
                Ok(f) => {
                    pending.push(f);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
    }
    for f in pending {
        f.await
            .map_err(|_| anyhow!("producer dropped a delivery report"))?
            .map_err(|(e, _)| anyhow!("delivery failed: {e}"))?;
    }
    producer.flush(Duration::from_secs(60))?;
    Ok(())
}

/// The agent under test, as its own process (testkit's); killed on drop.
pub struct Agent {
    process: AgentProcess,
    /// Its log file.
    pub log: PathBuf,
    /// `AGENT_HTTP_PORT` (health and readiness).
    pub http_port: u16,
    /// When it was started.
    pub started: Instant,
}

impl Agent {
    /// Start `bin run` with `env` (and `PATH`), logging to `log`.
    pub fn spawn(bin: &Path, env: &[(String, String)], log: &Path, http_port: u16) -> Result<Agent> {
        let started = Instant::now();
        let process =
            AgentProcess::spawn(&[], bin, env, log).with_context(|| format!("start {}", bin.display()))?;
        Ok(Agent {
            process,
            log: log.to_path_buf(),
            http_port,
            started,
        })
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Its CPU seconds so far.
    pub fn cpu(&self) -> f64 {
        procfs::cpu_of(self.pid()).unwrap_or(0.0)
    }

    /// Its peak RSS (`VmHWM`), KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        procfs::peak_rss_kib(&self.pid().to_string()).unwrap_or(0)
    }

    /// Its RSS now (`VmRSS`), KiB.
    pub fn rss_kib(&self) -> u64 {
        procfs::rss_kib(&self.pid().to_string()).unwrap_or(0)
    }

    /// An error if the agent has exited (with the end of its log).
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.process.exited()? {
            bail!(
                "the agent exited early ({status}); last log lines:\n{}",
                self.process.log_tail(15)
            );
        }
        Ok(())
    }

    /// SIGTERM and wait; the exit code (None: killed after `within`).
    pub fn stop(&mut self, within: Duration) -> Option<i32> {
        self.process.stop(within)
    }
}

// ------------------------------------------------------------ mock broker

/// What librdkafka's mock cluster keeps of a partition before it drops the
/// oldest messages.
const MOCK_PARTITION_BYTES: usize = 5 * 1024 * 1024;

/// Options of `load serve-mock-broker`.
#[derive(Debug, Clone, clap::Args)]
pub struct MockArgs {
    /// Brokers of the mock cluster.
    #[arg(long, default_value_t = 1)]
    pub brokers: i32,
}

/// `load serve-mock-broker`: a librdkafka mock cluster with the runs and
/// change-log topics; prints its bootstrap servers on one line and lives
/// until standard input closes (the harness is gone).
pub fn serve_mock(args: MockArgs) -> Result<()> {
    crate::fakes::exit_with_parent();
    let cluster = rdkafka::mocking::MockCluster::new(args.brokers.max(1))?;
    cluster.create_topic(RUNS_TOPIC, RUNS_PARTITIONS, 1)?;
    cluster.create_topic(CHANGE_LOG_TOPIC, 1, 1)?;
    println!("{}", cluster.bootstrap_servers());
    loop {
        std::thread::park();
    }
}

/// The `serve-mock-broker` process, killed on drop.
struct MockBroker {
    child: Child,
    /// Held open: the child exits when it closes.
    _stdin: ChildStdin,
    bootstrap: String,
}

impl MockBroker {
    fn start(log: &Path) -> Result<MockBroker> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg("serve-mock-broker")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(log)?))
            .spawn()
            .context("start the mock broker process")?;
        let stdin = child.stdin.take().ok_or_else(|| anyhow!("no stdin"))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let bootstrap = line.trim().to_string();
        if bootstrap.is_empty() {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "the mock broker did not report its address; see {}",
                log.display()
            );
        }
        Ok(MockBroker {
            child,
            _stdin: stdin,
            bootstrap,
        })
    }
}

impl Drop for MockBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ------------------------------------------------------------ bare consumer

/// The agent's librdkafka consumer settings that pace fetching (copied from
/// `src/source/kafka/config.rs`, whose module is private; keep them equal),
/// except `fetch.queue.backoff.ms`, which the bare consumer takes as an option.
pub const AGENT_FETCH_SETTINGS: [(&str, &str); 5] = [
    ("fetch.wait.max.ms", "100"),
    ("queued.min.messages", "1000"),
    ("queued.max.messages.kbytes", "4096"),
    ("fetch.max.bytes", "4194304"),
    ("max.partition.fetch.bytes", "1048576"),
];

/// Options of `load bare-consumer`.
#[derive(Debug, Clone, clap::Args)]
pub struct BareArgs {
    /// `bootstrap.servers`.
    #[arg(long)]
    pub bootstrap: String,
    /// Messages to read (from the beginning of the runs topic).
    #[arg(long)]
    pub messages: usize,
    /// `fetch.queue.backoff.ms` (librdkafka's default: 1000; the agent's: 10).
    #[arg(long, default_value_t = 10)]
    pub backoff_ms: u32,
    /// Busy time spent on each message, µs (200 µs = 5,000 msg/s of "processing").
    #[arg(long, default_value_t = 200)]
    pub work_us: u64,
    /// Time limit, seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout_s: u64,
}

/// What `load bare-consumer` prints (one JSON line).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct BareReport {
    pub messages: usize,
    /// From the first message to the last.
    pub wall_s: f64,
    pub msgs_per_s: f64,
    pub cpu_s: f64,
}

/// `load bare-consumer`: a plain consumer with the agent's fetch settings
/// (partitions assigned directly, no group join) that spends `work_us` of
/// busy time on each message: the rate at which fetch pacing alone lets a
/// consumer that processes 1e6/work_us messages a second read.
pub fn bare_consumer(args: BareArgs) -> Result<()> {
    let mut config = ClientConfig::new();
    for (k, v) in AGENT_FETCH_SETTINGS {
        config.set(k, v);
    }
    let consumer: BaseConsumer = config
        .set("bootstrap.servers", &args.bootstrap)
        .set("group.id", "bench-bare-consumer")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("fetch.queue.backoff.ms", args.backoff_ms.to_string())
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..RUNS_PARTITIONS {
        tpl.add_partition_offset(RUNS_TOPIC, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + Duration::from_secs(args.timeout_s);
    let work = Duration::from_micros(args.work_us);
    let mut first: Option<Instant> = None;
    let mut seen = 0;
    while seen < args.messages {
        if Instant::now() > deadline {
            bail!("bare consumer: {seen} of {} messages", args.messages);
        }
        let Some(msg) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        msg?;
        first.get_or_insert_with(Instant::now);
        seen += 1;
        let t = Instant::now();
        while t.elapsed() < work {
            std::hint::spin_loop();
        }
    }
    let wall_s = first.map_or(0.0, |f| f.elapsed().as_secs_f64());
    let report = BareReport {
        messages: seen,
        wall_s,
        msgs_per_s: seen as f64 / wall_s.max(1e-9),
        cpu_s: procfs::own_cpu(),
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// Run `load bare-consumer` against `broker` for `messages` with
/// `fetch.queue.backoff.ms = backoff_ms`.
pub async fn run_bare_consumer(broker: &Broker, messages: usize, backoff_ms: u32) -> Result<BareReport> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args([
        "bare-consumer",
        "--bootstrap",
        &broker.bootstrap,
        "--messages",
        &messages.to_string(),
        "--backoff-ms",
        &backoff_ms.to_string(),
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    let out = tokio::task::spawn_blocking(move || cmd.output()).await??;
    anyhow::ensure!(out.status.success(), "bare consumer: {}", out.status);
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).with_context(|| format!("bare consumer output: {text:?}"))
}
