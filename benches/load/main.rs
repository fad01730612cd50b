//! End-to-end load benchmark of the release `port-agent` binary.
//!
//!     scripts/bench.sh                          # every scenario, 3 repeats
//!     cargo bench --bench load -- --help        # options
//!
//! Each scenario run starts its own infrastructure: a tansu broker on
//! 127.0.0.1, and the fake Port API and target in a process of their own
//! (this executable, `serve-fakes`), so the agent's, the fakes', the broker's
//! and the harness's CPU are measured apart (`/proc/PID/stat`). For the drain
//! scenarios the N signed messages are produced before the agent starts; the
//! agent then runs as a separate process until the fakes have seen every run
//! delivered to the target and its final run log posted. After each drain
//! scenario a bare reference client (`reference`) makes the same HTTP calls
//! against the same fakes, and the agent's CPU per run is divided by the
//! reference's.
//!
//! Prints a measurements table and a targets table (medians over the
//! repeats) and writes JSON to `target/bench/load-<unix time>.json`, and to
//! `benches/results/last.json` when the run used the standard sizes.
//! Nothing here runs under `cargo test`: without `--bench` (which `cargo
//! bench` passes) the program only prints how to run it.

mod fakes;
mod infra;
mod messages;
mod procfs;
mod reference;
mod report;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use fakes::{Fakes, Stats};
use infra::{Agent, Broker};
use report::{Sample, ScenarioResult, Target};

#[derive(Debug, Parser)]
#[command(
    name = "load",
    about = "End-to-end load benchmark of the release port-agent binary (see scripts/bench.sh)",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Sub>,
    #[command(flatten)]
    opts: Opts,
}

