//! `process(delivery) -> Outcome`: the whole business logic for one message,
//! in the order of SPEC §3–7: parse → decide (for the agent? signed?) →
//! select mapping → decrypt → build request → invoke → report.
//!
//! No Kafka types appear here; sources hand in a [`Delivery`] and act on the
//! [`Outcome`]. The invoker and reporter are traits, so dry-run and tests run
//! exactly this code with recording edges.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng;

use serde_json::{json, Value};
use tracing::{debug, error, info, warn, Instrument};

use crate::decrypt::decrypt_fields;
use crate::guard::AllowList;
use crate::invoke::{Invoker, OutgoingRequest};
use crate::mapping::reload::MappingSlot;
use crate::mapping::{
    apply_report_mapping, build_request_from, default_report, jq, Budget, Defaults, EvalCtx, JqEnv,
    MappingSet, ResponseContext, Warning,
};
use crate::message::{Invocation, Kind, TopicKind};
use crate::port::{PortCall, ReportBacklog, Reporter};
use crate::redact::Redactor;
use crate::secret::Secret;
use crate::settings::Settings;
use crate::signature::{self, SignatureError};
use crate::source::Trust;
use crate::telemetry::metrics;

/// One message and where it came from.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Topic name.
    pub topic: String,
    /// Partition (-1 when not from Kafka).
    pub partition: i32,
    /// Offset (or line number for recorded files).
    pub offset: i64,
    /// Kafka key.
    pub key: Option<Vec<u8>>,
    /// The message bytes.
    pub payload: Vec<u8>,
    /// Whether the message must be signed and say it is for the agent.
    pub trust: Trust,
}

/// Why a message was not delivered to a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// Not JSON, or not an object.
    Unparsable(String),
    /// `invocationMethod.agent` is not true.
    NotForAgent,
    /// No signature headers.
    MissingSignature,
    /// Signature does not match.
    BadSignature,
    /// No mapping's `enabled` matched.
    NoMapping,
    /// Neither a run id nor a URL.
    NoInvocation,
    /// Signed longer ago than `AGENT_MAX_MESSAGE_AGE_SECONDS` (a replay, or
    /// a run that waited too long); its age in seconds.
    Stale(u64),
}

impl Skip {
    /// Stable short name (metrics, dry-run JSON).
    pub fn name(&self) -> &'static str {
        match self {
            Skip::Unparsable(_) => "unparsable",
            Skip::NotForAgent => "not_for_agent",
            Skip::MissingSignature => "missing_signature",
            Skip::BadSignature => "bad_signature",
            Skip::NoMapping => "no_mapping",
            Skip::NoInvocation => "no_invocation",
            Skip::Stale(_) => "stale",
        }
    }
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Skip::Unparsable(e) => write!(f, "unparsable message: {e}"),
            Skip::NotForAgent => f.write_str("not for agent"),
            Skip::MissingSignature => f.write_str("missing signature headers"),
            Skip::BadSignature => f.write_str("signature does not match"),
            Skip::NoMapping => f.write_str("no suitable mapping"),
            Skip::NoInvocation => f.write_str("neither a run id nor a URL"),
            Skip::Stale(age) => write!(
                f,
                "the message was signed {age} s ago, longer ago than AGENT_MAX_MESSAGE_AGE_SECONDS allows"
            ),
        }
    }
}

/// What happened to a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Result_ {
    /// The target answered with this status (2xx or not); reports were made.
    Delivered(u16),
    /// The request could not be built or sent; FAILURE was reported.
    RequestFailed(String),
    /// Not sent, for this reason.
    Skipped(Skip),
    /// Processing panicked (a bug in the agent); FAILURE was reported.
    InternalError(String),
}

/// The summary reported for a run whose processing panicked.
pub const INTERNAL_ERROR_SUMMARY: &str = "Internal error in the agent while processing this run";

