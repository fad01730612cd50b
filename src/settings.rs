//! Environment → [`Settings`].
//!
//! The variable names and defaults are the Python agent's (SPEC §1), so an
//! existing deployment keeps working unchanged. `envy` collects the raw
//! strings; the validation here turns each into a typed value and, on failure,
//! produces one line that names the variable and says what was expected —
//! without echoing the value of a secret.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use crate::guard::{AllowList, RedirectPolicy};

/// A value that must never be printed: `Debug` and `Display` show `***`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wrap a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The secret itself, for the few places that need it (HMAC, AES, auth).
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// True when no value was given.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Which source feeds the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Streamer {
    /// Port's Kafka topics (default).
    Kafka,
    /// Port's HTTP claim API.
    Polling,
}

impl Streamer {
    /// The name Port knows the streamer by (`portAgentStreamerName`).
    pub fn as_str(self) -> &'static str {
        match self {
            Streamer::Kafka => "KAFKA",
            Streamer::Polling => "POLLING",
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line (default when stdout is not a terminal).
    Json,
    /// Human-readable lines.
    Text,
}

/// Retry policy for target requests (SPEC §8).
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in total, the first one included.
    pub max_attempts: u32,
    /// No new attempt starts after this much time since the first.
    pub max_elapsed: Duration,
    /// First backoff step; doubles each attempt (full jitter).
    pub initial_backoff: Duration,
    /// Cap of one backoff step.
    pub max_backoff: Duration,
    /// Response statuses that are retried.
    pub retry_statuses: Vec<u16>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            max_elapsed: Duration::from_secs(60),
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            retry_statuses: vec![429, 502, 503, 504],
        }
    }
}

