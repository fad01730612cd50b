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
    port: u16,
    /// Started with `--authentication`.
    authentication: bool,
    /// Its log file (stdout and stderr).
    pub log: PathBuf,
}

impl Tansu {
    pub fn start() -> Tansu {
        Tansu::start_on(free_port())
    }

    /// Start on a chosen port (a test can point the agent at it first).
    pub fn start_on(port: u16) -> Tansu {
        let (child, log) = Self::spawn(port, false);
        Tansu {
            child,
            bootstrap: format!("127.0.0.1:{port}"),
            port,
            authentication: false,
            log,
        }
    }

    /// A broker that requires SASL (`--authentication`). tansu 0.6 offers
    /// only SCRAM (checked against stored credentials, which no client can
    /// create before it has authenticated) and OAUTHBEARER, so nobody gets
    /// in; its log names each user that tried (`auth_id`).
    pub fn start_with_authentication() -> Tansu {
        let port = free_port();
        let (child, log) = Self::spawn(port, true);
        Tansu {
            child,
            bootstrap: format!("127.0.0.1:{port}"),
            port,
            authentication: true,
            log,
        }
    }

    /// A broker that clients reach only through a [`TcpRelay`] on
    /// `bootstrap` (it advertises the relay's address): stopping the relay
    /// makes the broker vanish for every client while it keeps its topics,
    /// offsets and groups, as a real broker restart or a network cut does.
    pub async fn start_behind_relay() -> (Tansu, TcpRelay) {
        let (port, relay_port) = (free_port(), free_port());
        let (child, log) = Self::spawn_advertising(port, relay_port, false);
        let relay = TcpRelay::start(relay_port, port).await;
        let tansu = Tansu {
            child,
            bootstrap: format!("127.0.0.1:{relay_port}"),
            port,
            authentication: false,
            log,
        };
        (tansu, relay)
    }

    /// Kill the broker (its in-memory topics and groups are lost).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Start it again on the same port (after [`Tansu::stop`]).
    pub fn restart(&mut self) {
        self.stop();
        let (child, log) = Self::spawn(self.port, self.authentication);
        self.child = child;
        self.log = log;
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A client configuration for this broker.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap);
        c
    }

    fn spawn(port: u16, authentication: bool) -> (Child, PathBuf) {
        Self::spawn_advertising(port, port, authentication)
    }

    fn spawn_advertising(port: u16, advertised: u16, authentication: bool) -> (Child, PathBuf) {
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
        let advertised = format!("tcp://127.0.0.1:{advertised}");
        let log_path = std::env::temp_dir().join(format!("tansu-{port}.log"));
        let log = std::fs::File::create(&log_path).expect("log file");
        let mut cmd = Command::new(bin);
        cmd.args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &advertised,
        ])
        .args(["--storage-engine", "memory://tansu/"]);
        if authentication {
            // The authenticated user is logged at debug level.
            cmd.arg("--authentication").env("RUST_LOG", "tansu_auth=debug");
        }
        let child = cmd
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
        (child, log_path)
    }

    pub async fn create_topic(&self, name: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = self.client_config().create().expect("admin client");
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
        self.client_config()
            .set("group.id", group)
            .create()
            .expect("consumer")
    }

    /// Committed offset per partition for `group` (-1 when none).
    pub fn committed(&self, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
        committed_offsets(&self.group_client(group), topic, partitions)
    }

    /// The member ids of `group` as the broker describes it (tansu names a
    /// member `<client.id>-<uuid>`); empty when the group has none. A raw
    /// DescribeGroups v0 request: librdkafka's group listing starts with
    /// ListGroups, which tansu 0.6 answers empty. Only for brokers without
    /// authentication.
    pub fn group_members(&self, group: &str) -> Vec<String> {
        use std::io::{Read, Write};
        fn string(buf: &mut Vec<u8>, s: &str) {
            buf.extend_from_slice(&(s.len() as i16).to_be_bytes());
            buf.extend_from_slice(s.as_bytes());
        }
        // Header: api_key 15 (DescribeGroups), version 0, correlation id,
        // client id; body: an array of one group id.
        let mut req = Vec::new();
        req.extend_from_slice(&15i16.to_be_bytes());
        req.extend_from_slice(&0i16.to_be_bytes());
        req.extend_from_slice(&7i32.to_be_bytes());
        string(&mut req, "port-agent-test");
        req.extend_from_slice(&1i32.to_be_bytes());
        string(&mut req, group);
        let mut stream = TcpStream::connect(&self.bootstrap).expect("connect to tansu");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        stream
            .write_all(&(req.len() as i32).to_be_bytes())
            .expect("write");
        stream.write_all(&req).expect("write");
        let mut len = [0u8; 4];
        stream.read_exact(&mut len).expect("read size");
        let mut resp = vec![0u8; i32::from_be_bytes(len) as usize];
        stream.read_exact(&mut resp).expect("read response");
        let mut r = KafkaReader { buf: &resp, at: 0 };
        r.i32(); // correlation id
        let mut members = Vec::new();
        for _ in 0..r.i32() {
            let error = r.i16();
            assert_eq!(error, 0, "DescribeGroups error {error}");
            let (name, _state, _protocol_type, _protocol) = (r.string(), r.string(), r.string(), r.string());
            for _ in 0..r.i32() {
                let (id, _client, _host) = (r.string(), r.string(), r.string());
                r.bytes();
                r.bytes();
                if name == group {
                    members.push(id);
                }
            }
        }
        members
    }
}