/// First pause before a Port call that failed after its retries is sent
/// again; it doubles up to [`PENDING_RETRY_MAX`].
const PENDING_RETRY_FIRST: Duration = Duration::from_secs(1);
/// Longest pause between two tries of a pending Port call.
const PENDING_RETRY_MAX: Duration = Duration::from_secs(10);

/// The outcome of processing one message: drives offsets, metrics and the
/// dry-run summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// What happened.
    pub result: Result_,
    /// The run id, when there is one.
    pub run_id: Option<String>,
    /// The kind of invocation, when known.
    pub kind: Option<Kind>,
    /// The selected mapping.
    pub mapping: Option<usize>,
    /// Port calls that failed after retries.
    pub port_errors: Vec<String>,
    /// Mapping runtime warnings.
    pub warnings: Vec<String>,
    /// Decrypted values, so that displays can redact them (`Debug` hides them).
    pub secrets: Vec<Secret>,
}

impl Outcome {
    fn skipped(skip: Skip) -> Outcome {
        Outcome {
            result: Result_::Skipped(skip),
            run_id: None,
            kind: None,
            mapping: None,
            port_errors: Vec::new(),
            warnings: Vec::new(),
            secrets: Vec::new(),
        }
    }

    /// Stable short name of the outcome (metrics, dry-run).
    pub fn name(&self) -> &'static str {
        match &self.result {
            Result_::Delivered(s) if (200..300).contains(s) => "delivered",
            Result_::Delivered(_) => "target_error",
            Result_::RequestFailed(_) => "request_failed",
            Result_::Skipped(s) => s.name(),
            Result_::InternalError(_) => "internal_error",
        }
    }

    /// Every name [`Outcome::name`] can give (metrics start at 0 for each).
    pub const NAMES: [&'static str; 11] = [
        "delivered",
        "target_error",
        "request_failed",
        "internal_error",
        "unparsable",
        "not_for_agent",
        "missing_signature",
        "bad_signature",
        "no_mapping",
        "no_invocation",
        "stale",
    ];

    /// Could not be processed, or Port refused its report: a DLQ candidate.
    pub fn needs_dead_letter(&self) -> bool {
        matches!(
            self.result,
            Result_::Skipped(Skip::Unparsable(_) | Skip::Stale(_)) | Result_::InternalError(_)
        ) || !self.port_errors.is_empty()
    }
}

/// Pipeline configuration (the parts of [`Settings`] it needs).
#[derive(Clone)]
pub struct Config {
    /// HMAC/AES key. `None`: signatures are stripped but not verified, and
    /// a message without them is processed (render and dry-run without a
    /// secret); outgoing requests are signed with "".
    pub secret: Option<Secret>,
    /// Do not verify incoming signatures even with a secret (`render` and
    /// `dry-run --no-verify`): signature headers are stripped when present.
    pub skip_signature_check: bool,
    /// Runs topic name.
    pub runs_topic: String,
    /// Change-log topic name.
    pub change_log_topic: String,
    /// Include response text in logs and summaries.
    pub detailed_logging: bool,
    /// Post run logs.
    pub run_logs: bool,
    /// Report FAILED for unmatched workflow node runs.
    pub wf_unmatched_fail: bool,
    /// jq evaluation limits.
    pub budget: Budget,
    /// Offline without `PORT_ORG_ID`: recognise topics by their suffix
    /// (`….runs`, `….change.log`).
    pub infer_topics: bool,
    /// Add `X-Port-Run-Id` and `Idempotency-Key` to target requests.
    pub idempotency_headers: bool,
    /// Sign with this Unix time instead of the clock (reproducible output).
    pub fixed_timestamp: Option<u64>,
}

impl Config {
    /// From settings.
    pub fn from_settings(s: &Settings) -> Config {
        Config {
            secret: (!s.port.client_secret.is_empty()).then(|| s.port.client_secret.clone()),
            skip_signature_check: false,
            runs_topic: s.kafka.runs_topic.clone(),
            change_log_topic: s.kafka.change_log_topic.clone(),
            detailed_logging: s.report.detailed_logging,
            run_logs: s.report.run_logs,
            wf_unmatched_fail: s.report.wf_unmatched_fail,
            budget: Budget {
                time: s.limits.jq_timeout,
                ..Budget::default()
            },
            infer_topics: false,
            idempotency_headers: s.target.idempotency_headers,
            fixed_timestamp: None,
        }
    }

