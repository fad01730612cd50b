//! `port-agent` command line: run the agent, or check, render and dry-run
//! mappings offline. See `port-agent --help`.

// No unwrap or expect outside tests (see src/lib.rs).
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::{json, Value};

use std::sync::Arc;

use port_agent::dryrun::{self, Entry};
use port_agent::http::ClientOptions;
use port_agent::invoke::HttpInvoker;
use port_agent::mapping::jq::EVAL_THREAD_STACK;
use port_agent::mapping::{JqEnv, MappingError, MappingSet};
use port_agent::pipeline::{Config, Delivery};
use port_agent::pipeline::{Guard, Pipeline};
use port_agent::port::PortClient;
use port_agent::settings::Streamer;
use port_agent::settings::{Requirement, Settings};
use port_agent::source::{kafka, polling};
use port_agent::telemetry::server::Health;
use port_agent::telemetry::{self, init_logging, LogTarget};

/// Exit code: problems found (check errors, malformed input lines).
const EXIT_PROBLEMS: u8 = 1;
/// Exit code: invalid settings or mapping file.
const EXIT_CONFIG: u8 = 3;
/// Exit code: `run` gave up (the polling API failed for too long).
const EXIT_GAVE_UP: u8 = 4;

#[derive(Parser)]
#[command(
    name = "port-agent",
    version,
    about = "Port execution agent: Kafka invocations to signed HTTP requests, results reported to Port",
    long_about = "Port execution agent: reads invocations from Port's Kafka topics (or its polling API), \
builds each HTTP request with a jq mapping file, signs and sends it to your internal service, \
and reports the result back to Port.\n\nWith no command, `run` is assumed.",
    after_help = "Exit codes: 0 success; 1 problems found (mapping errors in `check`, malformed lines in \
`dry-run`); 2 invalid command line; 3 invalid settings or mapping file; 4 `run` gave up \
(Port's polling API failed for POLLING_MAX_FAILURE_DURATION_SECONDS).\n\n\
Example: PORT_CLIENT_SECRET=example-client-secret-0123456789abcdef port-agent dry-run --input examples/recorded-topic.jsonl --mapping examples/mapping.json"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent (the default): consume invocations and act on them.
    #[command(after_help = "Settings come from the environment (see the README); e.g.\n  \
PORT_ORG_ID=org_1 PORT_CLIENT_ID=… PORT_CLIENT_SECRET=… KAFKA_CONSUMER_GROUP_ID=org_1.agent port-agent run")]
    Run,
    /// Validate the settings that are present and compile every mapping.
    #[command(
        after_help = "With --messages, also evaluate every mapping over a recorded topic: per mapping, how many \
messages select it; per field, how many evaluations failed and the first error; which messages no mapping \
selects. Exit 1 when any field fails.\n\nExamples:\n  port-agent check --mapping ./invocations.json\n  \
port-agent check --mapping examples/mapping.json --messages examples/recorded-topic.jsonl"
    )]
    Check {
        /// Mapping file (default: CONTROL_THE_PAYLOAD_CONFIG_PATH).
        #[arg(long, value_name = "FILE")]
        mapping: Option<PathBuf>,
        /// Recorded topic (JSON lines, as for dry-run) to evaluate the mappings over.
        #[arg(long, value_name = "FILE")]
        messages: Option<PathBuf>,
        /// Topic for bare message lines in --messages (default: the runs topic).
        #[arg(long, value_name = "TOPIC", requires = "messages")]
        topic: Option<String>,
    },
    /// Show which mapping a message selects and the request and report it builds.
    #[command(
        after_help = "Example:\n  port-agent render --mapping invocations.json --message run.json --env GITLAB_TOKEN=xyz"
    )]
    Render {
        /// Mapping file.
        #[arg(long, value_name = "FILE")]
        mapping: PathBuf,
        /// The message (one JSON object, as on the topic).
        #[arg(long, value_name = "FILE")]
        message: PathBuf,
        /// Topic the message came from (default: the runs topic).
        #[arg(long, value_name = "TOPIC")]
        topic: Option<String>,
        /// Extra environment for `env.X` in expressions (repeatable).
        #[arg(long = "env", value_name = "K=V", value_parser = parse_env_pair)]
        env: Vec<(String, String)>,
        #[command(flatten)]
        assume: Assume,
        /// Do not verify the message's signature, even with PORT_CLIENT_SECRET set.
        #[arg(long)]
        no_verify: bool,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Run the full pipeline over a recorded topic with no network side effects.
    #[command(
        after_help = "Input lines: the agent's record format, `kcat -C -J` output, or bare message objects.\n\
Signatures are verified when PORT_CLIENT_SECRET is set and --no-verify is not given.\n\nExample:\n  \
PORT_CLIENT_SECRET=example-client-secret-0123456789abcdef port-agent dry-run --input examples/recorded-topic.jsonl --mapping examples/mapping.json"
    )]
    DryRun {
        /// Recorded topic (JSON lines).
        #[arg(long, value_name = "FILE")]
        input: PathBuf,
        /// Mapping file (default: CONTROL_THE_PAYLOAD_CONFIG_PATH).
        #[arg(long, value_name = "FILE")]
        mapping: Option<PathBuf>,
        /// Topic for bare message lines (default: the runs topic).
        #[arg(long, value_name = "TOPIC")]
        topic: Option<String>,
        #[command(flatten)]
        assume: Assume,
        /// Do not verify signatures, even with PORT_CLIENT_SECRET set.
        #[arg(long)]
        no_verify: bool,
        /// Output format: text, or one JSON object per line.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Copy the topics into a recorded-topic file (commits nothing).
    #[command(
        after_help = "Uses the Kafka settings of `run` with a throwaway consumer group; stops at --max, \
after --timeout seconds without a message, or on Ctrl-C.\n\nExample:\n  \
port-agent record --out runs.jsonl --from-beginning --max 500 --timeout 10"
    )]
    Record {
        /// Output file (JSON lines, the agent's record format).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Stop after N messages.
        #[arg(long, value_name = "N")]
        max: Option<u64>,
        /// Start at the beginning of the topics (default: only new messages).
        #[arg(long)]
        from_beginning: bool,
        /// Stop after S seconds without a new message.
        #[arg(long, value_name = "S")]
        timeout: Option<f64>,
    },
}

