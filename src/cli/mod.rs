//! The `port-agent` command line: one module per command. `main.rs` parses
//! the arguments and maps this module's one [`Error`] type to an exit code;
//! [`run`] (the `run` command) is the only place that wires the agent's
//! components together.
//!
//! - [`run`]: the agent itself;
//! - [`check`]: validate settings and mappings (with [`coverage`] over a
//!   recorded topic);
//! - [`render`]: one message through the pipeline, shown;
//! - [`dry_run`]: a recorded topic through the pipeline, with recording
//!   edges instead of the network;
//! - [`record`]: copy the topics into a recorded-topic file.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::http::ClientOptions;
use crate::mapping::{MappingError, MappingSet};
use crate::pipeline::Config;
use crate::port::PortClient;
use crate::settings::{Requirement, Settings};
use crate::telemetry::{init_logging, LogTarget};

pub mod check;
pub mod coverage;
pub mod dry_run;
pub mod record;
pub mod recorded;
pub mod render;
pub mod run;

/// The log target of the command line's own events: the binary's name, as
/// before the commands moved into the library.
const LOG_TARGET: &str = "port_agent";

/// How the process ends: the one table of exit codes (README, "Exit
/// codes"). Commands return one on success or problems found; an [`Error`]
/// says its own ([`Error::exit`]); `main.rs` turns it into the process's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: done (`run`: stopped by a signal).
    Success,
    /// 1: problems found in what could be read (`check`: mapping errors,
    /// failing fields; `dry-run`: malformed input lines); also the command
    /// line's own failure (the async runtime cannot start).
    Problems,
    /// 2: invalid command line (clap exits with it before any command).
    Usage,
    /// 3: cannot run: invalid settings, a file that cannot be read (the
    /// mapping file in every command), a mapping file that does not
    /// compile (`run`, `render`, `dry-run`), credentials Port refuses.
    Config,
    /// 4: `run` gave up (the polling API failed for too long).
    GaveUp,
    /// 5: a service the command needs failed at start-up: Port did not
    /// hand out the Kafka credentials.
    Unavailable,
    /// 130: stopped by hand (a second stop signal during the drain).
    Interrupted,
}

impl Exit {
    /// Every way the process ends, in the order of the README's table.
    pub const ALL: [Exit; 7] = [
        Exit::Success,
        Exit::Problems,
        Exit::Usage,
        Exit::Config,
        Exit::GaveUp,
        Exit::Unavailable,
        Exit::Interrupted,
    ];

    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::Problems => 1,
            Exit::Usage => 2,
            Exit::Config => 3,
            Exit::GaveUp => 4,
            Exit::Unavailable => 5,
            Exit::Interrupted => 130,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit.code())
    }
}

