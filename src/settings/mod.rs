//! The agent's settings: what each component takes, typed and validated.
//!
//! [`Settings`] is nested by component ([`PortSettings`], [`KafkaSettings`],
//! [`PollingSettings`], [`TargetSettings`], [`ReportSettings`],
//! [`MappingSettings`], [`LimitSettings`], [`TelemetrySettings`]); [`env`] reads
//! them from the environment (the variable names and defaults are the
//! Python agent's, SPEC §1) and is the only module that reads the
//! environment.

use std::time::Duration;

use crate::guard::{AllowList, RedirectPolicy};
use crate::retry::Policy;
use crate::secret::Secret;

pub mod env;
mod parse;

pub use env::process_env;
pub use parse::{parse_bool, RunLogs};

/// `PORT_API_BASE_URL`'s default: Port's EU region.
pub const DEFAULT_API_BASE_URL: &str = "https://api.getport.io";

/// Default of `AGENT_JQ_MAX_BYTES`: far above what a mapping of a Port
/// message builds (a message is at most a few hundred KiB), far below a
/// pod's memory.
pub const DEFAULT_JQ_MAX_BYTES: usize = 32 << 20;

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

/// Every setting of the agent, by the component that takes it.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `STREAMER_NAME`.
    pub streamer: Streamer,
    /// Port's API and the agent's credentials.
    pub port: PortSettings,
    /// The Kafka source.
    pub kafka: KafkaSettings,
    /// The polling source.
    pub polling: PollingSettings,
    /// Requests to the organisation's targets.
    pub target: TargetSettings,
    /// What is reported to Port about each run.
    pub report: ReportSettings,
    /// The mapping file.
    pub mapping: MappingSettings,
    /// Bounds of the pipeline.
    pub limits: LimitSettings,
    /// Logs, metrics and health.
    pub telemetry: TelemetrySettings,
    /// `SSL_CERT_FILE` or `REQUESTS_CA_BUNDLE`: extra trusted CA certificates
    /// (for Port, the targets and Kafka).
    pub ca_bundle: Option<String>,
    /// `HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY`, `NO_PROXY` (or their
    /// lower-case names), for Port's API and targets alike.
    pub proxies: crate::proxy::Proxies,
}

/// Port's API and the agent's credentials.
#[derive(Debug, Clone)]
pub struct PortSettings {
    /// `PORT_ORG_ID` (empty only for commands that do not need it).
    pub org_id: String,
    /// `PORT_CLIENT_ID`.
    pub client_id: String,
    /// `PORT_CLIENT_SECRET`: API credential, HMAC key and AES key.
    pub client_secret: Secret,
    /// `PORT_API_BASE_URL` without a trailing `/`.
    pub api_base_url: String,
    /// `AGENT_PORT_TIMEOUT_SECONDS`: timeout of one Port API call.
    pub timeout: Duration,
    /// `AGENT_PORT_RETRY_MAX_ATTEMPTS`: attempts per Port API call.
    pub max_attempts: u32,
}

/// `KAFKA_CONSUMER_SECURITY_PROTOCOL`: librdkafka's `security.protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityProtocol {
    /// `plaintext` (the default).
    Plaintext,
    /// `ssl`.
    Ssl,
    /// `sasl_plaintext`.
    SaslPlaintext,
    /// `sasl_ssl`.
    SaslSsl,
}

impl SecurityProtocol {
    /// The accepted spellings (any case), as an error message lists them.
    pub const EXPECTED: &'static str = "plaintext, ssl, sasl_plaintext or sasl_ssl";

    /// Parse a spelling, in any case.
    pub fn parse(value: &str) -> Option<SecurityProtocol> {
        match value.trim().to_ascii_lowercase().as_str() {
            "plaintext" => Some(SecurityProtocol::Plaintext),
            "ssl" => Some(SecurityProtocol::Ssl),
            "sasl_plaintext" => Some(SecurityProtocol::SaslPlaintext),
            "sasl_ssl" => Some(SecurityProtocol::SaslSsl),
            _ => None,
        }
    }

    /// librdkafka's value.
    pub fn as_str(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "plaintext",
            SecurityProtocol::Ssl => "ssl",
            SecurityProtocol::SaslPlaintext => "sasl_plaintext",
            SecurityProtocol::SaslSsl => "sasl_ssl",
        }
    }
}

/// `KAFKA_CONSUMER_AUTO_OFFSET_RESET`: where a group without a committed
/// offset starts (librdkafka's `auto.offset.reset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetReset {
    /// `earliest` (also `smallest`, `beginning`): the default.
    Earliest,
    /// `latest` (also `largest`, `end`).
    Latest,
    /// `error`: fail instead.
    Error,
}