#[derive(Debug, Subcommand)]
enum Sub {
    /// (internal) Serve the fake Port API and target until stdin closes.
    ServeFakes(fakes::FakesArgs),
    /// (internal) The bare reference client.
    Reference(reference::RefArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
enum Scenario {
    S1,
    S2,
    S3,
    S4,
    S5,
    S6,
    S7,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
enum MappingKind {
    /// 7 jq expressions: enabled, two headers, a body of four fields.
    Typical,
    /// `[{"enabled": true}]`: the whole message is the body.
    Passthrough,
}

#[derive(Debug, Clone, clap::Args, serde::Serialize)]
struct Opts {
    /// Scenarios to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "s1,s2,s3,s4,s5,s6,s7")]
    scenarios: Vec<Scenario>,
    /// Repeats of each scenario; the tables show medians.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Runs per drain scenario (S1-S4), instead of 10,000 / 10,000 / 5,000 / 2,000.
    #[arg(long)]
    runs: Option<usize>,
    /// S5: backlogs whose peak RSS is compared.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
    s5_backlogs: Vec<usize>,
    /// S5: seconds of processing sampled after the first target request.
    #[arg(long, default_value_t = 20)]
    s5_window_s: u64,
    /// S5: latency of the slow target (64 in flight / 200 ms = 320 runs/s,
    /// so neither backlog drains within the window).
    #[arg(long, default_value_t = 200)]
    s5_target_latency_ms: u64,
    /// S6: messages produced per second.
    #[arg(long, default_value_t = 500)]
    s6_rate: u64,
    /// S6: seconds of production.
    #[arg(long, default_value_t = 30)]
    s6_seconds: u64,
    /// Time limit of one scenario run (a run over it is reported as failed).
    #[arg(long, default_value_t = 300)]
    timeout_s: u64,
    /// The agent binary (default: target/release/port-agent beside this benchmark).
    #[arg(long)]
    agent_bin: Option<PathBuf>,
    /// The mapping the agent runs.
    #[arg(long, value_enum, default_value = "typical")]
    mapping: MappingKind,
    /// AGENT_MAX_IN_FLIGHT (also the reference's concurrency).
    #[arg(long, default_value_t = 64)]
    max_in_flight: usize,
    /// The agent's LOG_LEVEL (its default is INFO; S7 and S6 read its
    /// "subscribed" and "partitions assigned" lines).
    #[arg(long, default_value = "info")]
    log_level: String,
    /// Skip the reference client.
    #[arg(long)]
    no_reference: bool,
    /// JSON output file (default target/bench/load-<unix time>.json).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Do not write benches/results/last.json even for a standard run.
    #[arg(long)]
    no_save_last: bool,
    /// Keep the logs of successful runs (failed runs' logs are always kept).
    #[arg(long)]
    keep_logs: bool,
    /// Exit with status 1 when a (non-aim) target is missed.
    #[arg(long)]
    strict: bool,
}

impl Opts {
    /// Standard sizes, so the JSON is comparable with earlier ones.
    fn standard(&self) -> bool {
        self.runs.is_none()
            && self.repeat >= 3
            && self.s5_backlogs == [10_000, 100_000]
            && self.s5_window_s == 20
            && self.s5_target_latency_ms == 200
            && self.s6_rate == 500
            && self.s6_seconds == 30
            && self.mapping == MappingKind::Typical
            && self.max_in_flight == 64
            && self.log_level.eq_ignore_ascii_case("info")
    }
}

/// A drain scenario: N runs queued before the agent starts.
#[derive(Debug, Clone, serde::Serialize)]
struct Drain {
    runs: usize,
    synchronized: bool,
    target_latency_ms: u64,
    port_latency_ms: u64,
}

struct Session {
    opts: Opts,
    agent_bin: PathBuf,
    dir: PathBuf,
}

fn unix_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// CPU seconds of every process at one moment.
#[derive(Debug, Clone, Copy)]
struct Cpu {
    at: Instant,
    agent: f64,
    fakes: f64,
    broker: f64,
    harness: f64,
    machine: f64,
}

impl Cpu {
    fn now(agent: &Agent, fakes: &Fakes, broker: &Broker) -> Cpu {
        Cpu {
            at: Instant::now(),
            agent: agent.cpu(),
            fakes: fakes.cpu(),
            broker: broker.cpu(),
            harness: procfs::own_cpu(),
            machine: procfs::machine_busy_seconds(),
        }
    }

    /// Percent of one core used by each process from `self` to `end`.
    fn record(&self, end: &Cpu, runs: usize, s: &mut Sample) {
        let wall = end.at.duration_since(self.at).as_secs_f64().max(1e-9);
        s.set("window_s", wall);
        s.set("agent_cpu_pct", (end.agent - self.agent) / wall * 100.0);
        s.set("fakes_cpu_pct", (end.fakes - self.fakes) / wall * 100.0);
        s.set("broker_cpu_pct", (end.broker - self.broker) / wall * 100.0);
        s.set("harness_cpu_pct", (end.harness - self.harness) / wall * 100.0);
        // Everything else on the machine (a build, another test): the
        // numbers are only trustworthy when this stays near 0.
        let ours = (end.agent - self.agent)
            + (end.fakes - self.fakes)
            + (end.broker - self.broker)
            + (end.harness - self.harness);
        s.set(
            "other_cpu_pct",
            ((end.machine - self.machine - ours) / wall * 100.0).max(0.0),
        );
        if runs > 0 {
            let per = |a: f64, b: f64| (b - a) / runs as f64 * 1e6;
            s.set("agent_cpu_window_us_per_run", per(self.agent, end.agent));
            s.set("fakes_cpu_us_per_run", per(self.fakes, end.fakes));
        }
    }
}

impl Session {
    fn run_dir(&self, tag: &str) -> Result<PathBuf> {
        let d = self.dir.join(tag);
        std::fs::create_dir_all(&d)?;
        Ok(d)
    }

    fn mapping_file(&self) -> Result<PathBuf> {
        let path = self.dir.join("mapping.json");
        if !path.exists() {
            let text = match self.opts.mapping {
                MappingKind::Typical => messages::MAPPING_TYPICAL,
                MappingKind::Passthrough => messages::MAPPING_PASSTHROUGH,
            };
            std::fs::write(&path, text)?;
        }
        Ok(path)
    }

    /// Start the agent against `broker` and `fakes` with a fresh consumer group.
    fn spawn_agent(&self, broker: &Broker, fakes: &Fakes, dir: &Path, tag: &str) -> Result<Agent> {
        let http_port = infra::free_port()?;
        let env: Vec<(String, String)> = [
            ("PORT_ORG_ID", "org_1".to_string()),
            ("PORT_CLIENT_ID", "bench-client".to_string()),
            ("PORT_CLIENT_SECRET", messages::SECRET.to_string()),
            ("PORT_API_BASE_URL", fakes.port_base()),
            ("KAFKA_CONSUMER_BROKERS", broker.bootstrap.clone()),
            ("KAFKA_CONSUMER_SECURITY_PROTOCOL", "PLAINTEXT".to_string()),
            ("KAFKA_CONSUMER_GROUP_ID", format!("org_1.bench-{tag}")),
            ("KAFKA_CONSUMER_AUTO_OFFSET_RESET", "earliest".to_string()),
            ("KAFKA_CONSUMER_SESSION_TIMEOUT_MS", "10000".to_string()),
            (
                "CONTROL_THE_PAYLOAD_CONFIG_PATH",
                self.mapping_file()?.display().to_string(),
            ),
            ("AGENT_MAX_IN_FLIGHT", self.opts.max_in_flight.to_string()),
            ("AGENT_RUN_LOGS", "true".to_string()),
            ("AGENT_HTTP_PORT", http_port.to_string()),
            ("AGENT_LOG_FORMAT", "json".to_string()),
            ("LOG_LEVEL", self.opts.log_level.clone()),
            ("DEPLOYER_TOKEN", "bench-deployer-token".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        Agent::spawn(&self.agent_bin, &env, &dir.join("agent.log"), http_port)
    }

    fn deadline(&self) -> Instant {
        Instant::now() + Duration::from_secs(self.opts.timeout_s)
    }
}

/// Poll the fakes until every run is done; CPU snapshots at the first target
/// request seen and at the end.
async fn wait_for_runs(
    runs: usize,
    agent: &mut Agent,
    fakes: &Fakes,
    broker: &Broker,
    deadline: Instant,
) -> Result<(Stats, Cpu, Cpu)> {
    let mut start: Option<Cpu> = None;
    loop {
        agent.check_alive()?;
        let stats = fakes.stats().await?;
        if start.is_none() && stats.target_total > 0 {
            start = Some(Cpu::now(agent, fakes, broker));
        }
        if stats.done_unique as usize >= runs && stats.target_unique as usize >= runs {
            let end = Cpu::now(agent, fakes, broker);
            return Ok((stats, start.unwrap_or(end), end));
        }
        if Instant::now() > deadline {
            bail!(
                "timed out: {} of {runs} runs delivered, {} reported done (agent log: {})",
                stats.target_unique,
                stats.done_unique,
                agent.log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Counters every scenario reports about the fakes' view.
fn record_stats(stats: &Stats, runs: usize, s: &mut Sample) {
    let n = runs.max(1) as f64;
    s.set("runs", runs as f64);
    s.set(
        "port_calls_per_run",
        (stats.logs + stats.responses + stats.patches) as f64 / n,
    );
    s.set("run_logs_per_run", stats.logs as f64 / n);
    s.set("target_calls_per_run", stats.target_total as f64 / n);
    s.set("token_calls", stats.tokens as f64);
    s.set("duplicates", (stats.target_total - stats.target_unique) as f64);
    if stats.failures > 0 {
        s.notes.push(format!("{} runs reported FAILURE", stats.failures));
    }
    if stats.other > 0 {
        s.notes.push(format!("{} unexpected Port API calls", stats.other));
    }
}

/// A child process killed on drop.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Run the reference client for `spec` against `fakes`.
async fn reference(
    s: &Session,
    spec: &Drain,
    fakes: &Fakes,
    sample: &mut Sample,
    deadline: Instant,
) -> Result<()> {
    fakes.reset(spec.runs, false).await?;
    let fakes_before = fakes.cpu();
    let (machine_before, harness_before) = (procfs::machine_busy_seconds(), procfs::own_cpu());
    let started = Instant::now();
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args([
        "reference",
        "--port-base",
        &fakes.port_base(),
        "--target-url",
        &fakes.target_url(),
        "--runs",
        &spec.runs.to_string(),
        "--concurrency",
        &s.opts.max_in_flight.to_string(),
    ]);
    if spec.synchronized {
        cmd.arg("--synchronized");
    }
    let mut child = ChildGuard(
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("start the reference client")?,
    );
    let stdout = child.0.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let read = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    });
    let left = deadline.saturating_duration_since(Instant::now());
    let line = tokio::time::timeout(left, read)
        .await
        .map_err(|_| anyhow!("the reference client timed out"))???;
    let wall = started.elapsed().as_secs_f64();
    let fakes_cpu = fakes.cpu() - fakes_before;
    let (machine, harness) = (
        procfs::machine_busy_seconds() - machine_before,
        procfs::own_cpu() - harness_before,
    );
    let report: reference::RefReport =
        serde_json::from_str(line.trim()).with_context(|| format!("reference client output: {line:?}"))?;
    let stats = fakes.stats().await?;
    let n = spec.runs as f64;
    sample.set("ref_cpu_us_per_run", report.own.cpu_s / n * 1e6);
    sample.set("ref_runs_per_s", n / report.wall_s.max(1e-9));
    sample.set("ref_peak_rss_mib", report.own.peak_rss_kib as f64 / 1024.0);
    sample.set("ref_http_calls_per_run", report.http_calls as f64 / n);
    sample.set("ref_fakes_cpu_pct", fakes_cpu / wall * 100.0);
    sample.set(
        "ref_other_cpu_pct",
        ((machine - report.own.cpu_s - fakes_cpu - harness) / wall * 100.0).max(0.0),
    );
    if report.errors > 0 || (stats.done_unique as usize) < spec.runs {
        sample.notes.push(format!(
            "reference: {} errors, {} of {} runs seen done",
            report.errors, stats.done_unique, spec.runs
        ));
    }
    if let (Some(a), Some(r)) = (
        sample.metrics.get("agent_cpu_us_per_run"),
        sample.metrics.get("ref_cpu_us_per_run"),
    ) {
        let ratio = a / r;
        sample.set("cpu_ratio_vs_ref", ratio);
    }
    Ok(())
}

/// S1-S4: queue `spec.runs`, start the agent, wait until all are done.
async fn drain(s: &Session, spec: &Drain, tag: &str) -> Result<Sample> {
    let dir = s.run_dir(tag)?;
    let deadline = s.deadline();
    let broker = Broker::start(&dir.join("tansu.log"))?;
    broker.create_topics().await?;
    let fakes = Fakes::start(
        spec.port_latency_ms,
        spec.target_latency_ms,
        &dir.join("fakes.log"),
    )?;
    fakes.reset(spec.runs, false).await?;
    let mut sample = Sample::default();

    let url = fakes.target_url();
    let ts = unix_s();
    let produce = Instant::now();
    {
        let producer = broker.producer(false)?;
        infra::produce_all(&producer, spec.runs, |i| {
            messages::signed_bytes(messages::action_run(i, &url, spec.synchronized, None), ts)
        })
        .await?;
    }
    sample.set("produce_s", produce.elapsed().as_secs_f64());

    let mut agent = s.spawn_agent(&broker, &fakes, &dir, tag)?;
    let (stats, start, end) = wait_for_runs(spec.runs, &mut agent, &fakes, &broker, deadline).await?;
    let n = spec.runs as f64;
    let drain_s = (stats.last_done_ns.saturating_sub(stats.first_target_ns)) as f64 / 1e9;
    sample.set("drain_s", drain_s);
    sample.set("runs_per_s", n / drain_s.max(1e-9));
    sample.set(
        "spawn_to_drained_s",
        end.at.duration_since(agent.started).as_secs_f64(),
    );
    sample.set("agent_cpu_s", end.agent);
    sample.set("agent_cpu_us_per_run", end.agent / n * 1e6);
    sample.set("agent_peak_rss_mib", agent.peak_rss_kib() as f64 / 1024.0);
    start.record(&end, spec.runs, &mut sample);
    record_stats(&stats, spec.runs, &mut sample);
    stop_agent(&mut agent, &mut sample, "");
    if !s.opts.no_reference {
        reference(s, spec, &fakes, &mut sample, deadline).await?;
    }
    sample.ok = true;
    Ok(sample)
}

/// S5: peak RSS while working through each backlog against a slow target.
async fn backlog(s: &Session, tag: &str) -> Result<Sample> {
    let mut sample = Sample::default();
    let mut peaks = Vec::new();
    for &size in &s.opts.s5_backlogs {
        let dir = s.run_dir(&format!("{tag}-{size}"))?;
        let deadline = s.deadline();
        let broker = Broker::start(&dir.join("tansu.log"))?;
        broker.create_topics().await?;
        let fakes = Fakes::start(0, s.opts.s5_target_latency_ms, &dir.join("fakes.log"))?;
        fakes.reset(size, false).await?;
        let url = fakes.target_url();
        let ts = unix_s();
        let produce = Instant::now();
        {
            let producer = broker.producer(true)?;
            infra::produce_all(&producer, size, |i| {
                messages::signed_bytes(messages::action_run(i, &url, false, None), ts)
            })
            .await?;
        }
        sample.set(format!("produce_s_{size}"), produce.elapsed().as_secs_f64());
        let mut agent = s.spawn_agent(&broker, &fakes, &dir, &format!("{tag}-{size}"))?;
        // Wait for the first target request, then sample for the window.
        loop {
            agent.check_alive()?;
            if fakes.stats().await?.target_total > 0 {
                break;
            }
            if Instant::now() > deadline {
                bail!("timed out waiting for the first target request (backlog {size})");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let start = Cpu::now(&agent, &fakes, &broker);
        let window = Duration::from_secs(s.opts.s5_window_s);
        let mut series = Vec::new();
        while start.at.elapsed() < window {
            agent.check_alive()?;
            series.push(agent.rss_kib());
            let stats = fakes.stats().await?;
            if stats.done_unique as usize >= size {
                sample
                    .notes
                    .push(format!("backlog {size} drained within the window"));
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let end = Cpu::now(&agent, &fakes, &broker);
        let stats = fakes.stats().await?;
        let peak = agent.peak_rss_kib() as f64 / 1024.0;
        peaks.push(peak);
        let mib = |kib: u64| kib as f64 / 1024.0;
        let quarter = series.get(series.len() / 4).copied().unwrap_or(0);
        let last = series.last().copied().unwrap_or(0);
        sample.set(format!("agent_peak_rss_mib_{size}"), peak);
        sample.set(format!("agent_rss_end_mib_{size}"), mib(last));
        sample.set(
            format!("agent_rss_growth_last_3q_mib_{size}"),
            mib(last) - mib(quarter),
        );
        sample.set(
            format!("processed_per_s_{size}"),
            stats.done_unique as f64 / end.at.duration_since(start.at).as_secs_f64(),
        );
        sample.set(
            format!("agent_cpu_window_us_per_run_{size}"),
            (end.agent - start.agent) / (stats.done_unique.max(1) as f64) * 1e6,
        );
        sample.set(
            format!("fakes_cpu_pct_{size}"),
            (end.fakes - start.fakes) / end.at.duration_since(start.at).as_secs_f64() * 100.0,
        );
        stop_agent(&mut agent, &mut sample, &format!(" (backlog {size})"));
    }
    if let (Some(first), Some(last)) = (peaks.first(), peaks.last()) {
        if peaks.len() > 1 && *first > 0.0 {
            sample.set("rss_growth_largest_vs_smallest", last / first);
        }
    }
    sample.ok = true;
    Ok(sample)
}

/// Log lines the agent writes at start-up, by their `message`.
#[derive(Debug, Default)]
struct StartLog {
    subscribed: Option<Duration>,
    assigned: Option<Duration>,
}

impl StartLog {
    fn scan(&mut self, agent: &Agent) {
        let Ok(text) = std::fs::read_to_string(&agent.log) else {
            return;
        };
        let t = agent.started.elapsed();
        if self.subscribed.is_none() && text.contains(r#""message":"subscribed""#) {
            self.subscribed = Some(t);
        }
        if self.assigned.is_none() && text.contains(r#""message":"partitions assigned""#) {
            self.assigned = Some(t);
        }
    }
}

/// `GET /readyz` answered 200.
async fn ready(port: u16) -> bool {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        stream
            .write_all(b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await?;
        let mut buf = [0u8; 16];
        let mut got = 0;
        while got < 12 {
            let n = stream.read(&mut buf[got..]).await?;
            if n == 0 {
                break;
            }
            got += n;
        }
        std::io::Result::Ok(buf[..got].starts_with(b"HTTP/1.1 200"))
    };
    matches!(
        tokio::time::timeout(Duration::from_millis(100), attempt).await,
        Ok(Ok(true))
    )
}

/// Wait until the agent has its partitions (log line or `/readyz`).
async fn wait_assigned(agent: &mut Agent, deadline: Instant) -> Result<()> {
    let mut log = StartLog::default();
    loop {
        agent.check_alive()?;
        log.scan(agent);
        if log.assigned.is_some() || ready(agent.http_port).await {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the agent did not get its partitions in time (log: {})",
                agent.log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// S6: steady production at `rate`, produce→target latency.
async fn live(s: &Session, tag: &str) -> Result<Sample> {
    let dir = s.run_dir(tag)?;
    let deadline = s.deadline();
    let broker = Broker::start(&dir.join("tansu.log"))?;
    broker.create_topics().await?;
    let fakes = Fakes::start(0, 0, &dir.join("fakes.log"))?;
    let runs = (s.opts.s6_rate * s.opts.s6_seconds) as usize;
    fakes.reset(runs, true).await?;
    let mut agent = s.spawn_agent(&broker, &fakes, &dir, tag)?;
    wait_assigned(&mut agent, deadline).await?;
    // Let the consumer settle into its fetch loop.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let baseline = infra::BaselineConsumer::start(&broker, runs, None, deadline)?;
    let baseline_fast = infra::BaselineConsumer::start(&broker, runs, Some(10), deadline)?;
    let producer = broker.producer(false)?;
    let url = fakes.target_url();
    let interval = Duration::from_secs_f64(1.0 / s.opts.s6_rate as f64);
    let start = Cpu::now(&agent, &fakes, &broker);
    let t0 = tokio::time::Instant::now();
    let mut pending = Vec::with_capacity(runs);
    for i in 0..runs {
        tokio::time::sleep_until(t0 + interval * i as u32).await;
        let bytes = messages::signed_bytes(
            messages::action_run(i, &url, false, Some(fakes::unix_ns())),
            unix_s(),
        );
        let record = rdkafka::producer::FutureRecord::<(), _>::to(infra::RUNS_TOPIC)
            .partition((i % infra::RUNS_PARTITIONS as usize) as i32)
            .payload(&bytes);
        let sent = Instant::now();
        let delivery = producer
            .send_result(record)
            .map_err(|(e, _)| anyhow!("produce: {e}"))?;
        // Time to the broker's acknowledgement.
        pending.push(tokio::spawn(async move {
            delivery
                .await
                .map_err(|_| anyhow!("delivery report lost"))?
                .map_err(|(e, _)| anyhow!("delivery failed: {e}"))?;
            anyhow::Ok(sent.elapsed().as_micros().min(u32::MAX as u128) as u32)
        }));
        if i % 1000 == 0 {
            agent.check_alive()?;
        }
    }
    let produced_in = t0.elapsed().as_secs_f64();
    let mut acks = Vec::with_capacity(runs);
    for p in pending {
        acks.push(p.await??);
    }
    acks.sort_unstable();
    let (stats, _, end) = wait_for_runs(runs, &mut agent, &fakes, &broker, deadline).await?;
    let mut sample = Sample::default();
    sample.set("produce_ack_p50_ms", fakes::percentile(&acks, 0.50));
    sample.set("produce_ack_p99_ms", fakes::percentile(&acks, 0.99));
    // What the broker alone adds, with the agent's fetch settings and with a
    // 10 ms fetch wait; and what the agent adds once a message can be read:
    // its target arrival minus the 10 ms-wait consumer's receipt.
    let mut readable = Vec::new();
    for (consumer, key) in [(baseline, "broker"), (baseline_fast, "broker_fetch_wait_10ms")] {
        let mut seen = tokio::task::spawn_blocking(move || consumer.join()).await??;
        seen.latencies_us.sort_unstable();
        let l = &seen.latencies_us;
        sample.set(format!("{key}_latency_p50_ms"), fakes::percentile(l, 0.50));
        sample.set(format!("{key}_latency_p99_ms"), fakes::percentile(l, 0.99));
        readable = seen.received_ns;
    }
    let arrivals = fakes.arrivals().await?;
    let mut added: Vec<u32> = arrivals
        .iter()
        .zip(&readable)
        .filter(|(a, r)| **a > 0 && **r > 0)
        .map(|(a, r)| (a.saturating_sub(*r) / 1000).min(u32::MAX as u64) as u32)
        .collect();
    added.sort_unstable();
    sample.set("readable_to_target_p50_ms", fakes::percentile(&added, 0.50));
    sample.set("readable_to_target_p99_ms", fakes::percentile(&added, 0.99));
    sample.set("produce_rate_per_s", runs as f64 / produced_in);
    sample.set(
        "runs_per_s",
        runs as f64 / (stats.last_done_ns.saturating_sub(stats.first_target_ns) as f64 / 1e9).max(1e-9),
    );
    if let Some(l) = &stats.latency {
        sample.set("latency_p50_ms", l.p50_ms);
        sample.set("latency_p90_ms", l.p90_ms);
        sample.set("latency_p99_ms", l.p99_ms);
        sample.set("latency_max_ms", l.max_ms);
        sample.set("latency_mean_ms", l.mean_ms);
        if (l.count as usize) < runs {
            sample
                .notes
                .push(format!("latency measured on {} of {runs} runs", l.count));
        }
    }
    sample.set(
        "agent_cpu_us_per_run",
        (end.agent - start.agent) / runs as f64 * 1e6,
    );
    sample.set("agent_peak_rss_mib", agent.peak_rss_kib() as f64 / 1024.0);
    start.record(&end, runs, &mut sample);
    record_stats(&stats, runs, &mut sample);
    stop_agent(&mut agent, &mut sample, "");
    sample.ok = true;
    Ok(sample)
}

/// S7: process start to ready, the consumer-group join excluded.
async fn startup(s: &Session, tag: &str) -> Result<Sample> {
    let dir = s.run_dir(tag)?;
    let deadline = s.deadline();
    let broker = Broker::start(&dir.join("tansu.log"))?;
    broker.create_topics().await?;
    let fakes = Fakes::start(0, 0, &dir.join("fakes.log"))?;
    let mut agent = s.spawn_agent(&broker, &fakes, &dir, tag)?;
    let mut log = StartLog::default();
    let mut ready_at: Option<Duration> = None;
    let mut cpu_at_subscribed = None;
    loop {
        agent.check_alive()?;
        log.scan(&agent);
        if log.subscribed.is_some() && cpu_at_subscribed.is_none() {
            cpu_at_subscribed = Some(agent.cpu());
        }
        if ready_at.is_none() && ready(agent.http_port).await {
            ready_at = Some(agent.started.elapsed());
        }
        match (log.assigned, ready_at) {
            (Some(_), Some(_)) => break,
            // No readiness endpoint (or it never turns ready): log lines only.
            (Some(a), None) if agent.started.elapsed() > a + Duration::from_secs(3) => break,
            _ => {}
        }
        if Instant::now() > deadline {
            bail!(
                "the agent did not become ready in time (log: {})",
                agent.log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mut sample = Sample::default();
    let subscribed = log
        .subscribed
        .ok_or_else(|| anyhow!("no \"subscribed\" line in the agent log (LOG_LEVEL must be info)"))?;
    let assigned = log.assigned.unwrap_or(subscribed);
    let join = assigned.saturating_sub(subscribed);
    sample.set("subscribed_ms", ms(subscribed));
    sample.set("assigned_ms", ms(assigned));
    sample.set("group_join_ms", ms(join));
    match ready_at {
        Some(r) => {
            sample.set("readyz_ms", ms(r));
            sample.set("start_to_ready_ms", ms(r.saturating_sub(join)));
            sample
                .notes
                .push("ready = first /readyz 200 minus the group join".into());
        }
        None => {
            sample.set("start_to_ready_ms", ms(subscribed));
            sample
                .notes
                .push("no /readyz: ready = the \"subscribed\" log line".into());
        }
    }
    if let Some(c) = cpu_at_subscribed {
        sample.set("agent_cpu_ms_to_subscribed", c * 1e3);
    }
    sample.set("agent_peak_rss_mib", agent.peak_rss_kib() as f64 / 1024.0);
    stop_agent(&mut agent, &mut sample, "");
    sample.ok = true;
    Ok(sample)
}

fn drain_spec(s: &Session, sc: Scenario) -> Drain {
    let (runs, synchronized, target_latency_ms, port_latency_ms) = match sc {
        Scenario::S1 => (10_000, false, 0, 0),
        Scenario::S2 => (10_000, true, 0, 0),
        Scenario::S3 => (5_000, false, 20, 0),
        _ => (2_000, false, 0, 20),
    };
    Drain {
        runs: s.opts.runs.unwrap_or(runs),
        synchronized,
        target_latency_ms,
        port_latency_ms,
    }
}

fn ratio_aim() -> Target {
    Target::at_most("cpu_ratio_vs_ref", 1.5, "agent CPU/run ÷ reference CPU/run").aim()
}

/// Title, parameters and targets of a scenario.
fn describe(s: &Session, sc: Scenario) -> (String, serde_json::Value, Vec<Target>) {
    let o = &s.opts;
    match sc {
        Scenario::S1 | Scenario::S2 | Scenario::S3 | Scenario::S4 => {
            let d = drain_spec(s, sc);
            let title = match sc {
                Scenario::S1 => format!("{} async runs, 0 ms target, run logs on", d.runs),
                Scenario::S2 => format!("{} synchronized runs (/response + status patch)", d.runs),
                Scenario::S3 => format!(
                    "{} async runs, target answering in 20 ms, AGENT_MAX_IN_FLIGHT={}",
                    d.runs, o.max_in_flight
                ),
                _ => format!("{} async runs, Port API answering in 20 ms", d.runs),
            };
            let mut targets = match sc {
                Scenario::S1 => vec![
                    Target::at_least("runs_per_s", 6000.0, "runs/s over the drain"),
                    Target::at_most("agent_cpu_us_per_run", 150.0, "agent CPU µs per run"),
                ],
                Scenario::S2 => vec![Target::at_least("runs_per_s", 4000.0, "runs/s over the drain")],
                Scenario::S3 => {
                    let bound = o.max_in_flight as f64 / 0.020;
                    vec![Target::at_least(
                        "runs_per_s",
                        0.9 * bound,
                        &format!(
                            "runs/s ≥ 90% of {} / 20 ms = {}",
                            o.max_in_flight,
                            report::num(bound)
                        ),
                    )]
                }
                _ => vec![Target::at_least("runs_per_s", 400.0, "runs/s over the drain")],
            };
            if !o.no_reference {
                targets.push(ratio_aim());
            }
            (title, json!(d), targets)
        }
        Scenario::S5 => {
            let mut targets: Vec<Target> = o
                .s5_backlogs
                .iter()
                .map(|b| {
                    Target::at_most(
                        &format!("agent_peak_rss_mib_{b}"),
                        40.0,
                        &format!("peak RSS MiB, backlog {b}"),
                    )
                })
                .collect();
            if o.s5_backlogs.len() > 1 {
                targets.push(
                    Target::at_most(
                        "rss_growth_largest_vs_smallest",
                        1.10,
                        "flat: peak RSS largest ÷ smallest backlog",
                    )
                    .aim(),
                );
            }
            (
                format!(
                    "backlogs {:?}, target answering in {} ms, RSS sampled over {} s",
                    o.s5_backlogs, o.s5_target_latency_ms, o.s5_window_s
                ),
                json!({"backlogs": o.s5_backlogs, "target_latency_ms": o.s5_target_latency_ms,
                       "window_s": o.s5_window_s}),
                targets,
            )
        }
        Scenario::S6 => (
            format!("live: {} runs/s produced for {} s", o.s6_rate, o.s6_seconds),
            json!({"rate": o.s6_rate, "seconds": o.s6_seconds}),
            vec![Target::at_most("latency_p99_ms", 20.0, "p99 produce→target ms")],
        ),
        Scenario::S7 => (
            "port-agent start to ready, group join excluded".to_string(),
            json!({}),
            vec![Target::at_most("start_to_ready_ms", 100.0, "start to ready ms")],
        ),
    }
}

async fn run_once(s: &Session, sc: Scenario, tag: &str) -> Result<Sample> {
    match sc {
        Scenario::S1 | Scenario::S2 | Scenario::S3 | Scenario::S4 => drain(s, &drain_spec(s, sc), tag).await,
        Scenario::S5 => backlog(s, tag).await,
        Scenario::S6 => live(s, tag).await,
        Scenario::S7 => startup(s, tag).await,
    }
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The newest modification time under `dir`.
fn newest(dir: &Path) -> Option<SystemTime> {
    let mut best = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let t = if path.is_dir() {
            newest(&path)
        } else {
            entry.metadata().ok().and_then(|m| m.modified().ok())
        };
        best = best.max(t);
    }
    best
}

fn target_dir() -> PathBuf {
    // …/target/release/deps/load-<hash>
    std::env::current_exe()
        .ok()
        .and_then(|p| Some(p.parent()?.parent()?.parent()?.to_path_buf()))
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

async fn session(opts: Opts) -> Result<bool> {
    let started_at = unix_s();
    let agent_bin = match &opts.agent_bin {
        Some(p) => p.clone(),
        None => target_dir().join("release").join("port-agent"),
    };
    if !agent_bin.is_file() {
        bail!(
            "no agent binary at {}: run `cargo build --release` first (scripts/bench.sh does)",
            agent_bin.display()
        );
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bin_time = std::fs::metadata(&agent_bin)?.modified().ok();
    let stale = newest(&manifest.join("src")).max(newest(&manifest.join("vendor"))) > bin_time;
    if stale {
        eprintln!(
            "warning: {} is older than src/: the numbers are for an old build (run cargo build --release)",
            agent_bin.display()
        );
    }
    let dir = target_dir().join("bench").join(format!("run-{started_at}"));
    std::fs::create_dir_all(&dir)?;
    let s = Session {
        opts: opts.clone(),
        agent_bin: agent_bin.clone(),
        dir: dir.clone(),
    };

    let mut scenarios = opts.scenarios.clone();
    scenarios.sort();
    scenarios.dedup();
    let mut results = Vec::new();
    for &sc in &scenarios {
        let (title, params, targets) = describe(&s, sc);
        let id = format!("{sc:?}");
        let mut samples = Vec::new();
        for rep in 1..=opts.repeat.max(1) {
            let tag = format!("{}-{rep}", id.to_lowercase());
            eprintln!("[{id} {rep}/{}] {title} …", opts.repeat.max(1));
            let t = Instant::now();
            let limit = Duration::from_secs(opts.timeout_s + 60);
            let sample = match tokio::time::timeout(limit, run_once(&s, sc, &tag)).await {
                Ok(Ok(sample)) => sample,
                Ok(Err(e)) => Sample::failed(format!("{e:#}")),
                Err(_) => Sample::failed(format!("timed out after {} s", limit.as_secs())),
            };
            let summary = if sample.ok {
                const SHOWN: [&str; 6] = [
                    "runs_per_s",
                    "latency_p99_ms",
                    "agent_cpu_us_per_run",
                    "cpu_ratio_vs_ref",
                    "start_to_ready_ms",
                    "other_cpu_pct",
                ];
                sample
                    .metrics
                    .iter()
                    .filter(|(k, _)| SHOWN.contains(&k.as_str()) || k.starts_with("agent_peak_rss_mib_"))
                    .map(|(k, v)| format!("{k}={}", report::num(*v)))
                    .collect::<Vec<_>>()
                    .join(" ")
            } else {
                format!(
                    "FAILED: {} (logs kept in {})",
                    sample.error.as_deref().unwrap_or(""),
                    dir.join(&tag).display()
                )
            };
            eprintln!(
                "[{id} {rep}/{}] {:.1} s {summary}",
                opts.repeat.max(1),
                t.elapsed().as_secs_f64()
            );
            for n in &sample.notes {
                eprintln!("    note: {n}");
            }
            if sample.ok && !opts.keep_logs {
                for entry in std::fs::read_dir(&dir)?.flatten() {
                    let name = entry.file_name().to_string_lossy().to_string();
                    if name == tag || name.starts_with(&format!("{tag}-")) {
                        let _ = std::fs::remove_dir_all(entry.path());
                    }
                }
            }
            samples.push(sample);
        }
        results.push(ScenarioResult::new(&id, &title, params, samples, targets));
    }

    println!();
    println!(
        "port-agent load benchmark: medians of {} repeat(s); CPU% is % of one core over the drain window ({} cores)",
        opts.repeat.max(1),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    println!("{}", report::measurements(&results));
    println!();
    println!("score: achieved ÷ limit for \"≥\", limit ÷ achieved for \"≤\"; 1.00× or more meets the target");
    println!("{}", report::verdicts(&results));

    let disturbed: Vec<String> = results
        .iter()
        .filter(|r| r.median.get("other_cpu_pct").is_some_and(|v| *v > 10.0))
        .map(|r| r.id.clone())
        .collect();
    if !disturbed.is_empty() {
        println!(
            "warning: other processes used over 10% of a core during {}: those numbers are disturbed",
            disturbed.join(", ")
        );
    }

    let missed = results
        .iter()
        .flat_map(|r| &r.verdicts)
        .any(|v| !v.target.aim && v.pass != Some(true));
    let failed = results.iter().any(|r| r.ok_count() < r.samples.len());
    let doc = json!({
        "schema": 1,
        "benchmark": "port-agent load",
        "started_at_unix": started_at,
        "finished_at_unix": unix_s(),
        "git": {"commit": git(&["rev-parse", "HEAD"]), "dirty": git(&["status", "--porcelain"]).map(|s| !s.is_empty())},
        "host": {
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").ok().map(|s| s.trim().to_string()),
        },
        "agent_bin": agent_bin.display().to_string(),
        "agent_bin_older_than_src": stale,
        "standard_sizes": opts.standard(),
        "options": opts,
        "scenarios": results,
    });
    let text = serde_json::to_string_pretty(&doc)?;
    let out = opts
        .out
        .clone()
        .unwrap_or_else(|| target_dir().join("bench").join(format!("load-{started_at}.json")));
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&out, &text)?;
    println!();
    println!("JSON: {}", out.display());
    // benches/results/last.json is the committed baseline: only a clean,
    // standard, complete run of a fresh binary on a quiet machine replaces it.
    let why_not_last = if !opts.standard() || scenarios.len() != 7 {
        Some("not a standard full run")
    } else if failed {
        Some("a scenario run failed")
    } else if stale {
        Some("the agent binary is older than src/")
    } else if !disturbed.is_empty() {
        Some("other processes disturbed the measurement")
    } else {
        None
    };
    match why_not_last {
        _ if opts.no_save_last => {}
        None => {
            let last = manifest.join("benches").join("results").join("last.json");
            std::fs::create_dir_all(last.parent().unwrap_or(manifest))?;
            std::fs::write(&last, &text)?;
            println!("JSON: {}", last.display());
        }
        Some(why) => println!("({why}: benches/results/last.json left unchanged)"),
    }
    if failed || opts.keep_logs {
        println!("logs: {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(!(failed || (opts.strict && missed)))
}

fn main() -> std::process::ExitCode {
    let mut args: Vec<String> = std::env::args().collect();
    // `cargo bench` passes `--bench`; `cargo test --benches` does not, and
    // then nothing runs: timed measurements stay out of `cargo test`.
    let benching = args.iter().any(|a| a == "--bench");
    args.retain(|a| a != "--bench");
    let cli = Cli::parse_from(args);
    let result = match cli.command {
        Some(Sub::ServeFakes(a)) => fakes::serve(a).map(|_| true),
        Some(Sub::Reference(a)) => reference::run(a).map(|_| true),
        None if !benching => {
            println!(
                "load benchmark: run it with `scripts/bench.sh` or `cargo bench --bench load -- [options]`"
            );
            Ok(true)
        }
        None => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(session(cli.opts))),
    };
    match result {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Stop the agent with SIGTERM; an exit other than 0 is noted on the sample
/// (`context` follows "SIGTERM" in the note).
fn stop_agent(agent: &mut Agent, sample: &mut Sample, context: &str) {
    let code = agent.stop(Duration::from_secs(30));
    if code != Some(0) {
        sample
            .notes
            .push(format!("agent exit code after SIGTERM{context}: {code:?}"));
    }
}
