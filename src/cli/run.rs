//! `port-agent run`: the only place that wires the agent's components
//! together: settings → telemetry, the Port client, the target invoker, the
//! pipeline, the mapping reloader, and the source the settings name.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, Context};

use super::{load_mappings, port_client, Error, Exit, Result, LOG_TARGET};
use crate::http::ClientOptions;
use crate::invoke::HttpInvoker;
use crate::mapping::JqEnv;
use crate::pipeline::{Config, Guardrails, Pipeline};
use crate::port::PortClient;
use crate::settings::{Requirement, Settings, Streamer};
use crate::shutdown::Shutdown;
use crate::source::{self, kafka, polling};
use crate::telemetry::server::Health;
use crate::telemetry::{self, init_logging, LogTarget};

/// The agent's pipeline, as `run` wires it.
type Agent = Pipeline<HttpInvoker, PortClient>;

/// Run the agent until a signal stops it.
pub async fn command() -> Result {
    let settings = Settings::from_env(Requirement::Run).map_err(|e| anyhow!("{e}"))?;
    init_logging(
        &settings.telemetry.log_filter,
        settings.telemetry.log_format,
        LogTarget::Stdout,
    );
    for w in settings.warnings() {
        tracing::warn!(target: LOG_TARGET, "{w}");
    }
    let mappings = load_mappings(Path::new(&settings.mapping.path))?;
    // The version in force (the reloader compares new files with it).
    let mapping_sha = std::fs::read(&settings.mapping.path)
        .map(|b| crate::mapping::reload::sha256_hex(&b))
        .unwrap_or_default();
    tracing::info!(target: LOG_TARGET,
        version = env!("CARGO_PKG_VERSION"),
        mappings = mappings.mappings.len(),
        streamer = settings.streamer.as_str(),
        "port-agent starting"
    );
    let health = Health::new("starting: connecting to Port and the message source");
    serve_telemetry(&settings, &health, &mappings, &mapping_sha).await?;
    let port = port_client(&settings, settings.limits.max_in_flight)?;
    authenticate(&settings, &port).await?;
    health.watch(port.auth_status());
    tokio::spawn(crate::port::auth::log_refusals(port.auth_status()));
    let pipeline = Arc::new(agent(&settings, mappings, port.clone())?);
    health.watch(pipeline.report_backlog());
    let last_words = crate::shutdown::LastWords::default();
    let shutdown = shutdown_on_signals(&health, &last_words);
    if settings.mapping.reload {
        let reloader = crate::mapping::reload::Reloader::new(
            PathBuf::from(&settings.mapping.path),
            pipeline.mapping_slot(),
            mapping_sha,
        );
        tokio::spawn(crate::mapping::reload::watch(reloader, shutdown.clone()));
    }
    consume(&settings, port, pipeline, health, shutdown, &last_words).await?;
    tracing::info!(target: LOG_TARGET, "port-agent stopped");
    Ok(Exit::Success)
}

/// A token first: credentials Port refuses (401 or 403) can never heal, as
/// settings are read once, so the agent stops (exit 3) with one line that
/// names the base URL and the region. Any other failure is left to the
/// calls that follow (they retry); then the streamer name is recorded on
/// the organization (a warning when that fails).
async fn authenticate(settings: &Settings, port: &PortClient) -> anyhow::Result<()> {
    match port.authenticate().await {
        Err(Ok(refusal)) => return Err(anyhow!(refusal.startup_line())),
        Err(Err(e)) => {
            tracing::warn!(target: LOG_TARGET, error = %e,
                "could not get a token from Port; continuing (the calls that follow retry), the streamer name is not recorded");
        }
        Ok(()) => {
            if let Err(e) = port.record_streamer(settings.streamer.as_str()).await {
                tracing::warn!(target: LOG_TARGET, error = %e, "could not record the streamer name on the organization; continuing");
            }
        }
    }
    Ok(())
}

