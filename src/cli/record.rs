//! `port-agent record`: copy the topics into a recorded-topic file (the
//! agent's own format, [`crate::cli::recorded`]) for dry-run and replay.
//! It uses a throwaway consumer group and commits nothing, so the running
//! agent's offsets are untouched.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use clap::Args;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, OwnedMessage};
use rdkafka::Message;

use super::recorded::to_record_line;
use super::Exit;
use crate::delivery::{Delivery, Trust};
use crate::shutdown::Shutdown;
use crate::source::kafka::KafkaOptions;

/// The arguments of `record`.
#[derive(Args)]
pub struct RecordArgs {
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
}

/// Run `record`.
pub async fn command(args: RecordArgs) -> super::Result {
    let settings = super::offline_settings()?;
    if settings.port.org_id.is_empty() && !settings.kafka.runs_topic_set {
        return Err(anyhow!("PORT_ORG_ID: required by record (the topic names derive from it)").into());
    }
    let port = super::port_client(&settings, 1)?;
    let kafka = crate::source::kafka::resolve_options(&settings, &port)
        .await
        .map_err(super::run::resolve_error)?;
    let idle_timeout = match args.timeout {
        Some(t) => Some(Duration::try_from_secs_f64(t).context("--timeout: expected seconds")?),
        None => None,
    };
    let opts = RecordOptions {
        max: args.max,
        from_beginning: args.from_beginning,
        idle_timeout,
    };
    let out = &args.out;
    let file = std::fs::File::create(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut writer = std::io::BufWriter::new(file);
    let (trigger, shutdown) = crate::shutdown::channel();
    crate::shutdown::on_signals(trigger, crate::shutdown::LastWords::default());
    let (count, stopped) = record(&kafka, &opts, &mut writer, shutdown).await?;
    eprintln!(
        "{count} message(s) written to {} (stopped: {stopped:?})",
        out.display()
    );
    Ok(Exit::Success)
}

/// What to record.
#[derive(Debug, Clone)]
pub struct RecordOptions {
    /// Stop after this many messages.
    pub max: Option<u64>,
    /// Start at the beginning of the topics instead of their end.
    pub from_beginning: bool,
    /// Stop after this long without a new message.
    pub idle_timeout: Option<Duration>,
}

/// Why recording stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// `--max` reached.
    Max,
    /// `--timeout` without messages.
    Idle,
    /// A signal.
    Signal,
}

/// Record messages from the topics in `kafka` into `out`; returns how many
/// and why it stopped.
pub async fn record(
    kafka: &KafkaOptions,
    opts: &RecordOptions,
    out: &mut (dyn Write + Send),
    shutdown: Shutdown,
) -> anyhow::Result<(u64, Stopped)> {
    let consumer = throwaway_consumer(kafka, opts)?;
    let topics = kafka.topics();
    consumer.subscribe(&topics)?;
    let progress = std::io::stderr().is_terminal();
    let mut count = 0u64;
    let mut last_shown = Instant::now();
    let stopped = loop {
        if opts.max.is_some_and(|m| count >= m) {
            break Stopped::Max;
        }
        let idle = async {
            match opts.idle_timeout {
                Some(t) => tokio::time::sleep(t).await,
                None => std::future::pending().await,
            }
        };
        let msg = tokio::select! {
            _ = shutdown.wait() => break Stopped::Signal,
            _ = idle => break Stopped::Idle,
            m = consumer.recv() => m,
        };
        let msg = match msg {
            Ok(m) => m.detach(),
            Err(e) => {
                tracing::warn!(target: "port_agent::record", error = %e, "Kafka error while recording; retrying");
                continue;
            }
        };
        writeln!(out, "{}", record_line(&msg))?;
        count += 1;
        if progress && last_shown.elapsed() > Duration::from_millis(200) {
            eprint!("\rrecorded {count} message(s)");
            last_shown = Instant::now();
        }
    };
    out.flush()?;
    if progress {
        eprintln!("\rrecorded {count} message(s)");
    }
    // Nothing was committed; closing leaves the throwaway group.
    let _ = tokio::task::spawn_blocking(move || drop(consumer)).await;
    Ok((count, stopped))
}

/// A consumer in a group of its own that commits nothing, at the start or
/// the end of the topics.
fn throwaway_consumer(kafka: &KafkaOptions, opts: &RecordOptions) -> anyhow::Result<StreamConsumer> {
    let mut config = kafka.client_config();
    let group = format!("port-agent-record-{}-{}", std::process::id(), now_millis());
    config
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set(
            "auto.offset.reset",
            if opts.from_beginning { "earliest" } else { "latest" },
        )
        .set(
            "session.timeout.ms",
            kafka.settings.session_timeout_ms.to_string(),
        );
    let consumer: StreamConsumer = config.create()?;
    tracing::info!(target: "port_agent::record", group = %group, "recording with a throwaway consumer group; nothing is committed");
    Ok(consumer)
}

/// One message in the record format.
fn record_line(msg: &OwnedMessage) -> String {
    let delivery = Delivery {
        topic: msg.topic().to_string(),
        partition: msg.partition(),
        offset: msg.offset(),
        key: msg.key().map(<[u8]>::to_vec),
        payload: msg.payload().map(<[u8]>::to_vec).unwrap_or_default(),
        trust: Trust::Signed,
    };
    let headers: Vec<(String, String)> = msg
        .headers()
        .map(|h| {
            h.iter()
                .map(|x| {
                    (
                        x.key.to_string(),
                        String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    to_record_line(&delivery, msg.timestamp().to_millis(), &headers)
}

fn now_millis() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}
