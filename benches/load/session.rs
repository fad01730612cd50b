//! A benchmark session: the scenarios chosen on the command line, each
//! repeated, then the tables and the JSON; and what every scenario uses
//! (the agent's settings, CPU snapshots, waiting for the fakes to see every
//! run done, the agent's start-up log lines).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Result};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::fakes::{Fakes, Stats};
use crate::infra::{self, Agent, Broker, BrokerKind};
use crate::report::{self, Sample, ScenarioResult};
use crate::scenarios::{self, Description};
use crate::{messages, procfs, MappingKind, Opts};

/// What every scenario run shares: the options, the agent binary, the
/// directory of this session's logs.
pub struct Session {
    /// The command-line options.
    pub opts: Opts,
    /// The agent binary under test.
    pub agent_bin: PathBuf,
    /// This session's directory (one subdirectory of logs per run).
    pub dir: PathBuf,
    /// The broker of the scenarios being run.
    pub broker: BrokerKind,
}

/// Seconds since the Unix epoch.
pub fn unix_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// CPU seconds of every process at one moment.
#[derive(Debug, Clone, Copy)]
pub struct Cpu {
    /// When the snapshot was taken.
    pub at: Instant,
    /// The agent's CPU seconds.
    pub agent: f64,
    /// The fakes' CPU seconds.
    pub fakes: f64,
    /// The broker's CPU seconds.
    pub broker: f64,
    /// This harness's CPU seconds.
    pub harness: f64,
    /// The whole machine's busy CPU seconds.
    pub machine: f64,
}

impl Cpu {
    /// Take the snapshot now.
    pub fn now(agent: &Agent, fakes: &Fakes, broker: &Broker) -> Cpu {
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
    pub fn record(&self, end: &Cpu, runs: usize, s: &mut Sample) {
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
    /// The directory of run `tag` (created).
    pub fn run_dir(&self, tag: &str) -> Result<PathBuf> {
        let d = self.dir.join(tag);
        std::fs::create_dir_all(&d)?;
        Ok(d)
    }

    /// The mapping file of this session (written once).
    pub fn mapping_file(&self) -> Result<PathBuf> {
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
    pub fn spawn_agent(&self, broker: &Broker, fakes: &Fakes, dir: &Path, tag: &str) -> Result<Agent> {
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
            ("AGENT_RUN_LOGS", self.opts.run_logs.env_value().to_string()),
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

    /// Start this session's broker, logging in `dir`.
    pub fn start_broker(&self, dir: &Path) -> Result<Broker> {
        Broker::start(self.broker, dir)
    }

    /// The calls an action run makes before it is done (see `fakes.rs`):
    /// the target call, the run log lines of `--run-logs`, and for a
    /// synchronized run `/response` and the status PATCH.
    pub fn expected_calls(&self, synchronized: bool) -> u8 {
        1 + self.opts.run_logs.lines(synchronized) + if synchronized { 2 } else { 0 }
    }

    /// Now plus `--timeout-s`.
    pub fn deadline(&self) -> Instant {
        Instant::now() + Duration::from_secs(self.opts.timeout_s)
    }
}

/// Poll the fakes until every run is done; CPU snapshots at the first target
/// request seen and at the end.
pub async fn wait_for_runs(
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
pub fn record_stats(stats: &Stats, runs: usize, s: &mut Sample) {
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

/// Log lines the agent writes at start-up, by their `message`.
#[derive(Debug, Default)]
pub struct StartLog {
    /// Since start: the "subscribed" line.
    pub subscribed: Option<Duration>,
    /// Since start: the "partitions assigned" line.
    pub assigned: Option<Duration>,
}

impl StartLog {
    /// Read the agent's log for the lines not seen yet.
    pub fn scan(&mut self, agent: &Agent) {
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
pub async fn ready(port: u16) -> bool {
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
pub async fn wait_assigned(agent: &mut Agent, deadline: Instant) -> Result<()> {
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

/// Every repeat of scenario `sc`; the logs of a successful repeat are
/// removed from `dir` unless `--keep-logs`.
async fn repeats(s: &Session, sc: scenarios::Id, dir: &Path) -> Result<ScenarioResult> {
    let scenario = sc.scenario();
    let Description {
        title,
        params,
        targets,
    } = scenario.describe(s);
    let id = match s.broker {
        BrokerKind::Tansu => format!("{sc:?}"),
        other => format!("{sc:?}-{}", other.name()),
    };
    let title = match s.broker {
        BrokerKind::Tansu => title,
        BrokerKind::Mock => format!("{title} [librdkafka mock cluster]"),
    };
    let mut samples = Vec::new();
    for rep in 1..=s.opts.repeat.max(1) {
        let tag = format!("{}-{rep}", id.to_lowercase());
        eprintln!("[{id} {rep}/{}] {title} …", s.opts.repeat.max(1));
        let t = Instant::now();
        let limit = Duration::from_secs(s.opts.timeout_s + 60);
        let sample = match tokio::time::timeout(limit, scenario.run(s, &tag)).await {
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
            s.opts.repeat.max(1),
            t.elapsed().as_secs_f64()
        );
        for n in &sample.notes {
            eprintln!("    note: {n}");
        }
        if sample.ok && !s.opts.keep_logs {
            for entry in std::fs::read_dir(dir)?.flatten() {
                let name = entry.file_name().to_string_lossy().to_string();
                if name == tag || name.starts_with(&format!("{tag}-")) {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        samples.push(sample);
    }
    Ok(ScenarioResult::new(&id, &title, params, samples, targets))
}

/// Run the chosen scenarios, print the tables, write the JSON; `false` when a
/// run failed (or, with `--strict`, a target was missed).
pub async fn run(opts: Opts) -> Result<bool> {
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
    let mut s = Session {
        opts: opts.clone(),
        agent_bin: agent_bin.clone(),
        dir: dir.clone(),
        broker: BrokerKind::Tansu,
    };

    let mut scenarios = opts.scenarios.clone();
    scenarios.sort();
    scenarios.dedup();
    let mut brokers = opts.broker.clone();
    brokers.sort();
    brokers.dedup();
    let mut results = Vec::new();
    for &sc in &scenarios {
        for &broker in &brokers {
            // S5's 100,000-message backlog and S6's 15,000 messages exceed
            // what the mock cluster keeps (5 MiB per partition, see
            // `Broker::check_capacity`): tansu only.
            if broker == BrokerKind::Mock && matches!(sc, scenarios::Id::S5 | scenarios::Id::S6) {
                eprintln!(
                    "[{sc:?}-mock] skipped: its backlog exceeds the mock cluster's 5 MiB per partition"
                );
                continue;
            }
            s.broker = broker;
            results.push(repeats(&s, sc, &dir).await?);
        }
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
    let why_not_last = if !opts.standard()
        || scenarios.len() != <scenarios::Id as clap::ValueEnum>::value_variants().len()
    {
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

/// Stop the agent with SIGTERM; an exit other than 0 is noted on the sample
/// (`context` follows "SIGTERM" in the note).
pub fn stop_agent(agent: &mut Agent, sample: &mut Sample, context: &str) {
    let code = agent.stop(Duration::from_secs(30));
    if code != Some(0) {
        sample
            .notes
            .push(format!("agent exit code after SIGTERM{context}: {code:?}"));
    }
}