#[derive(Args, Clone)]
struct Assume {
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

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
}

fn parse_env_pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected K=V, got '{s}'"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(EVAL_THREAD_STACK)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Run on a worker thread: jq evaluation relies on its larger stack.
    let result = runtime.block_on(async { tokio::spawn(dispatch(cli)).await });
    match result {
        Ok(Ok(code)) => code,
        Ok(Err(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(e) => {
            eprintln!("error: the command stopped unexpectedly: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli) -> Result<ExitCode> {
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => run().await,
        Command::Check {
            mapping,
            messages,
            topic,
        } => check(mapping, messages, topic),
        Command::Render {
            mapping,
            message,
            topic,
            env,
            assume,
            no_verify,
            format,
        } => render(&mapping, &message, topic, env, assume, no_verify, format).await,
        Command::DryRun {
            input,
            mapping,
            topic,
            assume,
            no_verify,
            format,
        } => dry_run(&input, mapping, topic, assume, no_verify, format).await,
        Command::Record {
            out,
            max,
            from_beginning,
            timeout,
        } => record(&out, max, from_beginning, timeout).await,
    }
}

fn offline_settings() -> Result<Settings> {
    let settings = Settings::from_env(Requirement::Offline).map_err(|e| anyhow!("{e}"))?;
    init_logging(&settings.log_filter, settings.log_format, LogTarget::Stderr);
    Ok(settings)
}

fn mapping_path(given: Option<PathBuf>, settings: &Settings) -> PathBuf {
    given.unwrap_or_else(|| PathBuf::from(&settings.mapping_path))
}

fn load_mappings(path: &Path) -> Result<MappingSet> {
    let set = MappingSet::load(path).map_err(|e| anyhow!("{}", describe_mapping_error(path, &e)))?;
    for m in &set.mappings {
        if !m.unknown_keys.is_empty() {
            tracing::warn!(mapping = m.index, keys = ?m.unknown_keys, "unknown mapping keys are ignored");
        }
    }
    Ok(set)
}

fn describe_mapping_error(path: &Path, e: &MappingError) -> String {
    port_agent::mapping::reload::describe_error(path, e)
}

/// The Port API client the settings describe.
fn port_client(settings: &Settings, idle_connections: usize) -> Result<PortClient> {
    let http = ClientOptions {
        timeout: settings.port_timeout,
        verify_tls: true,
        ca_bundle: settings.ca_bundle.clone(),
        pool_idle_per_host: idle_connections,
    };
    Ok(PortClient::new(
        &settings.port_api_base_url,
        &settings.client_id,
        settings.client_secret.clone(),
        &http,
        settings.port_max_attempts,
    )?)
}

async fn run() -> Result<ExitCode> {
    let settings = Settings::from_env(Requirement::Run).map_err(|e| anyhow!("{e}"))?;
    init_logging(&settings.log_filter, settings.log_format, LogTarget::Stdout);
    for w in settings.warnings() {
        tracing::warn!("{w}");
    }
    let mappings = load_mappings(Path::new(&settings.mapping_path))?;
    // The version in force (the reloader compares new files with it).
    let mapping_sha = std::fs::read(&settings.mapping_path)
        .map(|b| port_agent::mapping::reload::sha256_hex(&b))
        .unwrap_or_default();
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        mappings = mappings.mappings.len(),
        streamer = settings.streamer.as_str(),
        "port-agent starting"
    );
    let health = Health::new("starting: connecting to Port and the message source");
    if settings.http_port != 0 {
        let handle = telemetry::metrics::install().context("cannot set up metrics")?;
        let addr = std::net::SocketAddr::from(([0, 0, 0, 0], settings.http_port));
        let bound = telemetry::server::serve(addr, health.clone(), Some(handle))
            .await
            .with_context(|| format!("AGENT_HTTP_PORT: cannot listen on {addr}"))?;
        tracing::info!(address = %bound, "serving /healthz, /readyz and /metrics");
    }
    let target_http = ClientOptions {
        timeout: settings.webhook_timeout,
        verify_tls: settings.webhook_verify_ssl,
        ca_bundle: settings.ca_bundle.clone(),
        pool_idle_per_host: settings.max_in_flight,
    };
    let port = port_client(&settings, settings.max_in_flight)?;
    let invoker = HttpInvoker::new(&target_http, settings.retry.clone())?.with_limits(
        settings.target_redirects,
        settings.max_response_bytes,
        settings.allowed_targets.clone(),
    );

    let streamer = json!({"settings": {"portAgentStreamerName": settings.streamer.as_str()}});
    if let Err(e) = port.request("PATCH", "/v1/organization", Some(&streamer)).await {
        tracing::warn!(error = %e, "could not record the streamer name on the organization; continuing");
    }
    let config = Config {
        polled: settings.streamer == Streamer::Polling,
        ..Config::from_settings(&settings)
    };
    let pipeline = Arc::new(
        Pipeline::new(
            config,
            Arc::new(mappings),
            JqEnv::from_process(),
            invoker,
            port.clone(),
        )
        .with_guard(Guard::from_settings(&settings)),
    );
    health.watch_reports(pipeline.report_backlog());
    let (trigger, shutdown) = port_agent::shutdown::channel();
    port_agent::shutdown::on_signals(trigger);
    {
        let (health, shutdown) = (health.clone(), shutdown.clone());
        tokio::spawn(async move {
            shutdown.wait().await;
            health.set_stopping();
        });
    }
    if settings.mapping_reload {
        let reloader = port_agent::mapping::reload::Reloader::new(
            PathBuf::from(&settings.mapping_path),
            pipeline.mapping_slot(),
            mapping_sha,
        );
        tokio::spawn(port_agent::mapping::reload::watch(reloader, shutdown.clone()));
    }
    match settings.streamer {
        Streamer::Kafka => {
            let opts = kafka::resolve_options(&settings, &port)
                .await
                .map_err(|e| anyhow!(e))?;
            let engine = kafka::KafkaEngine::new(opts, pipeline).with_health(health);
            engine.run(shutdown).await.context("Kafka consumer failed")?;
        }
        Streamer::Polling => {
            let opts = polling::PollingOptions::from_settings(&settings);
            let engine = polling::PollingEngine::new(port.clone(), opts, pipeline, health);
            if let Err(e) = engine.run(shutdown).await {
                eprintln!("error: {e}");
                return Ok(ExitCode::from(EXIT_GAVE_UP));
            }
        }
    }
    tracing::info!("port-agent stopped");
    Ok(ExitCode::SUCCESS)
}

fn check(mapping: Option<PathBuf>, messages: Option<PathBuf>, topic: Option<String>) -> Result<ExitCode> {
    let settings = offline_settings()?;
    let path = mapping_path(mapping, &settings);
    let mut notes = Vec::new();
    if settings.client_id.is_empty() || settings.client_secret.is_empty() {
        notes.push("PORT_CLIENT_ID/PORT_CLIENT_SECRET are not set: `run` will need them");
    }
    if settings.org_id.is_empty() {
        notes.push("PORT_ORG_ID is not set: `run` will need it");
    }
    for w in settings.warnings() {
        println!("warning: {w}");
    }
    for n in notes {
        println!("note: {n}");
    }
    match MappingSet::load(&path) {
        Ok(set) => {
            println!("{}: {} mapping(s) compiled", path.display(), set.mappings.len());
            let mut not_allowed = 0;
            for m in &set.mappings {
                let fields = m.fields_set();
                println!(
                    "  #{}: enabled: {}; sets: {}",
                    m.index,
                    m.enabled_text(),
                    if fields.is_empty() {
                        "nothing (defaults)".to_string()
                    } else {
                        fields.join(", ")
                    }
                );
                if !m.unknown_keys.is_empty() {
                    println!(
                        "  #{}: warning: unknown keys ignored: {}",
                        m.index,
                        m.unknown_keys.join(", ")
                    );
                }
                if let (Some(list), Some(url)) = (&settings.allowed_targets, m.literal_url()) {
                    let allowed = url::Url::parse(&url).is_ok_and(|u| list.allows(&u));
                    if !allowed {
                        not_allowed += 1;
                        println!(
                            "  #{}: error: url '{url}' is not allowed by AGENT_ALLOWED_TARGETS: its runs would be reported as failed",
                            m.index
                        );
                    }
                }
            }
            let mut failed = false;
            if let Some(file) = &messages {
                failed = check_messages(&set, file, topic.as_deref(), &settings)?;
            }
            Ok(if not_allowed == 0 && !failed {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_PROBLEMS)
            })
        }
        Err(e) => {
            println!("error: {}", describe_mapping_error(&path, &e));
            Ok(ExitCode::from(EXIT_PROBLEMS))
        }
    }
}

/// `check --messages`: print the coverage of `file`; true when a field failed.
fn check_messages(set: &MappingSet, file: &Path, topic: Option<&str>, settings: &Settings) -> Result<bool> {
    let text = std::fs::read_to_string(file).with_context(|| {
        format!(
            "--messages: cannot read {}: give a recorded-topic file (JSON lines)",
            file.display()
        )
    })?;
    let (config, default_topic) = pipeline_config(settings, topic);
    let env = JqEnv::from_process();
    let ctx = port_agent::mapping::EvalCtx {
        env: &env,
        budget: config.budget,
    };
    let secret = config.secret.as_ref().map(|s| s.expose()).unwrap_or("");
    let mut redactor = port_agent::redact::Redactor::new(env.sensitive_values());
    redactor.extend([secret].into_iter().filter(|s| !s.is_empty()));
    let topics = port_agent::coverage::Topics {
        runs: &config.runs_topic,
        change_log: &config.change_log_topic,
    };
    let cov = port_agent::coverage::coverage(set, &text, &topics, &default_topic, &ctx, secret, &redactor);
    println!(
        "{}: {} message(s), {} evaluated, {} malformed line(s)",
        file.display(),
        cov.messages,
        cov.evaluated,
        cov.bad_lines.len()
    );
    for (i, m) in cov.mappings.iter().enumerate() {
        println!("  #{i}: selected by {} message(s)", m.selected);
        for (field, f) in &m.failures {
            println!(
                "  #{i}: field '{field}': {} evaluation(s) failed; first (line {}): {}",
                f.count, f.first_line, f.first_error
            );
        }
    }
    if cov.unmatched.is_empty() {
        println!("  every evaluated message selects a mapping");
    } else {
        println!("  selected by no mapping: {} message(s)", cov.unmatched.len());
        for u in &cov.unmatched {
            println!(
                "    line {}: run {} action {}",
                u.line,
                u.run_id.as_deref().unwrap_or("-"),
                u.action.as_deref().unwrap_or("-")
            );
        }
    }
    for (line, why) in &cov.not_evaluated {
        println!("  line {line}: not evaluated: {why}");
    }
    for b in &cov.bad_lines {
        println!("  line {}: malformed, skipped: {}", b.line, b.reason);
    }
    Ok(cov.has_failures())
}

fn pipeline_config(settings: &Settings, topic_default: Option<&str>) -> (Config, String) {
    let mut config = Config::from_settings(settings);
    if settings.org_id.is_empty() {
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

/// Settings for `render` and `dry-run`: logs go to stderr at `warn` unless
/// `LOG_LEVEL` (or `RUST_LOG`) says otherwise, so the output is the report.
fn quiet_offline_settings() -> Result<Settings> {
    let settings = Settings::from_env(Requirement::Offline).map_err(|e| anyhow!("{e}"))?;
    let chosen = ["LOG_LEVEL", "RUST_LOG"]
        .iter()
        .any(|k| std::env::var(k).is_ok_and(|v| !v.trim().is_empty()));
    let filter = if chosen {
        settings.log_filter.as_str()
    } else {
        "warn"
    };
    init_logging(filter, settings.log_format, LogTarget::Stderr);
    Ok(settings)
}

async fn render(
    mapping: &Path,
    message: &Path,
    topic: Option<String>,
    env: Vec<(String, String)>,
    assume: Assume,
    no_verify: bool,
    format: Format,
) -> Result<ExitCode> {
    let settings = quiet_offline_settings()?;
    let set = load_mappings(mapping)?;
    let text =
        std::fs::read_to_string(message).with_context(|| format!("cannot read {}", message.display()))?;
    let (mut config, topic) = pipeline_config(&settings, topic.as_deref());
    config.fixed_timestamp = assume.timestamp;
    config.skip_signature_check = no_verify;
    let verified = config.secret.is_some() && !no_verify;
    let jq_env = JqEnv::new(std::env::vars().chain(env));
    let selection = {
        let value: Value =
            serde_json::from_str(&text).with_context(|| format!("{} is not JSON", message.display()))?;
        let ctx = port_agent::mapping::EvalCtx {
            env: &jq_env,
            budget: config.budget,
        };
        let mut warnings = Vec::new();
        set.select(&port_agent::mapping::jq::to_val(&value), &ctx, &mut warnings)
    };
    let p = dryrun::pipeline(config, set, jq_env, assume.assume_status, &assume.assume_body)
        .with_guard(Guard::from_settings(&settings));
    let delivery = Delivery {
        topic,
        partition: -1,
        offset: 0,
        key: None,
        payload: text.trim().as_bytes().to_vec(),
    };
    let entry = dryrun::run_one(&p, 1, delivery).await;
    let passed_over: Vec<Value> = selection
        .passed_over
        .iter()
        .map(|p| json!({"index": p.index, "reason": p.reason}))
        .collect();
    if format == Format::Json {
        let j = entry.to_json();
        // The run report: the body of the status PATCH, if one follows.
        let report = entry
            .port_calls
            .iter()
            .rev()
            .find(|c| c["method"] == "PATCH" && !c["path"].as_str().is_some_and(|p| p.ends_with("/response")))
            .map(|c| c["body"].clone())
            .unwrap_or(Value::Null);
        let out = json!({
            "mapping_index": j["mapping_index"],
            "skipped": j["skipped"],
            "passed_over": passed_over,
            "request": j["request"],
            "report": report,
            "port_calls": j["port_calls"],
            "signatures_verified": verified,
        });
        println!("{out}");
    } else {
        if no_verify {
            println!("note: --no-verify: the signature was not verified");
        } else if !verified {
            println!("note: PORT_CLIENT_SECRET is not set: the signature was not verified");
        }
        for p in &selection.passed_over {
            println!("mapping #{} passed over: {}", p.index, p.reason);
        }
        print_entry(&entry);
    }
    Ok(ExitCode::SUCCESS)
}

async fn dry_run(
    input: &Path,
    mapping: Option<PathBuf>,
    topic: Option<String>,
    assume: Assume,
    no_verify: bool,
    format: Format,
) -> Result<ExitCode> {
    let settings = quiet_offline_settings()?;
    let path = mapping_path(mapping, &settings);
    let set = load_mappings(&path)?;
    let text = std::fs::read_to_string(input).with_context(|| format!("cannot read {}", input.display()))?;
    let (mut config, default_topic) = pipeline_config(&settings, topic.as_deref());
    config.fixed_timestamp = assume.timestamp;
    config.skip_signature_check = no_verify;
    let verified = config.secret.is_some() && !no_verify;
    let p = dryrun::pipeline(
        config,
        set,
        JqEnv::from_process(),
        assume.assume_status,
        &assume.assume_body,
    )
    .with_guard(Guard::from_settings(&settings));
    let report = dryrun::dry_run(&p, &text, &default_topic).await;
    let summary = report.summary();
    if format == Format::Json {
        for e in &report.entries {
            println!("{}", e.to_json());
        }
        for b in &report.bad_lines {
            println!(
                "{}",
                json!({"line": b.line, "outcome": "malformed_line", "error": b.reason})
            );
        }
        println!("{}", json!({"summary": summary, "signatures_verified": verified}));
    } else {
        if no_verify {
            println!("note: --no-verify: signatures were not verified\n");
        } else if !verified {
            println!("note: PORT_CLIENT_SECRET is not set: signatures were not verified\n");
        }
        for e in &report.entries {
            print_entry(e);
            println!();
        }
        for b in &report.bad_lines {
            println!("line {}: malformed, skipped: {}\n", b.line, b.reason);
        }
        print_summary(&summary);
    }
    Ok(if report.bad_lines.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_PROBLEMS)
    })
}

async fn record(
    out: &Path,
    max: Option<u64>,
    from_beginning: bool,
    timeout: Option<f64>,
) -> Result<ExitCode> {
    let settings = offline_settings()?;
    if settings.org_id.is_empty() && std::env::var_os("KAFKA_RUNS_TOPIC").is_none() {
        return Err(anyhow!(
            "PORT_ORG_ID: required by record (the topic names derive from it)"
        ));
    }
    let port = port_client(&settings, 1)?;
    let kafka = kafka::resolve_options(&settings, &port)
        .await
        .map_err(|e| anyhow!(e))?;
    let idle_timeout = match timeout {
        Some(t) => Some(std::time::Duration::try_from_secs_f64(t).context("--timeout: expected seconds")?),
        None => None,
    };
    let opts = port_agent::record::RecordOptions {
        max,
        from_beginning,
        idle_timeout,
    };
    let file = std::fs::File::create(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut writer = std::io::BufWriter::new(file);
    let (trigger, shutdown) = port_agent::shutdown::channel();
    port_agent::shutdown::on_signals(trigger);
    let (count, stopped) = port_agent::record::record(&kafka, &opts, &mut writer, shutdown).await?;
    eprintln!(
        "{count} message(s) written to {} (stopped: {stopped:?})",
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn print_entry(e: &Entry) {
    let j = e.to_json();
    let run = e.outcome.run_id.as_deref().unwrap_or("-");
    let kind = j["kind"].as_str().unwrap_or("-");
    println!(
        "line {}  {}[{}]@{}  {} {}",
        e.line, e.delivery.topic, e.delivery.partition, e.delivery.offset, kind, run
    );
    match (&j["skipped"], &j["mapping_index"]) {
        (Value::String(why), _) => println!("  decision: skipped ({why})"),
        (_, Value::Number(n)) => println!("  decision: mapping #{n}"),
        _ => println!("  decision: -"),
    }
    if let Value::String(err) = &j["error"] {
        println!("  error:    {err}");
    }
    for w in &e.outcome.warnings {
        println!("  warning:  {w}");
    }
    if let Some(r) = &e.request {
        println!(
            "  request:  {} {}",
            r["method"].as_str().unwrap_or(""),
            r["url"].as_str().unwrap_or("")
        );
        println!("  headers:  {}", r["headers"]);
        println!("  body:     {}", r["body"]);
    }
    for c in &e.port_calls {
        println!(
            "  port:     {} {} {}",
            c["method"].as_str().unwrap_or(""),
            c["path"].as_str().unwrap_or(""),
            c["body"]
        );
    }
}

fn print_summary(s: &Value) {
    println!(
        "summary: {} message(s), {} malformed line(s)",
        s["messages"], s["malformed_lines"]
    );
    println!("  {:<20} {:>6}", "outcome", "count");
    if let Some(m) = s["by_outcome"].as_object() {
        for (k, v) in m {
            println!("  {k:<20} {v:>6}");
        }
    }
    println!("  {:<20} {:>6}", "mapping", "count");
    if let Some(m) = s["by_mapping"].as_object() {
        for (k, v) in m {
            let name = if k == "none" {
                "none".to_string()
            } else {
                format!("#{k}")
            };
            println!("  {name:<20} {v:>6}");
        }
    }
    if let Some(errors) = s["errors"].as_array() {
        if !errors.is_empty() {
            println!("  messages with errors:");
            for e in errors {
                println!("    line {}: {}", e["line"], e["errors"]);
            }
        }
    }
}
