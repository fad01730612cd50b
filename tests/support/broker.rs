//! A real Kafka-protocol broker for tests: tansu, in memory, on 127.0.0.1,
//! plus the agent binary as a separate process.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;

use super::{action_run, signed, FakeTarget, SECRET};

pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|p| p.join(name))
        .find(|p| p.is_file())
}

/// A tansu broker; killed on drop.
pub struct Tansu {
    child: Child,
    pub bootstrap: String,
}

impl Tansu {
    pub fn start() -> Tansu {
        Tansu::start_on(free_port())
    }

    /// Start on a chosen port (a test can point the agent at it first).
    pub fn start_on(port: u16) -> Tansu {
        let bin = find_on_path("tansu")
            .or_else(|| {
                std::env::var_os("HOME")
                    .map(|h| PathBuf::from(h).join(".cargo/bin/tansu"))
                    .filter(|p| p.is_file())
            })
            .unwrap_or_else(|| {
                panic!("the tansu broker is not installed: run the README's test command, which installs it")
            });
        let url = format!("tcp://127.0.0.1:{port}");
        let log =
            std::fs::File::create(std::env::temp_dir().join(format!("tansu-{port}.log"))).expect("log file");
        let child = Command::new(bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start tansu");
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "tansu did not start listening on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Tansu {
            child,
            bootstrap: format!("127.0.0.1:{port}"),
        }
    }

    pub async fn create_topic(&self, name: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .create()
            .expect("admin client");
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        let res = admin
            .create_topics([&topic], &AdminOptions::new())
            .await
            .expect("create topics");
        for r in res {
            r.unwrap_or_else(|(t, e)| panic!("cannot create topic {t}: {e}"));
        }
    }

    /// A consumer of `group` that does not join it.
    fn group_client(&self, group: &str) -> BaseConsumer {
        ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("group.id", group)
            .create()
            .expect("consumer")
    }

    /// Committed offset per partition for `group` (-1 when none).
    pub fn committed(&self, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
        let c = self.group_client(group);
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(topic, p);
        }
        let committed = c
            .committed_offsets(tpl, Duration::from_secs(10))
            .expect("committed offsets");
        (0..partitions)
            .map(|p| {
                committed
                    .find_partition(topic, p)
                    .map(|e| if let Offset::Offset(o) = e.offset() { o } else { -1 })
                    .unwrap_or(-1)
            })
            .collect()
    }
}