/// Why a command could not do its work; [`Error::exit`] says how the
/// process ends.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Invalid settings, mapping file or input, or a component that could
    /// not start with them ([`Exit::Config`]).
    #[error("{0:#}")]
    Config(#[from] anyhow::Error),
    /// A service the command needs failed at start-up
    /// ([`Exit::Unavailable`]).
    #[error("{0:#}")]
    Unavailable(anyhow::Error),
    /// `run` gave up: Port's polling API failed for
    /// `POLLING_MAX_FAILURE_DURATION_SECONDS` ([`Exit::GaveUp`]).
    #[error(transparent)]
    GaveUp(#[from] crate::source::polling::PollingError),
}

impl Error {
    /// How the process ends with this error.
    pub fn exit(&self) -> Exit {
        match self {
            Error::Config(_) => Exit::Config,
            Error::Unavailable(_) => Exit::Unavailable,
            Error::GaveUp(_) => Exit::GaveUp,
        }
    }
}

/// A command's result: how the process ends after success or problems
/// found, or an [`Error`].
pub type Result<T = Exit> = std::result::Result<T, Error>;

/// The command line.
#[derive(Parser)]
#[command(
    name = "port-agent",
    version,
    about = "Port execution agent: Kafka invocations to signed HTTP requests, results reported to Port",
    long_about = "Port execution agent: reads invocations from Port's Kafka topics (or its polling API), \
builds each HTTP request with a jq mapping file, signs and sends it to your internal service, \
and reports the result back to Port.\n\nWith no command, `run` is assumed.",
    after_help = "Exit codes: 0 success; 1 problems found (mapping errors in `check`, malformed lines in \
`dry-run`); 2 invalid command line; 3 cannot run: invalid settings, a file that cannot be read (a \
missing mapping file, in every command), or a mapping file that does not compile (`run`, `render`, \
`dry-run`); 4 `run` gave up (Port's polling API failed for POLLING_MAX_FAILURE_DURATION_SECONDS); 5 a \
service needed at start-up failed (Port did not hand out the Kafka credentials); 130 stopped by a second signal.\n\n\
Example: PORT_CLIENT_SECRET=example-client-secret-0123456789abcdef port-agent dry-run --input examples/recorded-topic.jsonl --mapping examples/mapping.json"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent (the default): consume invocations and act on them.
    #[command(
        after_help = "Settings come from the environment (see the README); STREAMER_NAME is KAFKA \
(the default) or POLLING, in upper case. US organisations add PORT_API_BASE_URL=https://api.us.getport.io.\n\n\
Examples:\n  \
# Kafka\n  \
PORT_ORG_ID=org_1 PORT_CLIENT_ID=… PORT_CLIENT_SECRET=… KAFKA_CONSUMER_GROUP_ID=org_1.agent port-agent run\n  \
# Polling (Port's API instead of Kafka; POLLING_INTERVAL_SECONDS is 1 or more, default 10)\n  \
PORT_ORG_ID=org_1 PORT_CLIENT_ID=… PORT_CLIENT_SECRET=… STREAMER_NAME=POLLING port-agent run"
    )]
    Run,
    /// Validate the settings that are present and compile every mapping.
    #[command(
        after_help = "With --messages, also evaluate every mapping over a recorded topic: per mapping, how many \
messages select it; per field, how many evaluations failed and the first error; which messages no mapping \
selects. Exit 1 when any field fails.\n\nExamples:\n  port-agent check --mapping ./invocations.json\n  \
port-agent check --mapping examples/mapping.json --messages examples/recorded-topic.jsonl"
    )]
    Check(check::CheckArgs),
    /// Show which mapping a message selects and the request and report it builds.
    #[command(
        after_help = "Example:\n  port-agent render --mapping invocations.json --message run.json --env GITLAB_TOKEN=xyz"
    )]
    Render(render::RenderArgs),
    /// Run the full pipeline over a recorded topic with no network side effects.
    #[command(
        after_help = "Input lines: the agent's record format, `kcat -C -J` output, or bare message objects.\n\
Signatures are verified when PORT_CLIENT_SECRET is set and --no-verify is not given.\n\nExample:\n  \
PORT_CLIENT_SECRET=example-client-secret-0123456789abcdef port-agent dry-run --input examples/recorded-topic.jsonl --mapping examples/mapping.json"
    )]
    DryRun(dry_run::DryRunArgs),
    /// Copy the topics into a recorded-topic file (commits nothing).
    #[command(
        after_help = "Uses the Kafka settings of `run` with a throwaway consumer group; stops at --max, \
after --timeout seconds without a message, or on Ctrl-C.\n\nExample:\n  \
port-agent record --out runs.jsonl --from-beginning --max 500 --timeout 10"
    )]
    Record(record::RecordArgs),
}

/// What `render` and `dry-run` assume of the target and the clock.
#[derive(Args, Clone)]
pub struct Assume {
    /// Sign with this Unix time instead of now (reproducible output).
    #[arg(long, value_name = "UNIX_SECONDS")]
    timestamp: Option<u64>,
    /// Status the target is assumed to answer.
    #[arg(long, default_value_t = 200, value_name = "N")]
    assume_status: u16,
    /// Body the target is assumed to answer.
    #[arg(long, default_value = "", value_name = "TEXT")]
    assume_body: String,
}

/// Output format of `render` and `dry-run`.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Text for a reader.
    Text,
    /// JSON for a program.
    Json,
}

/// Run the command the command line names (`run` when none).
pub async fn dispatch(cli: Cli) -> Result {
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => run::command().await,
        Command::Check(args) => check::command(args),
        Command::Render(args) => render::command(args).await,
        Command::DryRun(args) => dry_run::command(args).await,
        Command::Record(args) => record::command(args).await,
    }
}

/// Settings for the offline commands, logging to stderr.
fn offline_settings() -> anyhow::Result<Settings> {
    let settings = Settings::from_env(Requirement::Offline).map_err(|e| anyhow::anyhow!("{e}"))?;
    init_logging(
        &settings.telemetry.log_filter,
        settings.telemetry.log_format,
        LogTarget::Stderr,
    );
    Ok(settings)
}

