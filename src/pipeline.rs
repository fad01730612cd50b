//! `process(delivery) -> Outcome`: the whole business logic for one message,
//! in the order of SPEC §3–7: parse → decide (for the agent? signed?) →
//! select mapping → decrypt → build request → invoke → report.
//!
//! No Kafka types appear here; sources hand in a [`Delivery`] and act on the
//! [`Outcome`]. The invoker and reporter are traits, so dry-run and tests run
//! exactly this code with recording edges.
//!
//! What is reported to Port is decided in [`crate::report`]; this module
//! only sends it (`reporting`: the run logs and the result as two chains
//! side by side, each in order, waiting for Port while it is unreachable). The steps after selection are in `steps`, the outcome
//! types in `outcome`.

mod admission;
mod evaluate;
mod sending;
mod steps;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::{error, info, warn, Instrument};

use crate::delivery::Delivery;
use crate::invoke::Invoker;
use crate::mapping::reload::MappingSlot;
use crate::mapping::{jq, Budget, EvalCtx, JqEnv, MappingSet};
use crate::message::{Invocation, Kind, TopicKind};
use crate::outcome::{Disposition, Outcome, Skip};
use crate::port::{PortBacklog, Reporter};
use crate::redact::Redactor;
use crate::report::{FailureSummary, LogLine};

use crate::secret::Secret;
use crate::settings::{ReportSettings, Settings};
use crate::source::Process;

pub use admission::{Guardrails, DEFAULT_MAX_CLOCK_SKEW};
pub use evaluate::Evaluation;
use sending::RunSender;
use steps::Job;

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
    /// What is reported about each run (`DETAILED_LOGGING`,
    /// `AGENT_RUN_LOGS`, `AGENT_WF_UNMATCHED_FAIL`).
    pub report: ReportSettings,
    /// jq evaluation limits.
    pub budget: Budget,
    /// Offline without `PORT_ORG_ID`: recognise topics by their suffix
    /// (`….runs`, `….change.log`).
    pub infer_topics: bool,
    /// Add `X-Port-Run-Id` and `Idempotency-Key` to target requests.
    pub idempotency_headers: bool,
    /// Sign with this Unix time instead of the clock (reproducible output).
    pub fixed_timestamp: Option<u64>,
    /// The edges record instead of sending (`dry-run`, `render`): each
    /// run's Port calls are made one after the other in their order (the
    /// output reads in order), and the logs say "recorded", not "answered".
    pub recording: bool,
}

