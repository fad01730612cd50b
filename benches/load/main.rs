//! End-to-end load benchmark of the release `port-agent` binary.
//!
//!     scripts/bench.sh                          # every scenario, 3 repeats
//!     cargo bench --bench load -- --help        # options
//!
//! Each scenario run starts its own infrastructure: a broker on 127.0.0.1
//! (`--broker`: tansu, or librdkafka's mock cluster in a process of its own,
//! `serve-mock-broker`; `--broker tansu,mock` runs every scenario on both),
//! and the fake Port API and target in a process of their own
//! (this executable, `serve-fakes`), so the agent's, the fakes', the broker's
//! and the harness's CPU are measured apart (`/proc/PID/stat`). For the drain
//! scenarios the N signed messages are produced before the agent starts; the
//! agent then runs as a separate process until the fakes have seen every run
//! done: its last expected call seen (counted per run, see `fakes.rs`).
//! After each drain scenario a bare reference client (`reference`) makes the
//! same HTTP calls against the same fakes, and the agent's CPU per run is
//! divided by the reference's; and a bare consumer (`bare-consumer`) with
//! the agent's fetch settings, spending 0.2 ms per message, reads the same
//! topic with `fetch.queue.backoff.ms` 1000 (librdkafka's default) and 10
//! (the agent's): what fetch pacing alone allows on that broker.
//!
//! Prints a measurements table and a targets table (medians over the
//! repeats) and writes JSON to `target/bench/load-<unix time>.json`, and to
//! `benches/results/last.json` when the run used the standard sizes.
//!
//! Layout: `session.rs` runs the chosen scenarios and writes the results;
//! `scenarios/` holds one file per scenario behind one trait and one table
//! (`scenarios::Id::scenario`); `fakes.rs`, `infra.rs`, `reference.rs`,
//! `messages.rs`, `procfs.rs` and `report.rs` are what they use. The broker,
//! the agent process and the signing come from the `testkit` crate.
//!
//! Nothing here runs under `cargo test`: without `--bench` (which `cargo
//! bench` passes) the program only prints how to run it.

mod fakes;
mod infra;
mod messages;
mod procfs;
mod reference;
mod report;
mod scenarios;
mod session;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

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
    /// (internal) Serve a librdkafka mock cluster until stdin closes.
    ServeMockBroker(infra::MockArgs),
    /// (internal) The bare consumer: the agent's fetch settings, 0.2 ms per message.
    BareConsumer(infra::BareArgs),
}

/// `AGENT_RUN_LOGS` of the agent under test (`--run-logs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunLogs {
    /// Every run log line (`AGENT_RUN_LOGS=true`, understood by older
    /// binaries too): 5 log calls per delivered action run.
    All,
    /// Only the final outcome line (`AGENT_RUN_LOGS=minimal`): 1 log call.
    Minimal,
    /// No run logs (`AGENT_RUN_LOGS=false`).
    Off,
}

impl RunLogs {
    /// The value of `AGENT_RUN_LOGS`.
    pub fn env_value(self) -> &'static str {
        match self {
            RunLogs::All => "true",
            RunLogs::Minimal => "minimal",
            RunLogs::Off => "false",
        }
    }

    /// Run log calls per delivered action run (`synchronized`: the
    /// target's answer has a body, so with `all` the run also gets the
    /// Python agent's two lines about its response).
    pub fn lines(self, synchronized: bool) -> u8 {
        match self {
            RunLogs::All if synchronized => fakes::RUN_LOG_LINES + 2,
            RunLogs::All => fakes::RUN_LOG_LINES,
            RunLogs::Minimal => 1,
            RunLogs::Off => 0,
        }
    }
}

/// The mapping the agent runs (`--mapping`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MappingKind {
    /// 7 jq expressions: enabled, two headers, a body of four fields.
    Typical,
    /// `[{"enabled": true}]`: the whole message is the body.
    Passthrough,
}

