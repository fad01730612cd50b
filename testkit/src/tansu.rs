//! A real Kafka-protocol broker for tests and benchmarks: tansu, in memory,
//! on 127.0.0.1; a TCP relay that can cut it off; committed offsets; and
//! the one way the tests produce.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;

use crate::net::{free_port, try_free_port};

/// The tansu binary: on `PATH`, else `~/.cargo/bin/tansu`.
fn find_tansu() -> Option<PathBuf> {
    let from_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("tansu"))
            .find(|p| p.is_file())
    });
    from_path.or_else(|| {
        std::env::var_os("HOME")
            .map(|h| PathBuf::from(h).join(".cargo/bin/tansu"))
            .filter(|p| p.is_file())
    })
}

/// A tansu broker (`--storage-engine memory://`), killed on drop.
pub struct Tansu {
    child: Child,
    /// `host:port` clients connect to.
    pub bootstrap: String,
    port: u16,
    /// The port it advertises (a relay's, see [`Tansu::start_behind_relay`]).
    advertised: u16,
    /// Started with `--authentication`.
    authentication: bool,
    /// Its log file (stdout and stderr).
    pub log: PathBuf,
}

impl Tansu {
    /// Start on a free port, logging to a temporary file.
    pub fn start() -> Tansu {
        Tansu::start_on(free_port())
    }

    /// Start on a chosen port (a test can point the agent at it first).
    pub fn start_on(port: u16) -> Tansu {
        Self::launch(port, port, false, default_log(port)).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Start on a free port logging to `log`; the error says what to do
    /// (install tansu) or where to look (the log).
    pub fn try_start(log: &Path) -> Result<Tansu, String> {
        let port = try_free_port().map_err(|e| format!("no free port for tansu: {e}"))?;
        Self::launch(port, port, false, log.to_path_buf())
    }

    /// A broker that requires SASL (`--authentication`). tansu 0.6 offers
    /// only SCRAM (checked against stored credentials, which no client can
    /// create before it has authenticated) and OAUTHBEARER, so nobody gets
    /// in; its log names each user that tried (`auth_id`).
    pub fn start_with_authentication() -> Tansu {
        let port = free_port();
        Self::launch(port, port, true, default_log(port)).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A broker that clients reach only through a [`TcpRelay`] on
    /// `bootstrap` (it advertises the relay's address): stopping the relay
    /// makes the broker vanish for every client while it keeps its topics,
    /// offsets and groups, as a real broker restart or a network cut does.
    pub async fn start_behind_relay() -> (Tansu, TcpRelay) {
        let (port, relay_port) = (free_port(), free_port());
        let mut tansu =
            Self::launch(port, relay_port, false, default_log(port)).unwrap_or_else(|e| panic!("{e}"));
        let relay = TcpRelay::start(relay_port, port).await;
        tansu.bootstrap = format!("127.0.0.1:{relay_port}");
        (tansu, relay)
    }

    fn launch(port: u16, advertised: u16, authentication: bool, log: PathBuf) -> Result<Tansu, String> {
        let child = spawn(port, advertised, authentication, &log)?;
        Ok(Tansu {
            child,
            bootstrap: format!("127.0.0.1:{port}"),
            port,
            advertised,
            authentication,
            log,
        })
    }

    /// The broker's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kill the broker (its in-memory topics and groups are lost).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Start it again on the same port (after [`Tansu::stop`]).
    pub fn restart(&mut self) {
        self.stop();
        self.child = spawn(self.port, self.advertised, self.authentication, &self.log)
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Everything it has logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A client configuration for this broker.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap);
        c
    }

    /// Create `topics` (`(name, partitions)`, tansu does not auto-create);
    /// the first error.
    pub async fn try_create_topics(&self, topics: &[(&str, i32)]) -> Result<(), String> {
        let admin: AdminClient<DefaultClientContext> = self
            .client_config()
            .create()
            .map_err(|e| format!("admin client: {e}"))?;
        let topics: Vec<NewTopic> = topics
            .iter()
            .map(|(name, partitions)| NewTopic::new(name, *partitions, TopicReplication::Fixed(1)))
            .collect();
        let results = admin
            .create_topics(&topics, &AdminOptions::new())
            .await
            .map_err(|e| format!("create topics: {e}"))?;
        for r in results {
            r.map_err(|(t, e)| format!("cannot create topic {t}: {e}"))?;
        }
        Ok(())
    }

    /// Create a topic; panics on failure.
    pub async fn create_topic(&self, name: &str, partitions: i32) {
        self.try_create_topics(&[(name, partitions)])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
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

    /// The member ids of `group` as the broker describes it (tansu names a
    /// member `<client.id>-<uuid>`); empty when the group has none. A raw
    /// DescribeGroups v0 request: librdkafka's group listing starts with
    /// ListGroups, which tansu 0.6 answers empty. Only for brokers without
    /// authentication.
    pub fn group_members(&self, group: &str) -> Vec<String> {
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

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn default_log(port: u16) -> PathBuf {
    std::env::temp_dir().join(format!("tansu-{port}.log"))
}

/// Start tansu listening on `port` and advertising `advertised`, with only
/// `PATH` and `RUST_LOG` (warn; with `authentication`, the authenticated
/// user, logged at debug level); wait until it listens.
fn spawn(port: u16, advertised: u16, authentication: bool, log: &Path) -> Result<Child, String> {
    let bin = find_tansu().ok_or(
        "the tansu broker is not installed: run the README's test command (scripts/test.sh), which installs it",
    )?;
    let url = format!("tcp://127.0.0.1:{port}");
    let advertised = format!("tcp://127.0.0.1:{advertised}");
    let file = std::fs::File::create(log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
    let out = file.try_clone().map_err(|e| format!("{}: {e}", log.display()))?;
    let mut cmd = Command::new(bin);
    cmd.args([
        "broker",
        "--listener-url",
        &url,
        "--advertised-listener-url",
        &advertised,
    ])
    .args(["--storage-engine", "memory://tansu/"])
    .env_clear()
    .env("PATH", std::env::var_os("PATH").unwrap_or_default())
    .env("RUST_LOG", "warn");
    if authentication {
        cmd.arg("--authentication")
            .env("RUST_LOG", "warn,tansu_auth=debug");
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(file))
        .spawn()
        .map_err(|e| format!("cannot start tansu: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("tansu exited ({status}); see {}", log.display()));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "tansu did not listen on {port} within 30 s; see {}",
                log.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(child)
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
        i16::from_be_bytes(self.take(2).try_into().expect("2 bytes"))
    }
    fn i32(&mut self) -> i32 {
        i32::from_be_bytes(self.take(4).try_into().expect("4 bytes"))
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

/// A TCP relay on 127.0.0.1: `port` → `to`. [`TcpRelay::stop`] closes the
/// listener and every relayed connection; [`TcpRelay::restart`] brings it
/// back on the same port.
pub struct TcpRelay {
    /// The port it listens on.
    pub port: u16,
    to: u16,
    stop: tokio::sync::watch::Sender<bool>,
}

impl TcpRelay {
    /// Listen on `port` and relay every connection to `to`.
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
