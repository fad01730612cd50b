//! What operators see: logs (here), [`metrics`] and the health/metrics
//! HTTP [`server`].
//!
//! Logging is `tracing` with JSON lines (default when stdout is not a
//! terminal) or human-readable text, filtered by `RUST_LOG` / `LOG_LEVEL`.

pub mod metrics;
pub mod server;

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::settings::LogFormat;

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTarget {
    /// The running agent logs to stdout (container convention).
    Stdout,
    /// Offline commands keep stdout for their output.
    Stderr,
}

/// Install the global subscriber. Safe to call once per process.
pub fn init_logging(filter: &str, format: Option<LogFormat>, target: LogTarget) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let terminal = match target {
        LogTarget::Stdout => std::io::stdout().is_terminal(),
        LogTarget::Stderr => std::io::stderr().is_terminal(),
    };
    let format = format.unwrap_or(if terminal {
        LogFormat::Text
    } else {
        LogFormat::Json
    });
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let result = match (format, target) {
        (LogFormat::Json, LogTarget::Stdout) => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        // The offline commands: every span, so that a dry-run line keeps
        // its input line (the `dry_run` span) inside the pipeline's own.
        (LogFormat::Json, LogTarget::Stderr) => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .with_writer(std::io::stderr)
            .try_init(),
        (LogFormat::Text, LogTarget::Stdout) => builder.with_ansi(terminal).try_init(),
        (LogFormat::Text, LogTarget::Stderr) => builder
            .with_ansi(terminal)
            .with_writer(std::io::stderr)
            .try_init(),
    };
    // A second initialisation (tests) keeps the first subscriber.
    drop(result);
}