/// Settings for `render` and `dry-run`: logs go to stderr at `warn` unless
/// `LOG_LEVEL` (or `RUST_LOG`) says otherwise, so the output is the report.
fn quiet_offline_settings() -> anyhow::Result<Settings> {
    let settings = Settings::from_env(Requirement::Offline).map_err(|e| anyhow::anyhow!("{e}"))?;
    let filter = if settings.telemetry.log_filter_chosen {
        settings.telemetry.log_filter.as_str()
    } else {
        "warn"
    };
    init_logging(filter, settings.telemetry.log_format, LogTarget::Stderr);
    Ok(settings)
}

/// The mapping file given on the command line, else the settings' one.
fn mapping_path(given: Option<PathBuf>, settings: &Settings) -> PathBuf {
    given.unwrap_or_else(|| PathBuf::from(&settings.mapping.path))
}

/// Load and compile a mapping file; unknown keys are warned about.
fn load_mappings(path: &Path) -> anyhow::Result<MappingSet> {
    let set = MappingSet::load(path).map_err(|e| anyhow::anyhow!("{}", describe_mapping_error(path, &e)))?;
    for m in &set.mappings {
        if !m.unknown_keys.is_empty() {
            tracing::warn!(target: LOG_TARGET, mapping = m.index, keys = ?m.unknown_keys, "unknown mapping keys are ignored");
        }
    }
    Ok(set)
}

fn describe_mapping_error(path: &Path, e: &MappingError) -> String {
    crate::mapping::reload::describe_error(path, e)
}

/// The Port API client the settings describe.
fn port_client(settings: &Settings, idle_connections: usize) -> anyhow::Result<PortClient> {
    let http = ClientOptions {
        timeout: settings.port.timeout,
        verify_tls: true,
        ca_bundle: settings.ca_bundle.clone(),
        pool_idle_per_host: idle_connections,
        proxies: settings.proxies.clone(),
    };
    Ok(PortClient::new(
        &settings.port.api_base_url,
        &settings.port.client_id,
        settings.port.client_secret.clone(),
        &http,
        settings.port.max_attempts,
    )?)
}

/// The pipeline configuration of the offline commands, and the topic of bare
/// message lines.
fn pipeline_config(settings: &Settings, topic_default: Option<&str>) -> (Config, String) {
    let mut config = Config::from_settings(settings);
    crate::mapping::jq::set_max_bytes(settings.limits.jq_max_bytes);
    if settings.port.org_id.is_empty() {
        // Offline without an org: recognise `<org>.runs` / `<org>.change.log`
        // by suffix, and give bare lines a runs topic.
        config.infer_topics = true;
        config.runs_topic = "unknown-org.runs".into();
        config.change_log_topic = "unknown-org.change.log".into();
    }
    let default_topic = topic_default
        .map(str::to_string)
        .unwrap_or_else(|| config.runs_topic.clone());
    (config, default_topic)
}

/// What `render` and `dry-run` run on: the real pipeline with recording
/// edges, as the settings and the command's arguments describe it.
struct Recording {
    /// The pipeline.
    pipeline: dry_run::DryPipeline,
    /// The topic of bare message lines.
    topic: String,
    /// Signatures are checked (a secret is set and `--no-verify` is not).
    verified: bool,
}

impl Recording {
    fn new(
        settings: &Settings,
        mappings: MappingSet,
        topic: Option<&str>,
        assume: &Assume,
        no_verify: bool,
        env: crate::mapping::JqEnv,
    ) -> Recording {
        let (mut config, topic) = pipeline_config(settings, topic);
        config.fixed_timestamp = assume.timestamp;
        config.skip_signature_check = no_verify;
        let verified = config.secret.is_some() && !no_verify;
        let pipeline = dry_run::pipeline(config, mappings, env, assume.assume_status, &assume.assume_body)
            .with_guardrails(crate::pipeline::Guardrails::from_settings(settings));
        Recording {
            pipeline,
            topic,
            verified,
        }
    }
}

/// `K=V` of `render --env`.
fn parse_env_pair(s: &str) -> std::result::Result<(String, String), NotAPair> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| NotAPair(s.to_string()))
}

/// A `render --env` argument without `=`.
#[derive(Debug, thiserror::Error)]
#[error("expected K=V, got '{0}'")]
struct NotAPair(String);