impl OffsetReset {
    /// Parse a spelling librdkafka accepts, in any case.
    pub fn parse(value: &str) -> Option<OffsetReset> {
        match value.trim().to_ascii_lowercase().as_str() {
            "earliest" | "smallest" | "beginning" => Some(OffsetReset::Earliest),
            "latest" | "largest" | "end" => Some(OffsetReset::Latest),
            "error" => Some(OffsetReset::Error),
            _ => None,
        }
    }

    /// librdkafka's value.
    pub fn as_str(self) -> &'static str {
        match self {
            OffsetReset::Earliest => "earliest",
            OffsetReset::Latest => "latest",
            OffsetReset::Error => "error",
        }
    }
}

/// The Kafka source.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    /// `KAFKA_CONSUMER_GROUP_ID`.
    pub group_id: String,
    /// `KAFKA_CONSUMER_SECURITY_PROTOCOL`.
    pub security_protocol: SecurityProtocol,
    /// `KAFKA_CONSUMER_AUTHENTICATION_MECHANISM` (`None` for `none`).
    pub sasl_mechanism: Option<String>,
    /// `KAFKA_CONSUMER_SESSION_TIMEOUT_MS`.
    pub session_timeout_ms: u32,
    /// `KAFKA_CONSUMER_MAX_POLL_INTERVAL_MS` (`max.poll.interval.ms`).
    pub max_poll_interval_ms: u32,
    /// `KAFKA_CONSUMER_AUTO_OFFSET_RESET`.
    pub auto_offset_reset: OffsetReset,
    /// `KAFKA_RUNS_TOPIC`.
    pub runs_topic: String,
    /// `KAFKA_RUNS_TOPIC` was set (else the name derives from the org id).
    pub runs_topic_set: bool,
    /// `KAFKA_CHANGE_LOG_TOPIC`.
    pub change_log_topic: String,
    /// `USING_LOCAL_PORT_INSTANCE`.
    pub using_local_port_instance: bool,
    /// `KAFKA_CONSUMER_BOOTSTRAP_SERVERS`.
    pub bootstrap_servers: String,
    /// `KAFKA_CONSUMER_BROKERS` (explicit brokers: skip `/v1/kafka-credentials`).
    pub brokers: Option<String>,
    /// `KAFKA_CONSUMER_USERNAME`.
    pub username: Option<String>,
    /// `KAFKA_CONSUMER_PASSWORD`.
    pub password: Option<Secret>,
    /// `AGENT_DLQ_TOPIC`.
    pub dlq_topic: Option<String>,
    /// `AGENT_CRASH_LOOP_LIMIT`: a message found in flight at this many
    /// deaths of the agent is not processed again.
    pub crash_loop_limit: u32,
}

impl Default for KafkaSettings {
    /// The variables' defaults; the topics are named after `PORT_ORG_ID`
    /// by [`env`], so they are empty here.
    fn default() -> KafkaSettings {
        KafkaSettings {
            group_id: String::new(),
            security_protocol: SecurityProtocol::Plaintext,
            sasl_mechanism: None,
            session_timeout_ms: 45_000,
            max_poll_interval_ms: 300_000,
            auto_offset_reset: OffsetReset::Earliest,
            runs_topic: String::new(),
            runs_topic_set: false,
            change_log_topic: String::new(),
            using_local_port_instance: false,
            bootstrap_servers: String::new(),
            brokers: None,
            username: None,
            password: None,
            dlq_topic: None,
            crash_loop_limit: 3,
        }
    }
}

/// The polling source.
#[derive(Debug, Clone)]
pub struct PollingSettings {
    /// `POLLING_INTERVAL_SECONDS`.
    pub interval: Duration,
    /// `POLLING_RUNS_BATCH_SIZE`.
    pub batch_size: u32,
    /// `POLLING_INITIAL_BACKOFF_SECONDS`.
    pub initial_backoff: Duration,
    /// `POLLING_MAX_BACKOFF_SECONDS`.
    pub max_backoff: Duration,
    /// `POLLING_BACKOFF_FACTOR`.
    pub backoff_factor: f64,
    /// `POLLING_BACKOFF_JITTER_FACTOR`.
    pub backoff_jitter: f64,
    /// `POLLING_MAX_FAILURE_DURATION_SECONDS`.
    pub max_failure: Duration,
}

impl Default for PollingSettings {
    /// The variables' defaults (the Python agent's).
    fn default() -> PollingSettings {
        PollingSettings {
            interval: Duration::from_secs(10),
            batch_size: 100,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            backoff_factor: 2.0,
            backoff_jitter: 0.1,
            max_failure: Duration::from_secs(3600),
        }
    }
}

