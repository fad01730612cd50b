//! What happened to one message ([`Outcome`]): it drives offsets, the
//! dead-letter queue, metrics and the dry-run summary.

use crate::mapping::PassedOver;
use crate::message::Kind;
use crate::port::PortError;
use crate::report::FailureSummary;
use crate::secret::Secret;

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
    /// Signed further ahead of the agent's clock than
    /// `AGENT_MAX_CLOCK_SKEW_SECONDS` allows (with the replay window on):
    /// how many seconds ahead. Named `stale` too.
    Ahead(u64),
    /// With the replay window on, a signed message whose `X-Port-Timestamp`
    /// is missing or not a non-negative whole number of seconds: the value
    /// as written (at most 64 characters).
    InvalidTimestamp(String),
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
            Skip::Stale(_) | Skip::Ahead(_) => "stale",
            Skip::InvalidTimestamp(_) => "invalid_timestamp",
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
            Skip::Ahead(ahead) => write!(
                f,
                "the message is dated {ahead} s in the future, more than AGENT_MAX_CLOCK_SKEW_SECONDS allows"
            ),
            Skip::InvalidTimestamp(value) => write!(
                f,
                "its X-Port-Timestamp '{value}' is not a whole number of seconds (AGENT_MAX_MESSAGE_AGE_SECONDS is set)"
            ),
        }
    }
}

/// What became of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// The target answered with this status (2xx or not); reports were made.
    Delivered(u16),
    /// The request could not be built or sent; FAILURE was reported with
    /// this summary (its quoted texts redacted).
    RequestFailed(FailureSummary),
    /// Not sent, for this reason.
    Skipped(Skip),
    /// Processing panicked (a bug in the agent); FAILURE was reported.
    InternalError(String),
}

/// The outcome of processing one message: drives offsets, metrics and the
/// dry-run summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// What happened.
    pub result: Disposition,
    /// The run id, when there is one.
    pub run_id: Option<String>,
    /// The kind of invocation, when known.
    pub kind: Option<Kind>,
    /// The selected mapping.
    pub mapping: Option<usize>,
    /// The mappings before it that were passed over, and why (`render`
    /// shows them).
    pub passed_over: Vec<PassedOver>,
    /// Port calls that failed after retries.
    pub port_errors: Vec<PortError>,
    /// Mapping runtime warnings.
    pub warnings: Vec<String>,
    /// Decrypted values, so that displays can redact them (`Debug` hides them).
    pub secrets: Vec<Secret>,
}

impl Outcome {
    /// Not sent, for `skip`; nothing else known.
    pub(crate) fn skipped(skip: Skip) -> Outcome {
        Outcome::new(Disposition::Skipped(skip))
    }

    /// What happened to run `kind`; nothing else known yet.
    pub(crate) fn of_run(result: Disposition, kind: Kind) -> Outcome {
        Outcome {
            run_id: kind.run_id().map(str::to_string),
            kind: Some(kind),
            ..Outcome::new(result)
        }
    }

    /// `result`, and nothing else known.
    pub fn new(result: Disposition) -> Outcome {
        Outcome {
            result,
            run_id: None,
            kind: None,
            mapping: None,
            passed_over: Vec::new(),
            port_errors: Vec::new(),
            warnings: Vec::new(),
            secrets: Vec::new(),
        }
    }

    /// Stable short name of the outcome (metrics, dry-run).
    pub fn name(&self) -> &'static str {
        match &self.result {
            Disposition::Delivered(s) if (200..300).contains(s) => "delivered",
            Disposition::Delivered(_) => "target_error",
            Disposition::RequestFailed(_) => "request_failed",
            Disposition::Skipped(s) => s.name(),
            Disposition::InternalError(_) => "internal_error",
        }
    }

    /// Every name [`Outcome::name`] can give (metrics start at 0 for each).
    pub const NAMES: [&'static str; 12] = [
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
        "invalid_timestamp",
    ];

    /// Could not be processed, or Port refused its report: a DLQ candidate.
    pub fn needs_dead_letter(&self) -> bool {
        matches!(
            self.result,
            Disposition::Skipped(
                Skip::Unparsable(_) | Skip::Stale(_) | Skip::Ahead(_) | Skip::InvalidTimestamp(_)
            ) | Disposition::InternalError(_)
        ) || !self.port_errors.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_names_lists_every_outcome_once() {
        let results = [
            Disposition::Delivered(200),
            Disposition::Delivered(500),
            Disposition::RequestFailed(FailureSummary::InvokeFailed(String::new())),
            Disposition::InternalError(String::new()),
            Disposition::Skipped(Skip::Unparsable(String::new())),
            Disposition::Skipped(Skip::NotForAgent),
            Disposition::Skipped(Skip::MissingSignature),
            Disposition::Skipped(Skip::BadSignature),
            Disposition::Skipped(Skip::NoMapping),
            Disposition::Skipped(Skip::NoInvocation),
            Disposition::Skipped(Skip::Stale(1)),
            Disposition::Skipped(Skip::InvalidTimestamp(String::new())),
        ];
        let names: Vec<&str> = results
            .into_iter()
            .map(|result| Outcome::new(result).name())
            .collect();
        assert_eq!(names, Outcome::NAMES.to_vec());
    }
}
