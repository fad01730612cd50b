//! What the drain scenarios (S1-S4) share: N signed runs queued before the
//! agent starts, the agent run until the fakes have seen every run done,
//! then the bare reference client over the same fakes. Each scenario's file
//! gives its sizes, title and targets as a [`DrainScenario`].

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use serde_json::json;

use super::{Description, Run, Scenario};
use crate::fakes::Fakes;
use crate::infra::Broker;
use crate::report::{Sample, Target};
use crate::session::{record_stats, stop_agent, unix_s, wait_for_runs, Session};
use crate::{infra, messages, procfs, reference, Opts};

/// Async runs, a target and a Port API that answer at once: the sizes the
/// scenarios start from.
pub const IMMEDIATE: Drain = Drain {
    runs: 0,
    synchronized: false,
    target_latency_ms: 0,
    port_latency_ms: 0,
};

/// A drain scenario: its default sizes, its title and its targets.
pub struct DrainScenario {
    /// The sizes (`runs` is the default of `--runs`).
    pub defaults: Drain,
    /// The title, from the sizes in effect and the options.
    pub title: fn(&Drain, &Opts) -> String,
    /// The targets (the CPU ratio to the reference is added unless
    /// `--no-reference`).
    pub targets: fn(&Opts) -> Vec<Target>,
}

impl DrainScenario {
    /// The sizes in effect: `--runs` replaces the default number of runs.
    fn spec(&self, s: &Session) -> Drain {
        Drain {
            runs: s.opts.runs.unwrap_or(self.defaults.runs),
            ..self.defaults.clone()
        }
    }
}

impl Scenario for DrainScenario {
    fn describe(&self, s: &Session) -> Description {
        let d = self.spec(s);
        let mut targets = (self.targets)(&s.opts);
        if !s.opts.no_reference {
            targets.push(ratio_aim());
        }
        Description {
            title: (self.title)(&d, &s.opts),
            params: json!(d),
            targets,
        }
    }

    fn run<'a>(&'a self, s: &'a Session, tag: &'a str) -> Run<'a> {
        Box::pin(async move { drain(s, &self.spec(s), tag).await })
    }
}

fn ratio_aim() -> Target {
    Target::at_most("cpu_ratio_vs_ref", 1.5, "agent CPU/run ÷ reference CPU/run").aim()
}

/// A drain scenario: N runs queued before the agent starts.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Drain {
    /// Runs queued (`--runs` replaces the scenario's default).
    pub runs: usize,
    /// Synchronized runs: `/response` and a status PATCH each.
    pub synchronized: bool,
    /// The target's answer time.
    pub target_latency_ms: u64,
    /// The Port API's answer time.
    pub port_latency_ms: u64,
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
    fakes
        .reset(spec.runs, false, s.expected_calls(spec.synchronized))
        .await?;
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
        "--run-log-lines",
        &s.opts.run_logs.lines(spec.synchronized).to_string(),
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

/// The bare consumer (`infra::bare_consumer`) over the same topic, once per
/// `--bare-consumer-backoffs-ms` value.
async fn bare_consumers(s: &Session, spec: &Drain, broker: &Broker, sample: &mut Sample) -> Result<()> {
    for &backoff in &s.opts.bare_consumer_backoffs_ms {
        let report = infra::run_bare_consumer(broker, spec.runs, backoff).await?;
        sample.set(
            format!("bare_consumer_msgs_per_s_backoff_{backoff}ms"),
            report.msgs_per_s,
        );
    }
    Ok(())
}

/// S1-S4: queue `spec.runs`, start the agent, wait until all are done.
async fn drain(s: &Session, spec: &Drain, tag: &str) -> Result<Sample> {
    let dir = s.run_dir(tag)?;
    let deadline = s.deadline();
    let broker = s.start_broker(&dir)?;
    broker.create_topics().await?;
    let fakes = Fakes::start(
        spec.port_latency_ms,
        spec.target_latency_ms,
        &dir.join("fakes.log"),
    )?;
    fakes
        .reset(spec.runs, false, s.expected_calls(spec.synchronized))
        .await?;
    let mut sample = Sample::default();

    broker.check_capacity(spec.runs)?;
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
        bare_consumers(s, spec, &broker, &mut sample).await?;
    }
    sample.ok = true;
    Ok(sample)
}