    fn topic_kind(&self, topic: &str) -> TopicKind {
        if topic == self.runs_topic || (self.infer_topics && topic.ends_with(".runs")) {
            TopicKind::Runs
        } else if topic == self.change_log_topic || (self.infer_topics && topic.ends_with(".change.log")) {
            TopicKind::ChangeLog
        } else {
            TopicKind::Other
        }
    }
}

/// Rules that keep messages and requests inside what the operator allows
/// (`AGENT_MAX_MESSAGE_AGE_SECONDS`, `AGENT_ALLOWED_TARGETS`); both off by
/// default.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    /// Signed messages older than this are skipped as stale.
    pub max_message_age: Option<Duration>,
    /// Target requests may only go to these URLs.
    pub allowed_targets: Option<AllowList>,
}

impl Guard {
    /// From settings.
    pub fn from_settings(s: &Settings) -> Guard {
        Guard {
            max_message_age: s.limits.max_message_age,
            allowed_targets: s.target.allowed_targets.clone(),
        }
    }
}

/// The pipeline: shared, immutable state plus the two edges.
pub struct Pipeline<I, R> {
    config: Config,
    mappings: Arc<MappingSlot>,
    env: JqEnv,
    invoker: I,
    reporter: R,
    backlog: Arc<ReportBacklog>,
    guard: Guard,
    /// The client secret and the secret-named environment values.
    redactor: Redactor,
}

/// The pause after `pause` before a pending Port call is sent again:
/// doubled, capped at [`PENDING_RETRY_MAX`].
fn next_pending_retry_pause(pause: Duration) -> Duration {
    (pause * 2).min(PENDING_RETRY_MAX)
}

/// How long to sleep for `pause` with the jitter factor drawn from 0.5..=1.0.
fn pending_retry_sleep(pause: Duration, jitter: f64) -> Duration {
    pause.mul_f64(jitter.clamp(0.5, 1.0))
}

/// A run's reporting target; logs keep their order because they are awaited
/// one after another.
struct RunReporter<'a, R> {
    reporter: &'a R,
    kind: &'a Kind,
    logs: bool,
    errors: Vec<String>,
    backlog: &'a Arc<ReportBacklog>,
}

impl<R: Reporter> RunReporter<'_, R> {
    /// Make one Port call, never giving up on a transient failure: when the
    /// client's own retries are spent, the call (and so the rest of the
    /// run's calls, and the message's offset) waits and is sent again with
    /// capped backoff until Port accepts it. Only a refusal for good (a 4xx
    /// other than 401/408/429) ends it.
    async fn call(&mut self, call: PortCall) {
        let mut pending = None;
        let mut pause = PENDING_RETRY_FIRST;
        loop {
            match self.reporter.send(&call).await {
                Ok(()) => {
                    if pending.is_some() {
                        info!(call = %call.kind(), "Port accepted the pending call");
                    }
                    return;
                }
                Err(e) if e.permanent => {
                    warn!(run_id = self.kind.run_id().unwrap_or(""), error = %e,
                          "Port refused the call; it is not sent again");
                    metrics::report_rejected(call.kind());
                    self.errors.push(e.to_string());
                    return;
                }
                Err(e) => {
                    if pending.is_none() {
                        warn!(error = %e, "Port API unreachable after retries: the call stays pending and is sent again until Port accepts it");
                        pending = Some(self.backlog.enter());
                    }
                    let jittered = pending_retry_sleep(pause, rand::rng().random_range(0.5..=1.0));
                    tokio::time::sleep(jittered).await;
                    pause = next_pending_retry_pause(pause);
                }
            }
        }
    }

    async fn log(&mut self, message: impl Into<String>) {
        if !self.logs {
            return;
        }
        let message = message.into();
        let call = match self.kind {
            Kind::ActionRun(id) => PortCall::RunLog {
                run_id: id.clone(),
                message,
            },
            Kind::NodeRun(id) => PortCall::NodeRunLog {
                run_id: id.clone(),
                message,
            },
            Kind::ChangeLog => return,
        };
        self.call(call).await;
    }
}