/// Every setting of the agent, typed and validated.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `PORT_ORG_ID` (empty only for commands that do not need it).
    pub org_id: String,
    /// `PORT_CLIENT_ID`.
    pub client_id: String,
    /// `PORT_CLIENT_SECRET`: API credential, HMAC key and AES key.
    pub client_secret: Secret,
    /// `PORT_API_BASE_URL` without a trailing `/`.
    pub port_api_base_url: String,
    /// `STREAMER_NAME`.
    pub streamer: Streamer,
    /// `KAFKA_CONSUMER_GROUP_ID`.
    pub kafka_group_id: String,
    /// `KAFKA_CONSUMER_SECURITY_PROTOCOL`.
    pub kafka_security_protocol: String,
    /// `KAFKA_CONSUMER_AUTHENTICATION_MECHANISM` (`None` for `none`).
    pub kafka_sasl_mechanism: Option<String>,
    /// `KAFKA_CONSUMER_SESSION_TIMEOUT_MS`.
    pub kafka_session_timeout_ms: u32,
    /// `KAFKA_CONSUMER_MAX_POLL_INTERVAL_MS` (`max.poll.interval.ms`).
    pub kafka_max_poll_interval_ms: u32,
    /// `KAFKA_CONSUMER_AUTO_OFFSET_RESET`.
    pub kafka_auto_offset_reset: String,
    /// `KAFKA_RUNS_TOPIC`.
    pub runs_topic: String,
    /// `KAFKA_RUNS_TOPIC` was set (else the name derives from the org id).
    pub runs_topic_set: bool,
    /// `KAFKA_CHANGE_LOG_TOPIC`.
    pub change_log_topic: String,
    /// `USING_LOCAL_PORT_INSTANCE`.
    pub using_local_port_instance: bool,
    /// `KAFKA_CONSUMER_BOOTSTRAP_SERVERS`.
    pub kafka_bootstrap_servers: String,
    /// `KAFKA_CONSUMER_BROKERS` (explicit brokers: skip `/v1/kafka-credentials`).
    pub kafka_brokers: Option<String>,
    /// `KAFKA_CONSUMER_USERNAME`.
    pub kafka_username: Option<String>,
    /// `KAFKA_CONSUMER_PASSWORD`.
    pub kafka_password: Option<Secret>,
    /// `CONTROL_THE_PAYLOAD_CONFIG_PATH`.
    pub mapping_path: String,
    /// `WEBHOOK_INVOKER_TIMEOUT`, per target request.
    pub webhook_timeout: Duration,
    /// `WEBHOOK_VERIFY_SSL`.
    pub webhook_verify_ssl: bool,
    /// `DETAILED_LOGGING`.
    pub detailed_logging: bool,
    /// `RUST_LOG` when set, else `LOG_LEVEL`.
    pub log_filter: String,
    /// `RUST_LOG` or `LOG_LEVEL` was set (the quiet offline commands keep
    /// their own level otherwise).
    pub log_filter_chosen: bool,
    /// `AGENT_LOG_FORMAT`; `None` means "json unless stdout is a terminal".
    pub log_format: Option<LogFormat>,
    /// `SSL_CERT_FILE` or `REQUESTS_CA_BUNDLE`: extra trusted CA certificates.
    pub ca_bundle: Option<String>,
    /// `POLLING_INTERVAL_SECONDS`.
    pub polling_interval: Duration,
    /// `POLLING_RUNS_BATCH_SIZE`.
    pub polling_batch_size: u32,
    /// `POLLING_INITIAL_BACKOFF_SECONDS`.
    pub polling_initial_backoff: Duration,
    /// `POLLING_MAX_BACKOFF_SECONDS`.
    pub polling_max_backoff: Duration,
    /// `POLLING_BACKOFF_FACTOR`.
    pub polling_backoff_factor: f64,
    /// `POLLING_BACKOFF_JITTER_FACTOR`.
    pub polling_backoff_jitter: f64,
    /// `POLLING_MAX_FAILURE_DURATION_SECONDS`.
    pub polling_max_failure: Duration,
    /// `AGENT_MAX_IN_FLIGHT`.
    pub max_in_flight: usize,
    /// `AGENT_HTTP_PORT` (0 turns the server off).
    pub http_port: u16,
    /// `AGENT_RETRY_*`.
    pub retry: RetryPolicy,
    /// `AGENT_PORT_TIMEOUT_SECONDS`: timeout of one Port API call.
    pub port_timeout: Duration,
    /// `AGENT_PORT_RETRY_MAX_ATTEMPTS`: attempts per Port API call.
    pub port_max_attempts: u32,
    /// `AGENT_RUN_LOGS`: post run logs to Port.
    pub run_logs: bool,
    /// `AGENT_MAPPING_RELOAD`: reload the mapping file when it changes and on
    /// SIGHUP.
    pub mapping_reload: bool,
    /// `AGENT_IDEMPOTENCY_HEADERS`: add `X-Port-Run-Id` and `Idempotency-Key`
    /// to every target request.
    pub idempotency_headers: bool,
    /// `AGENT_WF_UNMATCHED_FAIL`: report FAILED for unmatched node runs.
    pub wf_unmatched_fail: bool,
    /// `AGENT_DLQ_TOPIC`.
    pub dlq_topic: Option<String>,
    /// `AGENT_DRAIN_TIMEOUT_SECONDS`.
    pub drain_timeout: Duration,
    /// `AGENT_JQ_TIMEOUT_MS`: wall-clock bound of one jq evaluation.
    pub jq_timeout: Duration,
    /// `AGENT_TARGET_REDIRECTS`: which redirects of a target are followed.
    pub target_redirects: RedirectPolicy,
    /// `AGENT_MAX_RESPONSE_BYTES`: most bytes of a target's answer read.
    pub max_response_bytes: usize,
    /// `AGENT_ALLOWED_TARGETS`: where target requests may go (`None`: anywhere).
    pub allowed_targets: Option<AllowList>,
    /// `AGENT_MAX_MESSAGE_AGE_SECONDS`: older signed messages are skipped.
    pub max_message_age: Option<Duration>,
}

/// A setting that is missing or cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{variable}: {problem}")]
pub struct SettingsError {
    /// The environment variable.
    pub variable: &'static str,
    /// What is wrong and what is expected.
    pub problem: String,
}