/// `/healthz`, `/readyz` and `/metrics` on `AGENT_HTTP_PORT` (0: none).
async fn serve_telemetry(
    settings: &Settings,
    health: &Arc<Health>,
    mappings: &crate::mapping::MappingSet,
    mapping_sha: &str,
) -> anyhow::Result<()> {
    if settings.telemetry.http_port == 0 {
        return Ok(());
    }
    let polling = settings.streamer == Streamer::Polling;
    let known = telemetry::metrics::Known {
        polling,
        topics: if polling {
            vec![settings.kafka.runs_topic.as_str()]
        } else {
            vec![
                settings.kafka.runs_topic.as_str(),
                settings.kafka.change_log_topic.as_str(),
            ]
        },
        mapping_fields: &mappings.error_fields(),
        mapping_sha,
        outcomes: &crate::outcome::Outcome::NAMES,
        port_calls: &crate::port::Endpoint::labels(),
    };
    let handle = telemetry::metrics::install(&known).context("cannot set up metrics")?;
    let addr = std::net::SocketAddr::from(([0, 0, 0, 0], settings.telemetry.http_port));
    let bound = telemetry::server::serve(addr, health.clone(), Some(handle))
        .await
        .with_context(|| format!("AGENT_HTTP_PORT: cannot listen on {addr}"))?;
    tracing::info!(target: LOG_TARGET, address = %bound, "serving /healthz, /readyz and /metrics");
    Ok(())
}

/// The pipeline: the target invoker and Port as its edges.
fn agent(
    settings: &Settings,
    mappings: crate::mapping::MappingSet,
    port: PortClient,
) -> anyhow::Result<Agent> {
    let target_http = ClientOptions {
        timeout: settings.target.timeout,
        verify_tls: settings.target.verify_ssl,
        ca_bundle: settings.ca_bundle.clone(),
        pool_idle_per_host: settings.limits.max_in_flight,
        proxies: settings.proxies.clone(),
    };
    let invoker = HttpInvoker::new(&target_http, settings.target.retry.clone())?.with_limits(
        settings.target.redirects,
        settings.target.max_response_bytes,
        settings.target.allowed_targets.clone(),
    );
    let config = Config::from_settings(settings);
    crate::mapping::jq::set_max_bytes(settings.limits.jq_max_bytes);
    Ok(Pipeline::new(
        config,
        Arc::new(mappings),
        JqEnv::new(crate::settings::process_env()),
        invoker,
        port,
    )
    .with_guardrails(Guardrails::from_settings(settings)))
}

/// A shutdown that SIGTERM or SIGINT triggers; `/readyz` says "stopping"
/// from then on. A second signal runs `last_words` (bounded) and exits 130.
fn shutdown_on_signals(health: &Arc<Health>, last_words: &crate::shutdown::LastWords) -> Shutdown {
    let (trigger, shutdown) = crate::shutdown::channel();
    crate::shutdown::on_signals(trigger, last_words.clone());
    let (health, stopping) = (health.clone(), shutdown.clone());
    tokio::spawn(async move {
        stopping.wait().await;
        health.set_stopping();
    });
    shutdown
}

/// Consume from the source the settings name until `shutdown`.
async fn consume(
    settings: &Settings,
    port: PortClient,
    pipeline: Arc<Agent>,
    health: Arc<Health>,
    shutdown: Shutdown,
    last_words: &crate::shutdown::LastWords,
) -> Result<()> {
    match settings.streamer {
        Streamer::Kafka => {
            let opts = kafka::resolve_options(settings, &port)
                .await
                .map_err(resolve_error)?;
            let consumer = kafka::KafkaSource::connect(&opts, Arc::default(), health, shutdown.clone())
                .context("Kafka consumer failed")?;
            let Ok(()) = source::run(consumer, pipeline, opts.limits.clone(), shutdown).await;
        }
        Streamer::Polling => {
            let opts = polling::PollingOptions::from_settings(settings);
            let claims = polling::PollingSource::new(port, opts.clone(), health);
            // A second signal exits at once: the runs Port handed us that
            // are still in flight are failed first (Kafka redelivers what
            // was not committed, so it needs nothing of the kind).
            let in_flight = claims.in_flight();
            last_words.set(move || {
                let in_flight = in_flight.clone();
                async move {
                    let summary = crate::report::FailureSummary::SecondSignal.to_string();
                    in_flight.fail_all(&summary, polling::SIGNAL_REPORT_TIMEOUT).await;
                }
            });
            source::run(claims, pipeline, settings.limits.clone(), shutdown).await?;
        }
    }
    Ok(())
}

/// Port failing to hand out the Kafka credentials is not a settings problem.
pub(super) fn resolve_error(e: kafka::ResolveError) -> Error {
    match e {
        kafka::ResolveError::Credentials(_) => Error::Unavailable(e.into()),
        _ => Error::Config(e.into()),
    }
}
