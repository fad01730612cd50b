//! Processes the harness starts: the tansu broker and the agent under test
//! (testkit's, with the CPU and memory readings the harness takes), both
//! killed on drop, and the producer that fills the runs topic.

use std::path::{Path, PathBuf};
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

/// A tansu broker, in memory, on 127.0.0.1 (testkit's), logging to a file
/// of the run's directory.
pub struct Broker {
    tansu: Tansu,
    /// `host:port` of the broker.
    pub bootstrap: String,
}

impl Broker {
    /// Start it on a free port, logging to `log`.
    pub fn start(log: &Path) -> Result<Broker> {
        let tansu = Tansu::try_start(log).map_err(anyhow::Error::msg)?;
        Ok(Broker {
            bootstrap: tansu.bootstrap.clone(),
            tansu,
        })
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.tansu.pid()
    }

    /// Its CPU seconds so far.
    pub fn cpu(&self) -> f64 {
        procfs::cpu_of(self.pid()).unwrap_or(0.0)
    }

    /// The two topics the agent subscribes to (tansu does not auto-create).
    pub async fn create_topics(&self) -> Result<()> {
        self.tansu
            .try_create_topics(&[(RUNS_TOPIC, RUNS_PARTITIONS), (CHANGE_LOG_TOPIC, 1)])
            .await
            .map_err(anyhow::Error::msg)
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