/// Raw strings as found in the environment; `envy` matches them by name.
#[derive(Deserialize, Default)]
struct Raw {
    port_org_id: Option<String>,
    port_client_id: Option<String>,
    port_client_secret: Option<String>,
    port_api_base_url: Option<String>,
    streamer_name: Option<String>,
    kafka_consumer_group_id: Option<String>,
    kafka_consumer_security_protocol: Option<String>,
    kafka_consumer_authentication_mechanism: Option<String>,
    kafka_consumer_session_timeout_ms: Option<String>,
    kafka_consumer_max_poll_interval_ms: Option<String>,
    kafka_consumer_auto_offset_reset: Option<String>,
    kafka_runs_topic: Option<String>,
    kafka_change_log_topic: Option<String>,
    using_local_port_instance: Option<String>,
    kafka_consumer_bootstrap_servers: Option<String>,
    kafka_consumer_brokers: Option<String>,
    kafka_consumer_username: Option<String>,
    kafka_consumer_password: Option<String>,
    control_the_payload_config_path: Option<String>,
    webhook_invoker_timeout: Option<String>,
    webhook_verify_ssl: Option<String>,
    detailed_logging: Option<String>,
    log_level: Option<String>,
    rust_log: Option<String>,
    ssl_cert_file: Option<String>,
    requests_ca_bundle: Option<String>,
    polling_interval_seconds: Option<String>,
    polling_runs_batch_size: Option<String>,
    polling_initial_backoff_seconds: Option<String>,
    polling_max_backoff_seconds: Option<String>,
    polling_backoff_factor: Option<String>,
    polling_backoff_jitter_factor: Option<String>,
    polling_max_failure_duration_seconds: Option<String>,
    agent_max_in_flight: Option<String>,
    agent_http_port: Option<String>,
    agent_retry_max_attempts: Option<String>,
    agent_retry_max_elapsed_seconds: Option<String>,
    agent_retry_initial_backoff_ms: Option<String>,
    agent_retry_max_backoff_ms: Option<String>,
    agent_retry_statuses: Option<String>,
    agent_port_timeout_seconds: Option<String>,
    agent_port_retry_max_attempts: Option<String>,
    agent_run_logs: Option<String>,
    agent_idempotency_headers: Option<String>,
    agent_mapping_reload: Option<String>,
    agent_wf_unmatched_fail: Option<String>,
    agent_dlq_topic: Option<String>,
    agent_drain_timeout_seconds: Option<String>,
    agent_log_format: Option<String>,
    agent_jq_timeout_ms: Option<String>,
    agent_target_redirects: Option<String>,
    agent_max_response_bytes: Option<String>,
    agent_allowed_targets: Option<String>,
    agent_max_message_age_seconds: Option<String>,
}

/// How strict loading is: `run` needs credentials, `check`/`dry-run` do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement {
    /// Everything the running agent needs must be present.
    Run,
    /// Credentials and org id may be missing (offline commands).
    Offline,
}

/// Parse the compat boolean spelling: `true/false/1/0/yes/no/on/off/t/f/y/n`.
pub fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" | "t" | "y" => Some(true),
        "false" | "0" | "no" | "off" | "f" | "n" => Some(false),
        _ => None,
    }
}

fn err(variable: &'static str, problem: impl Into<String>) -> SettingsError {
    SettingsError {
        variable,
        problem: problem.into(),
    }
}

/// Treat an empty string like an unset variable.
fn present(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

fn boolean(var: &'static str, value: Option<String>, default: bool) -> Result<bool, SettingsError> {
    match present(value) {
        None => Ok(default),
        Some(v) => parse_bool(&v).ok_or_else(|| {
            err(
                var,
                format!("expected a boolean (true/false, yes/no, on/off, 1/0), got '{v}'"),
            )
        }),
    }
}

fn number<T: std::str::FromStr>(
    var: &'static str,
    value: Option<String>,
    default: T,
    what: &str,
) -> Result<T, SettingsError> {
    match present(value) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse::<T>()
            .map_err(|_| err(var, format!("expected {what}, got '{v}'"))),
    }
}