/// Requests to the organisation's targets.
#[derive(Debug, Clone)]
pub struct TargetSettings {
    /// `WEBHOOK_INVOKER_TIMEOUT`, per target request.
    pub timeout: Duration,
    /// `WEBHOOK_VERIFY_SSL`.
    pub verify_ssl: bool,
    /// `AGENT_RETRY_*`.
    pub retry: Policy,
    /// `AGENT_TARGET_REDIRECTS`: which redirects of a target are followed.
    pub redirects: RedirectPolicy,
    /// `AGENT_MAX_RESPONSE_BYTES`: most bytes of a target's answer read.
    pub max_response_bytes: usize,
    /// `AGENT_ALLOWED_TARGETS`: where target requests may go (`None`: anywhere).
    pub allowed_targets: Option<AllowList>,
    /// `AGENT_IDEMPOTENCY_HEADERS`: add `X-Port-Run-Id` and `Idempotency-Key`
    /// to every target request.
    pub idempotency_headers: bool,
}

/// What is reported to Port about each run.
#[derive(Debug, Clone)]
pub struct ReportSettings {
    /// `DETAILED_LOGGING`.
    pub detailed_logging: bool,
    /// `AGENT_RUN_LOGS`: which run logs are posted to Port (`all`,
    /// `minimal`, `off`; a boolean is `all` or `off`).
    pub run_logs: RunLogs,
    /// `AGENT_WF_UNMATCHED_FAIL`: report FAILED for unmatched node runs.
    pub wf_unmatched_fail: bool,
}

impl Default for ReportSettings {
    /// The variables' defaults: detailed, every run-log line, unmatched
    /// node runs failed.
    fn default() -> ReportSettings {
        ReportSettings {
            detailed_logging: true,
            run_logs: RunLogs::All,
            wf_unmatched_fail: true,
        }
    }
}

/// The mapping file.
#[derive(Debug, Clone)]
pub struct MappingSettings {
    /// `CONTROL_THE_PAYLOAD_CONFIG_PATH`.
    pub path: String,
    /// `AGENT_MAPPING_RELOAD`: reload the mapping file when it changes and on
    /// SIGHUP.
    pub reload: bool,
}

/// Bounds of the pipeline.
#[derive(Debug, Clone)]
pub struct LimitSettings {
    /// `AGENT_MAX_IN_FLIGHT`.
    pub max_in_flight: usize,
    /// `AGENT_DRAIN_TIMEOUT_SECONDS`.
    pub drain_timeout: Duration,
    /// `AGENT_JQ_TIMEOUT_MS`: wall-clock bound of one jq evaluation.
    pub jq_timeout: Duration,
    /// `AGENT_JQ_MAX_BYTES`: bytes one jq evaluation may hold at once (all
    /// evaluations together: four times that).
    pub jq_max_bytes: usize,
    /// `AGENT_MAX_MESSAGE_AGE_SECONDS`: older signed messages are skipped.
    pub max_message_age: Option<Duration>,
    /// How far ahead of the clock a signed message may be dated when
    /// `max_message_age` is set (`AGENT_MAX_CLOCK_SKEW_SECONDS`, 300 s).
    pub max_clock_skew: Duration,
}

impl Default for LimitSettings {
    /// The variables' defaults.
    fn default() -> LimitSettings {
        LimitSettings {
            max_in_flight: 64,
            drain_timeout: Duration::from_secs(20),
            jq_timeout: Duration::from_millis(1000),
            jq_max_bytes: DEFAULT_JQ_MAX_BYTES,
            max_message_age: None,
            max_clock_skew: Duration::from_secs(300),
        }
    }
}

/// Logs, metrics and health.
#[derive(Debug, Clone)]
pub struct TelemetrySettings {
    /// `RUST_LOG` when set, else `LOG_LEVEL`.
    pub log_filter: String,
    /// `RUST_LOG` or `LOG_LEVEL` was set (the quiet offline commands keep
    /// their own level otherwise).
    pub log_filter_chosen: bool,
    /// `AGENT_LOG_FORMAT`; `None` means "json unless stdout is a terminal".
    pub log_format: Option<LogFormat>,
    /// `AGENT_HTTP_PORT` (0 turns the server off).
    pub http_port: u16,
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

/// How strict loading is: `run` needs credentials, `check`/`dry-run` do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement {
    /// Everything the running agent needs must be present.
    Run,
    /// Credentials and org id may be missing (offline commands).
    Offline,
}

impl Settings {
    /// Warnings that do not stop start-up (logged once by the caller).
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        let (group, org) = (&self.kafka.group_id, &self.port.org_id);
        if self.streamer == Streamer::Kafka
            && !group.is_empty()
            && !org.is_empty()
            && !group.starts_with(&format!("{org}."))
        {
            w.push(format!(
                "KAFKA_CONSUMER_GROUP_ID '{group}' does not start with '{org}.'; Port's Kafka only authorises groups with that prefix"
            ));
        }
        w
    }
}
