//! The steps of one admitted message after selection: decrypt, build and
//! check the request, deliver it, and report what the target answered;
//! [`Job`] is what they share.

use serde_json::Value;
use tracing::{debug, info, warn};

use super::sending::RunSender;
use super::{now_secs, Pipeline};
use crate::decrypt::decrypt_fields;
use crate::invoke::{InvalidRequest, InvokeError, Invoker, OutgoingRequest, TargetResponse};
use crate::mapping::{build_request_from, jq, BuildError, Defaults, EvalCtx, Mapping, RequestSpec, Warning};
use crate::message::{Invocation, Kind};
use crate::outcome::{Disposition, Outcome};
use crate::port::Reporter;
use crate::redact::Redactor;
use crate::report::{self, Chains, FailureSummary, LogLine, ReportPlan};
use crate::secret::Secret;
use crate::telemetry::metrics;

impl<I: Invoker, R: Reporter> Pipeline<I, R> {
    /// Send the request while its first run-log lines travel, then report
    /// how the target answered: the response and the status go out at
    /// once, while the log chain posts its other lines after the first
    /// ones (SPEC §7: each chain in order; the logs never delay the status).
    pub(super) async fn deliver(
        &self,
        inv: &Invocation,
        mapping: &Mapping,
        spec: &RequestSpec,
        request: &OutgoingRequest,
        job: &mut Job<'_, R>,
    ) -> Disposition {
        let port = &job.port;
        let reports = port.reports();
        let first = reports.log(&[LogLine::Received, LogLine::Preparing, LogLine::Sending]);
        let (ctx, warnings, redactor) = (&job.ctx, &mut job.warnings, &job.redactor);
        let answered = async {
            let sent = self.invoker.send(request).await;
            let answered = Answered {
                reports,
                inv,
                mapping,
                spec,
                request,
                ctx,
                redactor,
            };
            self.answered(&answered, sent, warnings)
        };
        port.send_after(first, answered).await
    }

    /// What to report once the target answered (or could not be reached).
    fn answered(
        &self,
        a: &Answered<'_>,
        sent: Result<TargetResponse, InvokeError>,
        warnings: &mut Vec<Warning>,
    ) -> (Chains, Disposition) {
        let reports = a.reports;
        let answer = match sent {
            Ok(answer) => answer,
            Err(e) => {
                let message = a.redactor.text(&e.message);
                warn!(error = %message, attempts = e.attempts, "target request failed");
                let summary = FailureSummary::InvokeFailed(message.clone());
                let chains = reports.request_failed(LogLine::InvocationFailed(message), &summary.to_string());
                return (chains, Disposition::RequestFailed(summary));
            }
        };
        let response = &answer.response;
        if self.config.recording {
            debug!(status = response.status, method = %a.request.method, "request recorded, not sent; the assumed answer is used");
        } else {
            info!(status = response.status, method = %a.request.method, truncated = answer.truncated, "target answered");
        }
        let synchronized = a.inv.synchronized();
        // An action run's status: the default, with the mapping's overrides.
        let action_report = matches!(reports.kind, Kind::ActionRun(_)).then(|| {
            let report = report::default_report(synchronized, response, self.config.report.detailed_logging);
            report::apply_report_mapping(
                a.mapping,
                report,
                &a.inv.message,
                a.spec,
                response,
                a.ctx,
                warnings,
            )
        });
        let line = LogLine::answered(
            response,
            answer.truncated,
            self.config.report.detailed_logging,
            a.redactor,
        );
        let chains = reports.answered(line, synchronized, response, action_report);
        (chains, Disposition::Delivered(response.status))
    }

    /// Decrypt the mapping's `fieldsToDecryptPaths` in the message; the
    /// plaintexts become the outcome's secrets. Returns the jq input of the
    /// (possibly changed) message.
    pub(super) fn decrypt(
        &self,
        inv: &mut Invocation,
        mapping: &Mapping,
        input: jq::Val,
        outcome: &mut Outcome,
    ) -> jq::Val {
        let decrypted = decrypt_fields(&mut inv.message, &mapping.decrypt_paths, self.secret());
        for (path, error) in &decrypted.failures {
            warn!(path = %path, error = %error, "could not decrypt a field; it is left unchanged");
            // Also in the message's warnings (dry-run and render show them).
            outcome.warnings.push(format!(
                "mapping #{}, fieldsToDecryptPaths '{path}': could not decrypt: {error}; the field is left unchanged",
                mapping.index
            ));
        }
        let changed = !decrypted.plaintexts.is_empty();
        outcome.secrets = decrypted.plaintexts.into_iter().map(Secret::new).collect();
        // Decryption changed the message: convert it again.
        if changed {
            jq::to_val(&inv.message)
        } else {
            input
        }
    }