fn seconds(var: &'static str, value: Option<String>, default: f64) -> Result<Duration, SettingsError> {
    let s: f64 = number(var, value, default, "a number of seconds")?;
    Duration::try_from_secs_f64(s)
        .map_err(|_| err(var, format!("expected a non-negative number of seconds, got {s}")))
}

/// The process environment, for `env.X` in jq expressions (settings are
/// the only module that reads the environment).
pub fn process_env() -> impl Iterator<Item = (String, String)> {
    std::env::vars()
}

impl Settings {
    /// Read the process environment.
    pub fn from_env(req: Requirement) -> Result<Settings, SettingsError> {
        Self::from_iter(std::env::vars(), req)
    }

    /// Read settings from explicit pairs (tests, `--env`).
    pub fn from_iter(
        vars: impl IntoIterator<Item = (String, String)>,
        req: Requirement,
    ) -> Result<Settings, SettingsError> {
        // Only our own names are passed to envy, so unrelated variables can
        // never produce an error.
        let vars: HashMap<String, String> = vars.into_iter().collect();
        let raw: Raw = envy::from_iter(vars).map_err(|e| err("environment", e.to_string()))?;
        Self::from_raw(raw, req)
    }

    fn from_raw(r: Raw, req: Requirement) -> Result<Settings, SettingsError> {
        let required = |var: &'static str, v: Option<String>| -> Result<String, SettingsError> {
            match present(v) {
                Some(v) => Ok(v),
                None if req == Requirement::Offline => Ok(String::new()),
                None => Err(err(var, "required, but not set")),
            }
        };
        let org_id = required("PORT_ORG_ID", r.port_org_id)?;
        let client_id = required("PORT_CLIENT_ID", r.port_client_id)?;
        let client_secret = Secret::new(required("PORT_CLIENT_SECRET", r.port_client_secret)?);