/// Reads Kafka protocol primitives (big-endian, i16-length strings).
struct KafkaReader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl KafkaReader<'_> {
    fn take(&mut self, n: usize) -> &[u8] {
        let s = &self.buf[self.at..self.at + n];
        self.at += n;
        s
    }
    fn i16(&mut self) -> i16 {
        i16::from_be_bytes(self.take(2).try_into().unwrap())
    }
    fn i32(&mut self) -> i32 {
        i32::from_be_bytes(self.take(4).try_into().unwrap())
    }
    fn string(&mut self) -> String {
        let n = self.i16().max(0) as usize;
        String::from_utf8_lossy(self.take(n)).into_owned()
    }
    fn bytes(&mut self) {
        let n = self.i32().max(0) as usize;
        self.take(n);
    }
}

/// Committed offset per partition of `topic` for the group of `consumer`
/// (-1 when none): the one way the tests read committed offsets.
pub fn committed_offsets<C: rdkafka::consumer::ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partitions: i32,
) -> Vec<i64> {
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let committed = consumer
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
        Self::start_wrapped(&[], bin, env, tag)
    }

    /// Start `wrapper… <bin> run`: the wrapper (e.g. `unshare`) runs the
    /// agent with `bin` and `run` as its last two arguments.
    pub fn start_wrapped(
        wrapper: &[&str],
        bin: &std::path::Path,
        env: &[(&str, String)],
        tag: &str,
    ) -> AgentProcess {
        let log = std::env::temp_dir().join(format!("port-agent-{tag}-{}.log", std::process::id()));
        let file = std::fs::File::create(&log).expect("agent log");
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(bin);
                c
            }
            None => Command::new(bin),
        };
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
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    let messages = messages.into_iter().map(|(p, m)| (p, None, m)).collect();
    produce_with(config, topic, messages).await
}