    /// Build, sign and check the request; `Err` says why it is not sent
    /// (its text is the run's failure summary).
    pub(super) fn build(
        &self,
        inv: &Invocation,
        mapping: &Mapping,
        input: &jq::Val,
        job: &mut Job<'_, R>,
    ) -> Result<(RequestSpec, OutgoingRequest), NotBuilt> {
        let defaults = Defaults {
            method: inv.method.get("method").and_then(Value::as_str),
            url: inv.method.get("url").and_then(Value::as_str),
        };
        let spec = build_request_from(
            mapping,
            &inv.message,
            input,
            &defaults,
            &job.ctx,
            &mut job.warnings,
        )
        .map_err(|e| {
            metrics::mapping_error(mapping.index, e.field());
            NotBuilt::Mapping(e)
        })?;
        let timestamp = self.config.fixed_timestamp.unwrap_or_else(now_secs);
        let request = OutgoingRequest::build(&spec, self.secret(), timestamp).map_err(NotBuilt::Request)?;
        self.check_allowed(&request)?;
        Ok((spec, request))
    }

    /// `Err` when `AGENT_ALLOWED_TARGETS` is set and the request's URL is
    /// not on it.
    fn check_allowed(&self, request: &OutgoingRequest) -> Result<(), NotBuilt> {
        let Some(list) = &self.guardrails.allowed_targets else {
            return Ok(());
        };
        match url::Url::parse(&request.url) {
            Ok(u) if list.allows(&u) => Ok(()),
            Ok(u) => Err(NotBuilt::NotAllowed(
                u.host_str().unwrap_or("(no host)").to_string(),
            )),
            Err(e) => Err(NotBuilt::Url(e)),
        }
    }

    fn secret(&self) -> &str {
        self.config.secret.as_ref().map(Secret::expose).unwrap_or("")
    }
}

/// Why a run's request is not sent.
#[derive(Debug)]
pub(super) enum NotBuilt {
    /// The mapping failed to build it.
    Mapping(BuildError),
    /// What the mapping built is not a request the client sends.
    Request(InvalidRequest),
    /// The URL does not parse (checked against the allow list).
    Url(url::ParseError),
    /// The URL's host is not on `AGENT_ALLOWED_TARGETS`.
    NotAllowed(String),
}

impl NotBuilt {
    /// The run's failure summary.
    pub(super) fn summary(&self) -> FailureSummary {
        match self {
            NotBuilt::Mapping(e) => FailureSummary::BuildFailed(e.to_string()),
            NotBuilt::Request(e) => FailureSummary::BuildFailed(e.to_string()),
            NotBuilt::Url(e) => FailureSummary::BuildFailed(format!("invalid URL: {e}")),
            NotBuilt::NotAllowed(host) => FailureSummary::TargetNotAllowed(host.clone()),
        }
    }
}

/// What [`Pipeline::answered`] reads about the run.
struct Answered<'a> {
    reports: ReportPlan<'a>,
    inv: &'a Invocation,
    mapping: &'a Mapping,
    spec: &'a RequestSpec,
    request: &'a OutgoingRequest,
    ctx: &'a EvalCtx<'a>,
    redactor: &'a Redactor,
}

/// What the steps of one admitted message share.
pub(super) struct Job<'a, R> {
    /// Where the run's Port calls go.
    pub(super) port: RunSender<'a, R>,
    /// The context of the mapping's expressions.
    pub(super) ctx: EvalCtx<'a>,
    /// Runtime warnings of the mapping's expressions.
    pub(super) warnings: Vec<Warning>,
    /// What hides the secrets met so far (see [`Job::learn_secrets`]).
    pub(super) redactor: Redactor,
}

impl<R: Reporter> Job<'_, R> {
    /// From now on, hide `redactor`'s secrets (the run's decrypted values
    /// besides the agent's) in the warnings, errors and every Port call.
    pub(super) fn learn_secrets(&mut self, redactor: Redactor) {
        self.port.redact_with(redactor.clone());
        self.redactor = redactor;
    }

    /// The request was not sent: post the progress `lines`, fail the run
    /// with `summary` (redacted).
    pub(super) async fn fail(&mut self, lines: &[LogLine], summary: FailureSummary) -> Disposition {
        let reports = self.port.reports();
        let mut chains = reports.failure(&summary.to_string());
        let mut logs = reports.log(lines);
        logs.append(&mut chains.logs);
        chains.logs = logs;
        self.port.send_chains(chains).await;
        Disposition::RequestFailed(summary)
    }

    /// Record the warnings (redacted: jq error texts quote the values they
    /// failed on, which may be decrypted or taken from a secret variable)
    /// and the Port errors.
    pub(super) fn finish(self, outcome: &mut Outcome) {
        for w in &self.warnings {
            metrics::mapping_error(w.index, &w.field);
            let error = self.redactor.text(&w.message);
            warn!(mapping = w.index, field = %w.field, error = %error, "mapping expression failed; using null");
        }
        // After the warnings already there (a field that failed to decrypt).
        outcome
            .warnings
            .extend(self.warnings.iter().map(|w| self.redactor.text(&w.to_string())));
        outcome.port_errors = self.port.into_errors();
    }
}