impl Config {
    /// From settings.
    pub fn from_settings(s: &Settings) -> Config {
        Config {
            secret: (!s.port.client_secret.is_empty()).then(|| s.port.client_secret.clone()),
            skip_signature_check: false,
            runs_topic: s.kafka.runs_topic.clone(),
            change_log_topic: s.kafka.change_log_topic.clone(),
            report: s.report.clone(),
            budget: Budget {
                time: s.limits.jq_timeout,
                max_bytes: s.limits.jq_max_bytes,
                ..Budget::default()
            },
            infer_topics: false,
            idempotency_headers: s.target.idempotency_headers,
            fixed_timestamp: None,
            recording: false,
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

/// The pipeline: shared, immutable state plus the two edges.
pub struct Pipeline<I, R> {
    config: Config,
    mappings: Arc<MappingSlot>,
    env: JqEnv,
    invoker: I,
    reporter: R,
    backlog: Arc<PortBacklog>,
    guardrails: Guardrails,
    /// The client secret and the secret-named environment values.
    redactor: Redactor,
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
            guardrails: Guardrails::default(),
            redactor,
        }
    }

    /// Apply the admission and destination rules of `guard`.
    pub fn with_guardrails(mut self, guardrails: Guardrails) -> Self {
        self.guardrails = guardrails;
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
    pub fn report_backlog(&self) -> Arc<PortBacklog> {
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
            #[cfg(feature = "fault-injection")]
            Ok(admitted) => {
                abort_on_chosen_run(admitted.1.run_id());
                admitted
            }
            #[cfg(not(feature = "fault-injection"))]
            Ok(admitted) => admitted,
            Err(mut skipped) => {
                let summary = match &skipped.result {
                    Disposition::Skipped(Skip::Stale(age)) => Some(FailureSummary::Stale {
                        age: *age,
                        max: self.guardrails.max_message_age.map(|d| d.as_secs()).unwrap_or(0),
                    }),
                    Disposition::Skipped(Skip::Ahead(ahead)) => Some(FailureSummary::Ahead {
                        ahead: *ahead,
                        max: self.guardrails.max_clock_skew.as_secs(),
                    }),
                    Disposition::Skipped(Skip::InvalidTimestamp(value)) => {
                        Some(FailureSummary::InvalidTimestamp(value.clone()))
                    }
                    _ => None,
                };
                if let (Some(summary), Some(kind)) = (summary, &skipped.kind) {
                    let run = self.run_reporter(kind);
                    let calls = run.reports().failure(&summary.to_string());
                    run.send_chains(calls).await;
                    skipped.port_errors = run.into_errors();
                }
                return *skipped;
            }
        };
        // No mapping until one is selected.
        let mut outcome = Outcome::of_run(Disposition::Skipped(Skip::NoMapping), kind.clone());
        self.handle(inv, &kind, delivery, &mut outcome).await;
        outcome
    }

    /// Processing `delivery` panicked: report its run as failed (when it is
    /// a run that is ours) and give the outcome the source acks.
    pub async fn internal_error(&self, delivery: &Delivery, panic: &str) -> Outcome {
        self.fail_unprocessed(delivery, &FailureSummary::InternalError.to_string(), panic)
            .await
    }

    /// The source gave `delivery` up without processing it (a message the
    /// agent died on too often): its run is reported as failed with
    /// `summary`, like a panic's ([`Pipeline::internal_error`]).
    pub async fn given_up(&self, delivery: &Delivery, summary: &str) -> Outcome {
        self.fail_unprocessed(delivery, summary, summary).await
    }

    /// Report the run of `delivery` as failed with `summary` (nothing else
    /// done); the outcome is an internal error saying `why`.
    async fn fail_unprocessed(&self, delivery: &Delivery, summary: &str, why: &str) -> Outcome {
        let span = message_span(delivery);
        let work = async {
            let kind = match self.admit(delivery, &span) {
                Ok((_, kind)) => kind,
                Err(skipped) => return *skipped,
            };
            let run = self.run_reporter(&kind);
            let calls = run.reports().failure(summary);
            run.send_chains(calls).await;
            error!(reason = %why, "the run was reported as failed without being processed");
            let port_errors = run.into_errors();
            Outcome {
                port_errors,
                ..Outcome::of_run(Disposition::InternalError(why.to_string()), kind)
            }
        };
        work.instrument(span.clone()).await
    }

    /// The reporter of one run; its calls hide the client secret and the
    /// secret-named environment values until [`Job::learn_secrets`] adds
    /// the run's own.
    fn run_reporter<'a>(&'a self, kind: &'a Kind) -> RunSender<'a, R> {
        let mut run = RunSender::new(&self.reporter, kind, self.config.report.run_logs, &self.backlog)
            .in_order(self.config.recording)
            .detailed(self.config.report.detailed_logging);
        run.redact_with(self.redactor.clone());
        run
    }

    /// What the steps of one run share: its Port calls, the evaluation
    /// context, its warnings and what hides its secrets.
    fn job<'a>(&'a self, kind: &'a Kind) -> Job<'a, R> {
        Job {
            port: self.run_reporter(kind),
            ctx: EvalCtx {
                env: &self.env,
                budget: self.config.budget,
            },
            warnings: Vec::new(),
            redactor: self.redactor.clone(),
        }
    }

    /// The run of an admitted message: select a mapping, decrypt, build the
    /// request, then [`Pipeline::deliver`] it.
    async fn handle(&self, mut inv: Invocation, kind: &Kind, delivery: &Delivery, outcome: &mut Outcome) {
        let mut job = self.job(kind);
        let input = jq::to_val(&inv.message);
        // The set in force now; a reload during this message does not
        // change it.
        let mappings = self.mappings.current();
        let selection = mappings.select(&input, &job.ctx, &mut job.warnings);
        outcome.passed_over = selection.passed_over;
        let Some(mapping) = selection.index.and_then(|i| mappings.get(i)) else {
            info!("no suitable mapping for the message");
            let calls = job.port.reports().unmatched(self.config.report.wf_unmatched_fail);
            job.port.send_chains(calls).await;
            return job.finish(outcome);
        };
        outcome.mapping = Some(mapping.index);
        let input = self.decrypt(&mut inv, mapping, input, outcome);
        job.learn_secrets(self.redactor_for(outcome));
        // The request is built first (no I/O), so that the run logs that
        // precede it can travel while the target is called: their order
        // stays as it was, but a run no longer waits for three Port round
        // trips before its request goes out (nor its status for them).
        let built = self.build(&inv, mapping, &input, &mut job);
        outcome.result = match built {
            Ok((spec, mut request)) => {
                if self.config.idempotency_headers {
                    request.add_idempotency_headers(kind.run_id(), &idempotency_key(kind, delivery));
                }
                request.note_secrets(&job.redactor);
                self.deliver(&inv, mapping, &spec, &request, &mut job).await
            }
            Err(error) => {
                let summary = error.summary().redacted(&job.redactor);
                warn!(error = %summary, "request was not sent");
                job.fail(&[LogLine::Received, LogLine::Preparing], summary).await
            }
        };
        job.finish(outcome);
    }
}

/// The `Idempotency-Key` of a request: the run id, or where the message
/// came from.
fn idempotency_key(kind: &Kind, delivery: &Delivery) -> String {
    match kind.run_id() {
        Some(id) => id.to_string(),
        None => format!("{}-{}-{}", delivery.topic, delivery.partition, delivery.offset),
    }
}

/// The runner of every source hands each delivery to the pipeline.
impl<I: Invoker + 'static, R: Reporter + 'static> Process for Pipeline<I, R> {
    async fn process(&self, delivery: &Delivery) -> Outcome {
        Pipeline::process(self, delivery).await
    }

    async fn internal_error(&self, delivery: &Delivery, panic: &str) -> Outcome {
        Pipeline::internal_error(self, delivery, panic).await
    }

    async fn given_up(&self, delivery: &Delivery, summary: &str) -> Outcome {
        Pipeline::given_up(self, delivery, summary).await
    }
}

/// Test builds only (`--features fault-injection`, which release builds and
/// the image never enable): abort the process, as an OOM kill or a crash
/// nobody foresaw would, when the run is the one named by
/// `PORT_AGENT_FAULT_ABORT_RUN_ID` (the crash-loop test).
#[cfg(feature = "fault-injection")]
fn abort_on_chosen_run(run_id: Option<&str>) {
    if let (Some(id), Ok(chosen)) = (run_id, std::env::var("PORT_AGENT_FAULT_ABORT_RUN_ID")) {
        if id == chosen {
            eprintln!("fault injection: aborting the process on run {id}");
            std::process::abort();
        }
    }
}