/// The span every log line about `delivery` carries.
fn message_span(delivery: &Delivery) -> tracing::Span {
    tracing::info_span!(
        "message",
        topic = %delivery.topic,
        partition = delivery.partition,
        offset = delivery.offset,
        run_id = tracing::field::Empty,
    )
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `.headers["X-Port-Timestamp"]` (a number or a string of digits), in
/// Unix seconds.
fn signed_at_seconds(message: &Value) -> Option<u64> {
    match message.pointer("/headers/X-Port-Timestamp")? {
        Value::Number(n) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The response as Port stores it: JSON when it parses, else the text.
fn response_value(r: &ResponseContext) -> Value {
    r.json().unwrap_or_else(|| Value::String(r.text.clone()))
}

impl<I: Invoker, R: Reporter> Pipeline<I, R> {
    /// Assemble a pipeline.
    pub fn new(config: Config, mappings: Arc<MappingSet>, env: JqEnv, invoker: I, reporter: R) -> Self {
        let mut redactor = Redactor::new(env.sensitive_values());
        redactor.extend(config.secret.as_ref().map(Secret::expose));
        Pipeline {
            config,
            mappings: MappingSlot::new(mappings),
            env,
            invoker,
            reporter,
            backlog: Arc::default(),
            guard: Guard::default(),
            redactor,
        }
    }

    /// Apply the admission and destination rules of `guard`.
    pub fn with_guard(mut self, guard: Guard) -> Self {
        self.guard = guard;
        self
    }

    /// What hides the secrets that processing `outcome` met (its decrypted
    /// values, secret-named environment values, the client secret).
    pub fn redactor_for(&self, outcome: &Outcome) -> Redactor {
        let mut r = self.redactor.clone();
        r.extend(outcome.secrets.iter().map(Secret::expose));
        r
    }

    /// Where the mappings in force live (the reloader swaps them).
    pub fn mapping_slot(&self) -> Arc<MappingSlot> {
        self.mappings.clone()
    }

    /// Runs whose Port calls wait for Port (for `/readyz`).
    pub fn report_backlog(&self) -> Arc<ReportBacklog> {
        self.backlog.clone()
    }

    /// The invoker (dry-run reads its recordings).
    pub fn invoker(&self) -> &I {
        &self.invoker
    }

    /// The reporter (dry-run reads its recordings).
    pub fn reporter(&self) -> &R {
        &self.reporter
    }

    /// Process one message to its final outcome. Never panics on input.
    pub async fn process(&self, delivery: &Delivery) -> Outcome {
        let span = message_span(delivery);
        self.process_inner(delivery, &span).instrument(span.clone()).await
    }

    async fn process_inner(&self, delivery: &Delivery, span: &tracing::Span) -> Outcome {
        let (inv, kind) = match self.admit(delivery, span) {
            Ok(admitted) => admitted,
            Err(mut skipped) => {
                if let (Result_::Skipped(Skip::Stale(age)), Some(kind)) = (&skipped.result, &skipped.kind) {
                    let summary = format!(
                        "The agent did not run this action: its message was signed {age} s ago, \
                         longer ago than AGENT_MAX_MESSAGE_AGE_SECONDS ({} s) allows. Run it again from Port.",
                        self.guard.max_message_age.map(|d| d.as_secs()).unwrap_or(0)
                    );
                    let mut run = self.run_reporter(kind);
                    self.report_failure(&mut run, kind, &summary).await;
                    skipped.port_errors = run.errors;
                }
                return *skipped;
            }
        };
        let mut outcome = Outcome::skipped(Skip::NoMapping);
        outcome.run_id = kind.run_id().map(str::to_string);
        outcome.kind = Some(kind.clone());
        self.handle(inv, &kind, delivery, &mut outcome).await;
        outcome
    }

    /// Parse the message and decide whether it is ours to run (for the
    /// agent, signature checked, a run or an invocation URL).
    fn admit(&self, delivery: &Delivery, span: &tracing::Span) -> Result<(Invocation, Kind), Box<Outcome>> {
        let topic = self.config.topic_kind(&delivery.topic);
        let mut inv = match Invocation::parse(&delivery.payload, topic) {
            Ok(inv) => inv,
            Err(e) => {
                warn!(error = %e, "skipping unparsable message");
                return Err(Box::new(Outcome::skipped(Skip::Unparsable(e.to_string()))));
            }
        };
        if let Some(id) = inv.run_id() {
            span.record("run_id", id);
        }
        let (run_id, kind) = (inv.run_id().map(str::to_string), inv.kind());
        let skipped = |skip: Skip| Outcome {
            run_id: run_id.clone(),
            kind: kind.clone(),
            ..Outcome::skipped(skip)
        };
        if delivery.trust == Trust::Signed && !inv.for_agent() {
            info!("skipping message: not for agent");
            return Err(Box::new(skipped(Skip::NotForAgent)));
        }
        if let Some(id) = inv.run_id().filter(|id| *id == "." || *id == "..") {
            warn!(run_id = id, "skipping message: its run id is not a valid id");
            return Err(Box::new(Outcome::skipped(Skip::Unparsable(format!(
                "run id '{id}' is not a valid id"
            )))));
        }
        // Only the change-log topic is unsigned (compat). A
        // `changelogDestination` key on any other topic changes nothing: the
        // Python agent skipped verification for any message that had the
        // key, so anyone who could write to the runs topic could send an
        // unsigned request, signed by the agent, anywhere.
        let signed_topic = delivery.trust == Trust::Signed && topic != TopicKind::ChangeLog;
        let signed_at = signed_topic.then(|| signed_at_seconds(&inv.message)).flatten();
        if signed_topic {
            let gitlab = inv.method_type() == Some("GITLAB");
            let checked = match &self.config.secret {
                Some(secret) if !self.config.skip_signature_check => {
                    signature::verify_incoming(&mut inv.message, secret.expose(), gitlab)
                }
                // Not checked (offline only): strip the headers if present.
                _ => {
                    let _ = signature::strip_signature_headers(&mut inv.message, gitlab);
                    Ok(())
                }
            };
            match checked {
                Ok(()) => {}
                Err(SignatureError::Missing) => {
                    warn!("skipping message: no signature headers");
                    return Err(Box::new(skipped(Skip::MissingSignature)));
                }
                Err(SignatureError::Mismatch) => {
                    warn!("skipping message: signature does not match");
                    return Err(Box::new(skipped(Skip::BadSignature)));
                }
            }
        }
        if let (Some(max), Some(at)) = (self.guard.max_message_age, signed_at) {
            let age = now_secs().saturating_sub(at);
            if age > max.as_secs() {
                warn!(
                    age_seconds = age,
                    max_age_seconds = max.as_secs(),
                    "skipping message: signed longer ago than AGENT_MAX_MESSAGE_AGE_SECONDS"
                );
                return Err(Box::new(skipped(Skip::Stale(age))));
            }
        }
        let Some(kind) = kind.clone() else {
            warn!("skipping message: neither a run id nor an invocation URL");
            return Err(Box::new(Outcome::skipped(Skip::NoInvocation)));
        };
        Ok((inv, kind))
    }

    /// Processing `delivery` panicked: report its run as failed (when it is
    /// a run that is ours) and give the outcome the source acks.
    pub async fn internal_error(&self, delivery: &Delivery, panic: &str) -> Outcome {
        let span = message_span(delivery);
        let work = async {
            let kind = match self.admit(delivery, &span) {
                Ok((_, kind)) => kind,
                Err(skipped) => return *skipped,
            };
            let mut run = self.run_reporter(&kind);
            self.report_failure(&mut run, &kind, INTERNAL_ERROR_SUMMARY).await;
            error!(panic = %panic, "the run was reported as failed after an internal error");
            let port_errors = run.errors;
            Outcome {
                result: Result_::InternalError(panic.to_string()),
                run_id: kind.run_id().map(str::to_string),
                kind: Some(kind),
                mapping: None,
                port_errors,
                warnings: Vec::new(),
                secrets: Vec::new(),
            }
        };
        work.instrument(span.clone()).await
    }

    fn run_reporter<'a>(&'a self, kind: &'a Kind) -> RunReporter<'a, R> {
        RunReporter {
            reporter: &self.reporter,
            kind,
            logs: self.config.run_logs,
            errors: Vec::new(),
            backlog: &self.backlog,
        }
    }

    async fn handle(&self, mut inv: Invocation, kind: &Kind, delivery: &Delivery, outcome: &mut Outcome) {
        let ctx = EvalCtx {
            env: &self.env,
            budget: self.config.budget,
        };
        let mut warnings: Vec<Warning> = Vec::new();
        let mut run = self.run_reporter(kind);

        let input = jq::to_val(&inv.message);
        // The set in force now; a reload during this message does not
        // change it.
        let mappings = self.mappings.current();
        let selection = mappings.select(&input, &ctx, &mut warnings);
        let Some(mapping) = selection.index.and_then(|i| mappings.get(i)) else {
            info!("no suitable mapping for the message");
            if let Kind::NodeRun(id) = kind {
                if self.config.wf_unmatched_fail {
                    run.call(PortCall::NodeRunPatch {
                        run_id: id.clone(),
                        body: json!({"status": "COMPLETED", "result": "FAILED"}),
                    })
                    .await;
                }
            }
            finish(outcome, warnings, run.errors, &self.redactor);
            return;
        };
        outcome.mapping = Some(mapping.index);

        // The request is built first (no I/O), so that the run logs that
        // precede it can travel while the target is called: their order,
        // and their place before the status report, stay as they were, but
        // a run no longer waits for three Port round trips before its
        // request goes out.
        const RECEIVED: &str = "An action message has been received";
        const PREPARING: &str = "Preparing the payload for the request";
        let decrypted = decrypt_fields(&mut inv.message, &mapping.decrypt_paths, self.secret());
        for (path, error) in &decrypted.failures {
            warn!(path = %path, error = %error, "could not decrypt a field; it is left unchanged");
        }
        // Decryption changed the message: convert it again.
        let input = if decrypted.plaintexts.is_empty() {
            input
        } else {
            jq::to_val(&inv.message)
        };
        outcome.secrets = decrypted.plaintexts.into_iter().map(Secret::new).collect();
        let redactor = self.redactor_for(outcome);
        let defaults = Defaults {
            method: inv.method.get("method").and_then(Value::as_str),
            url: inv.method.get("url").and_then(Value::as_str),
        };
        let built = build_request_from(mapping, &inv.message, &input, &defaults, &ctx, &mut warnings)
            .map_err(|e| {
                metrics::mapping_error(mapping.index, e.field());
                format!("Failed to build the request: {e}")
            })
            .and_then(|spec| {
                OutgoingRequest::build(
                    &spec,
                    self.secret(),
                    self.config.fixed_timestamp.unwrap_or_else(now_secs),
                )
                .map(|req| (spec, req))
                .map_err(|e| format!("Failed to build the request: {e}"))
            })
            .and_then(|(spec, req)| self.check_allowed(&req).map(|()| (spec, req)));
        let (spec, mut request) = match built {
            Ok(b) => b,
            Err(error) => {
                let error = redactor.text(&error);
                warn!(error = %error, "request was not sent");
                run.log(RECEIVED).await;
                run.log(PREPARING).await;
                self.report_failure(&mut run, kind, &error).await;
                outcome.result = Result_::RequestFailed(error);
                finish(outcome, warnings, run.errors, &redactor);
                return;
            }
        };

        if self.config.idempotency_headers {
            let key = match kind.run_id() {
                Some(id) => id.to_string(),
                None => format!("{}-{}-{}", delivery.topic, delivery.partition, delivery.offset),
            };
            request.add_idempotency_headers(kind.run_id(), &key);
        }
        let logs = async {
            run.log(RECEIVED).await;
            run.log(PREPARING).await;
            run.log("Sending the request").await;
        };
        let ((), sent) = tokio::join!(logs, self.invoker.send(&request));
        let (response, truncated) = match sent {
            Ok(r) => (r.response, r.truncated),
            Err(e) => {
                let message = redactor.text(&e.message);
                let error = format!("Failed to invoke the webhook: {message}");
                warn!(error = %message, attempts = e.attempts, "target request failed");
                run.log(format!("Action invocation failed: {message}")).await;
                self.report_failure(&mut run, kind, &error).await;
                outcome.result = Result_::RequestFailed(error);
                finish(outcome, warnings, run.errors, &redactor);
                return;
            }
        };
        if self.invoker.records_only() {
            debug!(status = response.status, method = %request.method, "request recorded, not sent; the assumed answer is used");
        } else {
            info!(status = response.status, method = %request.method, truncated, "target answered");
        }
        outcome.result = Result_::Delivered(response.status);

        let note = if truncated {
            format!(
                " (response truncated: only its first {} bytes were read, AGENT_MAX_RESPONSE_BYTES)",
                response.text.len()
            )
        } else {
            String::new()
        };
        let location = response
            .header("location")
            .filter(|_| (300..400).contains(&response.status))
            .map(|l| format!(" redirecting to {}", redactor.text(l)))
            .unwrap_or_default();
        if response.ok() {
            run.log(format!(
                "Action invocation has completed successfully with status code: {}{note}",
                response.status
            ))
            .await;
        } else if self.config.detailed_logging && !response.text.is_empty() {
            run.log(format!(
                "Action invocation failed with status code: {}{location} and response: {}{note}",
                response.status,
                redactor.text(&response.text)
            ))
            .await;
        } else {
            run.log(format!(
                "Action invocation failed with status code: {}{location}{note}",
                response.status
            ))
            .await;
        }

        let synchronized = inv.synchronized();
        match kind {
            Kind::ActionRun(id) => {
                if synchronized && !response.text.trim().is_empty() {
                    run.call(PortCall::RunResponse {
                        run_id: id.clone(),
                        response: response_value(&response),
                    })
                    .await;
                }
                let report = default_report(synchronized, &response, self.config.detailed_logging);
                let report = apply_report_mapping(
                    mapping,
                    report,
                    &inv.message,
                    &spec,
                    &response,
                    &ctx,
                    &mut warnings,
                );
                if !report.is_empty() {
                    run.call(PortCall::RunPatch {
                        run_id: id.clone(),
                        body: report.to_body(),
                    })
                    .await;
                }
            }
            Kind::NodeRun(id) => {
                let body = if !response.ok() {
                    Some(json!({"status": "COMPLETED", "result": "FAILED"}))
                } else if synchronized {
                    let data = if response.text.trim().is_empty() {
                        json!({})
                    } else {
                        response_value(&response)
                    };
                    Some(json!({"status": "COMPLETED", "result": "SUCCESS",
                                "output": {"response": {"status": response.status, "data": data}}}))
                } else {
                    None
                };
                if let Some(body) = body {
                    run.call(PortCall::NodeRunPatch {
                        run_id: id.clone(),
                        body,
                    })
                    .await;
                }
            }
            Kind::ChangeLog => {}
        }
        run.log("Port agent finished processing the action run").await;
        finish(outcome, warnings, run.errors, &redactor);
    }

    /// `Err` with the run's failure summary when `AGENT_ALLOWED_TARGETS` is
    /// set and the request's URL is not on it.
    fn check_allowed(&self, request: &OutgoingRequest) -> Result<(), String> {
        let Some(list) = &self.guard.allowed_targets else {
            return Ok(());
        };
        match url::Url::parse(&request.url) {
            Ok(u) if list.allows(&u) => Ok(()),
            Ok(u) => Err(format!(
                "target not allowed by AGENT_ALLOWED_TARGETS: {}",
                u.host_str().unwrap_or("(no host)")
            )),
            Err(e) => Err(format!("Failed to build the request: invalid URL: {e}")),
        }
    }

    fn secret(&self) -> &str {
        self.config.secret.as_ref().map(Secret::expose).unwrap_or("")
    }

    async fn report_failure(&self, run: &mut RunReporter<'_, R>, kind: &Kind, summary: &str) {
        match kind {
            Kind::ActionRun(id) => {
                run.call(PortCall::RunPatch {
                    run_id: id.clone(),
                    body: json!({"status": "FAILURE", "summary": summary}),
                })
                .await;
            }
            Kind::NodeRun(id) => {
                run.call(PortCall::NodeRunPatch {
                    run_id: id.clone(),
                    body: json!({"status": "COMPLETED", "result": "FAILED"}),
                })
                .await;
            }
            Kind::ChangeLog => {}
        }
        run.log("Port agent finished processing the action run").await;
    }
}

/// Record the warnings (redacted: jq error texts quote the values they
/// failed on, which may be decrypted or taken from a secret variable) and
/// the Port errors.
fn finish(outcome: &mut Outcome, warnings: Vec<Warning>, port_errors: Vec<String>, redactor: &Redactor) {
    for w in &warnings {
        metrics::mapping_error(w.index, &w.field);
        let error = redactor.text(&w.message);
        warn!(mapping = w.index, field = %w.field, error = %error, "mapping expression failed; using null");
    }
    outcome.warnings = warnings.iter().map(|w| redactor.text(&w.to_string())).collect();
    outcome.port_errors = port_errors;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pending_call_is_sent_again_after_1_s_doubling_to_10_s_jittered_50_to_100_percent() {
        let mut pause = PENDING_RETRY_FIRST;
        let mut pauses = Vec::new();
        for _ in 0..7 {
            pauses.push(pause.as_secs());
            pause = next_pending_retry_pause(pause);
        }
        assert_eq!(pauses, [1, 2, 4, 8, 10, 10, 10]);
        let ten = Duration::from_secs(10);
        assert_eq!(pending_retry_sleep(ten, 0.5), Duration::from_secs(5));
        assert_eq!(pending_retry_sleep(ten, 1.0), ten);
        // The factor is drawn from 0.5..=1.0; the sleep stays within it.
        for jitter in [0.0, 0.3, 0.5, 0.75, 1.0, 1.7] {
            let s = pending_retry_sleep(ten, jitter);
            assert!(s >= Duration::from_secs(5) && s <= ten, "{jitter}: {s:?}");
        }
    }

    #[test]
    fn outcome_names_lists_every_outcome_once() {
        let results = [
            Result_::Delivered(200),
            Result_::Delivered(500),
            Result_::RequestFailed(String::new()),
            Result_::InternalError(String::new()),
            Result_::Skipped(Skip::Unparsable(String::new())),
            Result_::Skipped(Skip::NotForAgent),
            Result_::Skipped(Skip::MissingSignature),
            Result_::Skipped(Skip::BadSignature),
            Result_::Skipped(Skip::NoMapping),
            Result_::Skipped(Skip::NoInvocation),
            Result_::Skipped(Skip::Stale(1)),
        ];
        let names: Vec<&str> = results
            .into_iter()
            .map(|result| {
                Outcome {
                    result,
                    ..Outcome::skipped(Skip::NoMapping)
                }
                .name()
            })
            .collect();
        assert_eq!(names, Outcome::NAMES.to_vec());
    }
}