/// The benchmark's options.
#[derive(Debug, Clone, clap::Args, serde::Serialize)]
pub struct Opts {
    /// Scenarios to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "s1,s2,s3,s4,s5,s6,s7,s8")]
    pub scenarios: Vec<scenarios::Id>,
    /// Brokers, comma-separated: every scenario runs on each (ids of the
    /// mock cluster's runs end in `-mock`).
    #[arg(long, value_delimiter = ',', default_value = "tansu")]
    pub broker: Vec<infra::BrokerKind>,
    /// Repeats of each scenario; the tables show medians.
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Runs per drain scenario (S1-S4), instead of 10,000 / 10,000 / 5,000 / 2,000.
    #[arg(long)]
    pub runs: Option<usize>,
    /// S5: backlogs whose peak RSS is compared.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
    pub s5_backlogs: Vec<usize>,
    /// S5: seconds of processing sampled after the first target request.
    #[arg(long, default_value_t = 20)]
    pub s5_window_s: u64,
    /// S5: latency of the slow target (64 in flight / 200 ms = 320 runs/s,
    /// so neither backlog drains within the window).
    #[arg(long, default_value_t = 200)]
    pub s5_target_latency_ms: u64,
    /// S6: messages produced per second.
    #[arg(long, default_value_t = 500)]
    pub s6_rate: u64,
    /// S6: seconds of production.
    #[arg(long, default_value_t = 30)]
    pub s6_seconds: u64,
    /// S8: delay of every fake Port API answer.
    #[arg(long, default_value_t = 50)]
    pub port_latency_ms: u64,
    /// S8: synchronized runs produced per second.
    #[arg(long, default_value_t = 100)]
    pub s8_rate: u64,
    /// S8: seconds of production.
    #[arg(long, default_value_t = 20)]
    pub s8_seconds: u64,
    /// The agent's AGENT_RUN_LOGS (the fakes' "run done" follows it).
    #[arg(long, value_enum, default_value = "all")]
    pub run_logs: RunLogs,
    /// The bare consumer's `fetch.queue.backoff.ms` values (drain scenarios,
    /// with the reference; empty to skip it).
    #[arg(long, value_delimiter = ',', default_value = "1000,10")]
    pub bare_consumer_backoffs_ms: Vec<u32>,
    /// Time limit of one scenario run (a run over it is reported as failed).
    #[arg(long, default_value_t = 300)]
    pub timeout_s: u64,
    /// The agent binary (default: target/release/port-agent beside this benchmark).
    #[arg(long)]
    pub agent_bin: Option<PathBuf>,
    /// The mapping the agent runs.
    #[arg(long, value_enum, default_value = "typical")]
    pub mapping: MappingKind,
    /// AGENT_MAX_IN_FLIGHT (also the reference's concurrency).
    #[arg(long, default_value_t = 64)]
    pub max_in_flight: usize,
    /// The agent's LOG_LEVEL (its default is INFO; S7 and S6 read its
    /// "subscribed" and "partitions assigned" lines).
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// Skip the reference client.
    #[arg(long)]
    pub no_reference: bool,
    /// JSON output file (default target/bench/load-<unix time>.json).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Do not write benches/results/last.json even for a standard run.
    #[arg(long)]
    pub no_save_last: bool,
    /// Keep the logs of successful runs (failed runs' logs are always kept).
    #[arg(long)]
    pub keep_logs: bool,
    /// Exit with status 1 when a (non-aim) target is missed.
    #[arg(long)]
    pub strict: bool,
}

impl Opts {
    /// Standard sizes, so the JSON is comparable with earlier ones.
    pub fn standard(&self) -> bool {
        self.runs.is_none()
            && self.repeat >= 3
            && self.s5_backlogs == [10_000, 100_000]
            && self.s5_window_s == 20
            && self.s5_target_latency_ms == 200
            && self.s6_rate == 500
            && self.s6_seconds == 30
            && self.port_latency_ms == 50
            && self.s8_rate == 100
            && self.s8_seconds == 20
            && self.run_logs == RunLogs::All
            && self.broker.contains(&infra::BrokerKind::Tansu)
            && self.mapping == MappingKind::Typical
            && self.max_in_flight == 64
            && self.log_level.eq_ignore_ascii_case("info")
    }
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
        Some(Sub::ServeMockBroker(a)) => infra::serve_mock(a).map(|_| true),
        Some(Sub::BareConsumer(a)) => infra::bare_consumer(a).map(|_| true),
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
            .and_then(|rt| rt.block_on(session::run(cli.opts))),
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