/// [`produce`] with a client configuration and optional keys, in the order
/// given: the one way the tests produce.
pub async fn produce_with(
    mut config: ClientConfig,
    topic: &str,
    messages: Vec<(i32, Option<String>, Value)>,
) -> HashMap<i32, i64> {
    let producer: FutureProducer = config
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
    // Enqueued in order (so each partition holds them in the order given),
    // then every delivery report awaited.
    let mut deliveries = Vec::new();
    for (partition, key, msg) in &messages {
        let payload = msg.to_string();
        let mut rec = FutureRecord::<String, _>::to(topic)
            .partition(*partition)
            .payload(&payload);
        if let Some(key) = key {
            rec = rec.key(key);
        }
        let sent = producer.send_result(rec).map_err(|(e, _)| e).expect("enqueue");
        deliveries.push(sent);
    }
    let mut ends = HashMap::new();
    for d in deliveries {
        let d = d
            .await
            .expect("delivery report")
            .map_err(|(e, _)| e)
            .expect("produce");
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

/// A mapping file `[{"enabled": true}]` (every message, the defaults),
/// written by the one helper, [`super::agent::mapping_file`].
pub fn write_mapping(tag: &str) -> std::path::PathBuf {
    super::agent::mapping_file(tag, &serde_json::json!([{"enabled": true}]))
}

pub fn run_ids(target: &FakeTarget) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for r in target.requests() {
        let id = r.json()["context"]["runId"].as_str().unwrap_or("?").to_string();
        *counts.entry(id).or_insert(0) += 1;
    }
    counts
}

/// Poll `cond` every 50 ms until it holds; panic naming `what` after
/// `within`.
pub async fn eventually(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    eventually_some(what, within, || cond().then_some(())).await
}

/// Poll `check` every 50 ms until it gives a value and return it; panic
/// naming `what` after `within`: the one polling loop of the tests.
pub async fn eventually_some<T>(what: &str, within: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Run `f` (blocking: a health probe, an admin call) off the async workers.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

/// A TCP relay on 127.0.0.1: `port` → `to`. [`TcpRelay::stop`] closes the
/// listener and every relayed connection; [`TcpRelay::start`] again on the
/// same port brings it back.
pub struct TcpRelay {
    pub port: u16,
    to: u16,
    stop: tokio::sync::watch::Sender<bool>,
}

impl TcpRelay {
    pub async fn start(port: u16, to: u16) -> TcpRelay {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind the relay");
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let mut until_stopped = stopped.clone();
            loop {
                let (mut client, _) = tokio::select! {
                    _ = until_stopped.wait_for(|s| *s) => return,
                    accepted = listener.accept() => match accepted { Ok(a) => a, Err(_) => continue },
                };
                let mut until_stopped = stopped.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await else {
                        return;
                    };
                    tokio::select! {
                        _ = until_stopped.wait_for(|s| *s) => {}
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                    }
                });
            }
        });
        TcpRelay { port, to, stop }
    }

    /// Cut every connection and stop listening.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Listen again on the same port.
    pub async fn restart(&mut self) {
        self.stop();
        // The listener is dropped by its task; retry until the port is free.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if std::net::TcpListener::bind(("127.0.0.1", self.port)).is_ok() {
                break;
            }
            assert!(Instant::now() < deadline, "the relay port stays taken");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        *self = TcpRelay::start(self.port, self.to).await;
    }
}

impl Drop for TcpRelay {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// A tansu broker with the runs (3 partitions) and change-log topics, the
/// fake Port API and target, and a catch-all mapping file: what the tests of
/// the built binary against Kafka start from.
pub struct World {
    pub tansu: Tansu,
    pub port: super::FakePort,
    pub target: FakeTarget,
    pub mapping: PathBuf,
    pub group: String,
}

impl World {
    pub async fn start(tag: &str, group: &str) -> World {
        let tansu = Tansu::start();
        tansu.create_topic("org_1.runs", 3).await;
        tansu.create_topic("org_1.change.log", 1).await;
        World {
            tansu,
            port: super::FakePort::start().await,
            target: FakeTarget::start().await,
            mapping: write_mapping(tag),
            group: group.to_string(),
        }
    }

    /// The agent's settings: a 6 s session (tansu hands a dead member's
    /// partitions over once it expires), info logs, plus `extra`.
    pub fn env(&self, extra: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
        let mut all = vec![
            ("KAFKA_CONSUMER_SESSION_TIMEOUT_MS", "6000"),
            ("LOG_LEVEL", "info"),
        ];
        all.extend_from_slice(extra);
        agent_env(
            &self.tansu.bootstrap,
            &self.port.base(),
            &self.mapping,
            &self.group,
            &all,
        )
    }
}
