//! One message through the pipeline's own steps with nothing sent
//! (`check --messages`): admit, select, decrypt, build, and the report
//! mapping against an assumed answer. What each step's expressions failed
//! on is returned instead of reported.

use serde_json::Value;

use super::steps::NotBuilt;
use super::{message_span, Pipeline};
use crate::delivery::Delivery;
use crate::http::ResponseContext;
use crate::invoke::Invoker;
use crate::mapping::{jq, Warning};
use crate::outcome::{Disposition, Outcome, Skip};
use crate::port::Reporter;
use crate::redact::Redactor;
use crate::report::{apply_report_mapping, RunPatchBody};

/// What the pipeline's steps make of one message.
#[derive(Debug)]
pub struct Evaluation {
    /// Why the message is not a run the agent would act on (then nothing
    /// else was evaluated).
    pub skipped: Option<Skip>,
    /// The mapping it selects.
    pub mapping: Option<usize>,
    /// Each evaluation that failed (selection, request, report mapping).
    pub warnings: Vec<Warning>,
    /// Hides the secrets the message met (its decrypted values included).
    pub redactor: Redactor,
    /// `.context.runId`.
    pub run_id: Option<String>,
    /// `.action`.
    pub action: Option<String>,
}

impl<I: Invoker, R: Reporter> Pipeline<I, R> {
    /// Evaluate `delivery` as [`Pipeline::process`] would, sending nothing
    /// and assuming the target answers `assumed`.
    pub fn evaluate(&self, delivery: &Delivery, assumed: &ResponseContext) -> Evaluation {
        let span = message_span(delivery);
        let mut evaluation = Evaluation {
            skipped: None,
            mapping: None,
            warnings: Vec::new(),
            redactor: self.redactor.clone(),
            run_id: None,
            action: None,
        };
        let (mut inv, kind) = match self.admit(delivery, &span) {
            Ok(admitted) => admitted,
            Err(skipped) => {
                if let Disposition::Skipped(skip) = skipped.result {
                    evaluation.skipped = Some(skip);
                }
                return evaluation;
            }
        };
        evaluation.run_id = inv.run_id().map(str::to_string);
        evaluation.action = inv
            .message
            .get("action")
            .and_then(Value::as_str)
            .map(str::to_string);
        let mut job = self.job(&kind);
        let input = jq::to_val(&inv.message);
        let mappings = self.mappings.current();
        let selection = mappings.select(&input, &job.ctx, &mut job.warnings);
        if let Some(mapping) = selection.index.and_then(|i| mappings.get(i)) {
            evaluation.mapping = Some(mapping.index);
            let mut outcome = Outcome::of_run(Disposition::Skipped(Skip::NoMapping), kind.clone());
            let input = self.decrypt(&mut inv, mapping, input, &mut outcome);
            evaluation.redactor = self.redactor_for(&outcome);
            match self.build(&inv, mapping, &input, &mut job) {
                Ok((spec, _)) => {
                    let default = RunPatchBody::default();
                    apply_report_mapping(
                        mapping,
                        default,
                        &inv.message,
                        &spec,
                        assumed,
                        &job.ctx,
                        &mut job.warnings,
                    );
                }
                Err(NotBuilt::Mapping(e)) => job.warnings.push(Warning {
                    index: mapping.index,
                    field: e.field().to_string(),
                    message: e.to_string(),
                }),
                // Not a mapping's failure: the run would fail with it.
                Err(_) => {}
            }
        }
        evaluation.warnings = job.warnings;
        evaluation
    }
}