        let base = present(r.port_api_base_url).unwrap_or_else(|| "https://api.getport.io".into());
        let base = base.trim().trim_end_matches('/').to_string();
        if url::Url::parse(&base).is_err() || !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(err(
                "PORT_API_BASE_URL",
                format!("expected an http(s) URL, got '{base}'"),
            ));
        }

        let streamer = match present(r.streamer_name).as_deref().map(str::trim) {
            None => Streamer::Kafka,
            Some(s) if s.eq_ignore_ascii_case("KAFKA") => Streamer::Kafka,
            Some(s) if s.eq_ignore_ascii_case("POLLING") => Streamer::Polling,
            Some(s) => {
                return Err(err(
                    "STREAMER_NAME",
                    format!("expected KAFKA or POLLING, got '{s}'"),
                ))
            }
        };

        let kafka_group_id = present(r.kafka_consumer_group_id).unwrap_or_default();
        if req == Requirement::Run && streamer == Streamer::Kafka && kafka_group_id.is_empty() {
            return Err(err(
                "KAFKA_CONSUMER_GROUP_ID",
                "required when STREAMER_NAME is KAFKA (Port expects '<PORT_ORG_ID>.<name>')",
            ));
        }

        let auto_offset_reset = present(r.kafka_consumer_auto_offset_reset)
            .unwrap_or_else(|| "earliest".into())
            .trim()
            .to_ascii_lowercase();
        if !matches!(
            auto_offset_reset.as_str(),
            "earliest" | "latest" | "smallest" | "largest" | "beginning" | "end" | "error"
        ) {
            return Err(err(
                "KAFKA_CONSUMER_AUTO_OFFSET_RESET",
                format!("expected earliest, latest, smallest or largest, got '{auto_offset_reset}'"),
            ));
        }

        let sasl = present(r.kafka_consumer_authentication_mechanism)
            .map(|m| m.trim().to_string())
            .filter(|m| !m.eq_ignore_ascii_case("none"));

        let log_format = match present(r.agent_log_format).as_deref().map(str::trim) {
            None => None,
            Some(f) if f.eq_ignore_ascii_case("json") => Some(LogFormat::Json),
            Some(f) if f.eq_ignore_ascii_case("text") => Some(LogFormat::Text),
            Some(f) => {
                return Err(err(
                    "AGENT_LOG_FORMAT",
                    format!("expected json or text, got '{f}'"),
                ))
            }
        };

        let log_filter_chosen =
            present(r.rust_log.clone()).is_some() || present(r.log_level.clone()).is_some();
        let log_filter = match present(r.rust_log) {
            Some(f) => f,
            None => present(r.log_level)
                .unwrap_or_else(|| "INFO".into())
                .trim()
                .to_ascii_lowercase(),
        };
        if tracing_subscriber::EnvFilter::try_new(&log_filter).is_err() {
            return Err(err(
                "LOG_LEVEL",
                format!("expected a level such as INFO or DEBUG, got '{log_filter}'"),
            ));
        }

        let defaults = RetryPolicy::default();
        let retry_statuses = match present(r.agent_retry_statuses) {
            None => defaults.retry_statuses.clone(),
            Some(list) => list
                .split(',')
                .map(|s| s.trim().parse::<u16>().ok().filter(|c| (100..600).contains(c)))
                .collect::<Option<Vec<u16>>>()
                .ok_or_else(|| {
                    err(
                        "AGENT_RETRY_STATUSES",
                        format!("expected a comma-separated list of HTTP statuses, got '{list}'"),
                    )
                })?,
        };
        let retry = RetryPolicy {
            max_attempts: number(
                "AGENT_RETRY_MAX_ATTEMPTS",
                r.agent_retry_max_attempts,
                defaults.max_attempts,
                "a whole number of attempts",
            )?
            .max(1),
            max_elapsed: seconds(
                "AGENT_RETRY_MAX_ELAPSED_SECONDS",
                r.agent_retry_max_elapsed_seconds,
                defaults.max_elapsed.as_secs_f64(),
            )?,
            initial_backoff: Duration::from_millis(number(
                "AGENT_RETRY_INITIAL_BACKOFF_MS",
                r.agent_retry_initial_backoff_ms,
                defaults.initial_backoff.as_millis() as u64,
                "a whole number of milliseconds",
            )?),
            max_backoff: Duration::from_millis(number(
                "AGENT_RETRY_MAX_BACKOFF_MS",
                r.agent_retry_max_backoff_ms,
                defaults.max_backoff.as_millis() as u64,
                "a whole number of milliseconds",
            )?),
            retry_statuses,
        };

        let max_in_flight: usize = number(
            "AGENT_MAX_IN_FLIGHT",
            r.agent_max_in_flight,
            64,
            "a whole number of messages",
        )?;
        if max_in_flight == 0 {
            return Err(err("AGENT_MAX_IN_FLIGHT", "expected at least 1"));
        }

        let target_redirects = match present(r.agent_target_redirects) {
            None => RedirectPolicy::SameHost,
            Some(v) => RedirectPolicy::parse(&v).ok_or_else(|| {
                err(
                    "AGENT_TARGET_REDIRECTS",
                    format!("expected none, same-host or any, got '{v}'"),
                )
            })?,
        };
        let max_response_bytes: usize = number(
            "AGENT_MAX_RESPONSE_BYTES",
            r.agent_max_response_bytes,
            1024 * 1024,
            "a whole number of bytes",
        )?;
        let allowed_targets = present(r.agent_allowed_targets)
            .map(|list| AllowList::parse(&list).map_err(|e| err("AGENT_ALLOWED_TARGETS", e)))
            .transpose()?;
        let max_message_age = match present(r.agent_max_message_age_seconds) {
            None => None,
            Some(v) => {
                let age = seconds("AGENT_MAX_MESSAGE_AGE_SECONDS", Some(v), 0.0)?;
                if age.is_zero() {
                    return Err(err(
                        "AGENT_MAX_MESSAGE_AGE_SECONDS",
                        "expected a number of seconds above 0 (unset it to turn the check off)",
                    ));
                }
                Some(age)
            }
        };

        let org_for_topics = org_id.clone();
        let runs_topic_set = r.kafka_runs_topic.is_some();
        Ok(Settings {
            runs_topic_set,
            log_filter_chosen,
            target_redirects,
            max_response_bytes,
            allowed_targets,
            max_message_age,
            runs_topic: present(r.kafka_runs_topic).unwrap_or_else(|| format!("{org_for_topics}.runs")),
            change_log_topic: present(r.kafka_change_log_topic)
                .unwrap_or_else(|| format!("{org_for_topics}.change.log")),
            org_id,
            client_id,
            client_secret,
            port_api_base_url: base,
            streamer,
            kafka_group_id,
            kafka_security_protocol: present(r.kafka_consumer_security_protocol)
                .unwrap_or_else(|| "plaintext".into())
                .trim()
                .to_string(),
            kafka_sasl_mechanism: sasl,
            kafka_session_timeout_ms: number(
                "KAFKA_CONSUMER_SESSION_TIMEOUT_MS",
                r.kafka_consumer_session_timeout_ms,
                45_000,
                "a whole number of milliseconds",
            )?,
            kafka_max_poll_interval_ms: number(
                "KAFKA_CONSUMER_MAX_POLL_INTERVAL_MS",
                r.kafka_consumer_max_poll_interval_ms,
                300_000,
                "a whole number of milliseconds",
            )?,
            kafka_auto_offset_reset: auto_offset_reset,
            using_local_port_instance: boolean(
                "USING_LOCAL_PORT_INSTANCE",
                r.using_local_port_instance,
                false,
            )?,
            kafka_bootstrap_servers: present(r.kafka_consumer_bootstrap_servers).unwrap_or_default(),
            kafka_brokers: present(r.kafka_consumer_brokers),
            kafka_username: present(r.kafka_consumer_username),
            kafka_password: present(r.kafka_consumer_password).map(Secret::new),
            mapping_path: present(r.control_the_payload_config_path)
                .unwrap_or_else(|| "./control_the_payload_config.json".into()),
            webhook_timeout: seconds("WEBHOOK_INVOKER_TIMEOUT", r.webhook_invoker_timeout, 30.0)?,
            webhook_verify_ssl: boolean("WEBHOOK_VERIFY_SSL", r.webhook_verify_ssl, true)?,
            detailed_logging: boolean("DETAILED_LOGGING", r.detailed_logging, true)?,
            log_filter,
            log_format,
            ca_bundle: present(r.ssl_cert_file).or(present(r.requests_ca_bundle)),
            polling_interval: seconds("POLLING_INTERVAL_SECONDS", r.polling_interval_seconds, 10.0)?,
            polling_batch_size: number(
                "POLLING_RUNS_BATCH_SIZE",
                r.polling_runs_batch_size,
                100,
                "a whole number",
            )?,
            polling_initial_backoff: seconds(
                "POLLING_INITIAL_BACKOFF_SECONDS",
                r.polling_initial_backoff_seconds,
                1.0,
            )?,
            polling_max_backoff: seconds(
                "POLLING_MAX_BACKOFF_SECONDS",
                r.polling_max_backoff_seconds,
                300.0,
            )?,
            polling_backoff_factor: number(
                "POLLING_BACKOFF_FACTOR",
                r.polling_backoff_factor,
                2.0,
                "a number",
            )?,
            polling_backoff_jitter: number(
                "POLLING_BACKOFF_JITTER_FACTOR",
                r.polling_backoff_jitter_factor,
                0.1,
                "a number",
            )?,
            polling_max_failure: seconds(
                "POLLING_MAX_FAILURE_DURATION_SECONDS",
                r.polling_max_failure_duration_seconds,
                3600.0,
            )?,
            max_in_flight,
            http_port: number(
                "AGENT_HTTP_PORT",
                r.agent_http_port,
                8080,
                "a TCP port number (0 turns it off)",
            )?,
            retry,
            port_timeout: seconds("AGENT_PORT_TIMEOUT_SECONDS", r.agent_port_timeout_seconds, 15.0)?,
            port_max_attempts: number(
                "AGENT_PORT_RETRY_MAX_ATTEMPTS",
                r.agent_port_retry_max_attempts,
                5,
                "a whole number of attempts",
            )?
            .max(1),
            run_logs: boolean("AGENT_RUN_LOGS", r.agent_run_logs, true)?,
            idempotency_headers: boolean("AGENT_IDEMPOTENCY_HEADERS", r.agent_idempotency_headers, true)?,
            mapping_reload: boolean("AGENT_MAPPING_RELOAD", r.agent_mapping_reload, true)?,
            wf_unmatched_fail: boolean("AGENT_WF_UNMATCHED_FAIL", r.agent_wf_unmatched_fail, true)?,
            dlq_topic: present(r.agent_dlq_topic),
            drain_timeout: seconds("AGENT_DRAIN_TIMEOUT_SECONDS", r.agent_drain_timeout_seconds, 20.0)?,
            jq_timeout: Duration::from_millis(number(
                "AGENT_JQ_TIMEOUT_MS",
                r.agent_jq_timeout_ms,
                1000,
                "a whole number of milliseconds",
            )?),
        })
    }

    /// Warnings that do not stop start-up (logged once by the caller).
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.streamer == Streamer::Kafka
            && !self.kafka_group_id.is_empty()
            && !self.org_id.is_empty()
            && !self.kafka_group_id.starts_with(&format!("{}.", self.org_id))
        {
            w.push(format!(
                "KAFKA_CONSUMER_GROUP_ID '{}' does not start with '{}.'; Port's Kafka only authorises groups with that prefix",
                self.kafka_group_id, self.org_id
            ));
        }
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn base() -> Vec<(String, String)> {
        env(&[
            ("PORT_ORG_ID", "org_1"),
            ("PORT_CLIENT_ID", "cid"),
            ("PORT_CLIENT_SECRET", "very-secret-value"),
            ("KAFKA_CONSUMER_GROUP_ID", "org_1.agent"),
        ])
    }

    fn with(extra: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let mut v = base();
        v.extend(env(extra));
        Settings::from_iter(v, Requirement::Run)
    }

    #[test]
    fn defaults_match_the_python_agent() {
        let s = with(&[]).unwrap();
        assert_eq!(s.port_api_base_url, "https://api.getport.io");
        assert_eq!(s.streamer, Streamer::Kafka);
        assert_eq!(s.runs_topic, "org_1.runs");
        assert_eq!(s.change_log_topic, "org_1.change.log");
        assert_eq!(s.kafka_security_protocol, "plaintext");
        assert_eq!(s.kafka_sasl_mechanism, None);
        assert_eq!(s.kafka_session_timeout_ms, 45_000);
        assert_eq!(s.kafka_max_poll_interval_ms, 300_000);
        assert_eq!(s.kafka_auto_offset_reset, "earliest");
        assert_eq!(s.mapping_path, "./control_the_payload_config.json");
        assert_eq!(s.webhook_timeout, Duration::from_secs(30));
        assert!(s.webhook_verify_ssl && s.detailed_logging && s.run_logs && s.wf_unmatched_fail);
        assert!(s.idempotency_headers);
        assert_eq!(s.max_in_flight, 64);
        assert_eq!(s.http_port, 8080);
        assert_eq!(s.polling_interval, Duration::from_secs(10));
        assert_eq!(s.polling_batch_size, 100);
        assert_eq!(s.polling_max_failure, Duration::from_secs(3600));
        assert_eq!(s.log_filter, "info");
        assert_eq!(s.target_redirects, RedirectPolicy::SameHost);
        assert_eq!(s.max_response_bytes, 1024 * 1024);
        assert_eq!(s.allowed_targets, None);
        assert_eq!(s.max_message_age, None);
        assert!(s.warnings().is_empty());
    }

    #[test]
    fn booleans_accept_every_compat_spelling() {
        for (v, want) in [
            ("true", true),
            ("TRUE", true),
            ("1", true),
            ("yes", true),
            ("On", true),
            ("t", true),
            ("Y", true),
            ("false", false),
            ("0", false),
            ("NO", false),
            ("off", false),
            ("f", false),
            ("n", false),
        ] {
            assert_eq!(
                with(&[("WEBHOOK_VERIFY_SSL", v)]).unwrap().webhook_verify_ssl,
                want,
                "{v}"
            );
        }
        let e = with(&[("DETAILED_LOGGING", "maybe")]).unwrap_err();
        assert_eq!(e.variable, "DETAILED_LOGGING");
        assert!(e.to_string().contains("expected a boolean"), "{e}");
    }

    #[test]
    fn missing_required_value_names_the_variable() {
        let e = Settings::from_iter(env(&[("PORT_ORG_ID", "o")]), Requirement::Run).unwrap_err();
        assert_eq!(e.to_string(), "PORT_CLIENT_ID: required, but not set");
        let e = Settings::from_iter(
            env(&[
                ("PORT_ORG_ID", "o"),
                ("PORT_CLIENT_ID", "c"),
                ("PORT_CLIENT_SECRET", "s"),
            ]),
            Requirement::Run,
        )
        .unwrap_err();
        assert_eq!(e.variable, "KAFKA_CONSUMER_GROUP_ID");
        // offline commands accept missing credentials
        assert!(Settings::from_iter(Vec::new(), Requirement::Offline).is_ok());
    }

    #[test]
    fn invalid_values_are_rejected_with_what_is_expected() {
        for (var, value) in [
            ("STREAMER_NAME", "RABBIT"),
            ("WEBHOOK_INVOKER_TIMEOUT", "soon"),
            ("AGENT_MAX_IN_FLIGHT", "0"),
            ("AGENT_HTTP_PORT", "70000"),
            ("KAFKA_CONSUMER_AUTO_OFFSET_RESET", "sometimes"),
            ("AGENT_LOG_FORMAT", "xml"),
            ("AGENT_RETRY_STATUSES", "429,abc"),
            ("PORT_API_BASE_URL", "api.getport.io"),
            ("AGENT_TARGET_REDIRECTS", "always"),
            ("AGENT_MAX_RESPONSE_BYTES", "1MB"),
            ("AGENT_ALLOWED_TARGETS", "10.0.0.0/40"),
            ("AGENT_MAX_MESSAGE_AGE_SECONDS", "0"),
        ] {
            let e = with(&[(var, value)]).unwrap_err();
            assert_eq!(e.variable, var);
        }
    }

    #[test]
    fn trailing_slash_and_aliases_are_tolerated() {
        let s = with(&[
            ("PORT_API_BASE_URL", "https://api.us.getport.io/"),
            ("KAFKA_CONSUMER_AUTO_OFFSET_RESET", "largest"),
            ("STREAMER_NAME", "polling"),
            ("KAFKA_CONSUMER_AUTHENTICATION_MECHANISM", "SCRAM-SHA-512"),
            ("REQUESTS_CA_BUNDLE", "/etc/ca.pem"),
        ])
        .unwrap();
        assert_eq!(s.port_api_base_url, "https://api.us.getport.io");
        assert_eq!(s.kafka_auto_offset_reset, "largest");
        assert_eq!(s.streamer, Streamer::Polling);
        assert_eq!(s.kafka_sasl_mechanism.as_deref(), Some("SCRAM-SHA-512"));
        assert_eq!(s.ca_bundle.as_deref(), Some("/etc/ca.pem"));
    }

    #[test]
    fn group_without_org_prefix_is_a_warning() {
        let mut v = base();
        v.retain(|(k, _)| k != "KAFKA_CONSUMER_GROUP_ID");
        v.push(("KAFKA_CONSUMER_GROUP_ID".into(), "my-group".into()));
        let s = Settings::from_iter(v, Requirement::Run).unwrap();
        assert_eq!(s.warnings().len(), 1);
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let mut v = base();
        v.push(("KAFKA_CONSUMER_PASSWORD".into(), "kafka-pass-123".into()));
        let s = Settings::from_iter(v, Requirement::Run).unwrap();
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("very-secret-value"), "{dbg}");
        assert!(!dbg.contains("kafka-pass-123"), "{dbg}");
    }
}