impl Tansu {
    /// Commit `(partition, offset)` pairs for `group`, as a client outside
    /// the group.
    pub fn commit(&self, group: &str, topic: &str, offsets: &[(i32, i64)]) {
        let c = self.group_client(group);
        let mut tpl = TopicPartitionList::new();
        for (p, off) in offsets {
            tpl.add_partition_offset(topic, *p, Offset::Offset(*off))
                .expect("offset");
        }
        c.commit(&tpl, rdkafka::consumer::CommitMode::Sync)
            .expect("commit offsets");
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Environment for the agent in local mode against `bootstrap`, the fake
/// Port API at `port_base`, with `mapping`, plus `extra` settings.
pub fn agent_env(
    bootstrap: &str,
    port_base: &str,
    mapping: &std::path::Path,
    group: &str,
    extra: &[(&'static str, &str)],
) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("PORT_ORG_ID", "org_1".to_string()),
        ("PORT_CLIENT_ID", "client-id".to_string()),
        ("PORT_CLIENT_SECRET", super::SECRET.to_string()),
        ("PORT_API_BASE_URL", port_base.to_string()),
        ("USING_LOCAL_PORT_INSTANCE", "true".to_string()),
        ("KAFKA_CONSUMER_BOOTSTRAP_SERVERS", bootstrap.to_string()),
        ("KAFKA_CONSUMER_GROUP_ID", group.to_string()),
        ("KAFKA_CONSUMER_SESSION_TIMEOUT_MS", "10000".to_string()),
        ("CONTROL_THE_PAYLOAD_CONFIG_PATH", mapping.display().to_string()),
        ("AGENT_HTTP_PORT", "0".to_string()),
        ("AGENT_LOG_FORMAT", "json".to_string()),
        ("LOG_LEVEL", "warn".to_string()),
    ];
    env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    env
}

/// The agent binary as a child process; killed on drop.
pub struct AgentProcess {
    pub child: Child,
    pub log: PathBuf,
}

impl AgentProcess {
    /// Start the binary cargo built for this test.
    pub fn start(env: &[(&str, String)], tag: &str) -> AgentProcess {
        let bin = option_env!("CARGO_BIN_EXE_port-agent")
            .map(PathBuf::from)
            .expect("CARGO_BIN_EXE_port-agent is set for integration tests");
        Self::start_binary(&bin, env, tag)
    }

    /// Start a given `port-agent` binary.
    pub fn start_binary(bin: &std::path::Path, env: &[(&str, String)], tag: &str) -> AgentProcess {
        let log = std::env::temp_dir().join(format!("port-agent-{tag}-{}.log", std::process::id()));
        let file = std::fs::File::create(&log).expect("agent log");
        let mut cmd = Command::new(bin);
        cmd.arg("run")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .stdout(Stdio::from(file.try_clone().expect("log")))
            .stderr(Stdio::from(file))
            .spawn()
            .expect("start port-agent");
        AgentProcess { child, log }
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(ok.success(), "kill {sig} failed");
    }

    /// Wait for the process to exit; its exit code.
    pub fn wait(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            if Instant::now() > deadline {
                panic!(
                    "port-agent did not exit within {within:?}; log: {}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Produce concurrently; returns the log end per partition, from the
/// broker's delivery reports (tansu's ListOffsets answer lags behind them).
pub async fn produce(brokers: &str, topic: &str, messages: Vec<(i32, Value)>) -> HashMap<i32, i64> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("message.timeout.ms", "30000")
        // One message per record batch. tansu 0.6 answers a fetch that starts
        // inside a batch with the *next* batch, so a consumer resuming from a
        // committed offset in mid-batch would never see the rest of it (seen:
        // commit at 321, first offset fetched 365). Batch boundaries at every
        // offset keep that broker bug out of what these tests measure.
        .set("linger.ms", "0")
        .set("batch.num.messages", "1")
        .create()
        .expect("producer");
    // Sent concurrently: one task per message, awaited in order.
    let sends: Vec<_> = messages
        .into_iter()
        .map(|(partition, msg)| {
            let (producer, topic) = (producer.clone(), topic.to_string());
            tokio::spawn(async move {
                let payload = msg.to_string();
                let rec = FutureRecord::<(), _>::to(&topic)
                    .partition(partition)
                    .payload(&payload);
                producer
                    .send(rec, Duration::from_secs(30))
                    .await
                    .map_err(|(e, _)| e)
            })
        })
        .collect();
    let mut ends = HashMap::new();
    for s in sends {
        let d = s.await.expect("task").expect("produce");
        let (partition, offset) = (d.partition, d.offset);
        let end = ends.entry(partition).or_insert(0);
        *end = (*end).max(offset + 1);
    }
    ends
}

/// `n` signed action runs for `url`, spread over the 3 partitions.
pub fn signed_runs(n: usize, url: &str, synchronized: bool) -> Vec<(i32, Value)> {
    (0..n)
        .map(|i| {
            (
                (i % 3) as i32,
                signed(
                    action_run(&format!("r_{i:04}"), url, "POST", synchronized),
                    SECRET,
                    1,
                ),
            )
        })
        .collect()
}

pub fn write_mapping(dir: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("{dir}-{}.json", std::process::id()));
    std::fs::write(&path, r#"[{"enabled": true}]"#).expect("mapping");
    path
}

pub fn run_ids(target: &FakeTarget) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for r in target.requests() {
        let id = r.json()["context"]["runId"].as_str().unwrap_or("?").to_string();
        *counts.entry(id).or_insert(0) += 1;
    }
    counts
}

pub async fn eventually(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
