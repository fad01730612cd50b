//! Admission: whether a delivery is a run of ours to act on (parsed, for
//! the agent, signature checked, inside the replay window), and the
//! operator's [`Guardrails`] (`AGENT_MAX_MESSAGE_AGE_SECONDS`,
//! `AGENT_MAX_CLOCK_SKEW_SECONDS`, `AGENT_ALLOWED_TARGETS`).

use std::time::Duration;

use serde_json::Value;
use tracing::{info, warn};

use super::{now_secs, Pipeline};
use crate::delivery::{Delivery, Trust};
use crate::guard::AllowList;
use crate::invoke::Invoker;
use crate::message::{Invocation, Kind, TopicKind};
use crate::outcome::{Outcome, Skip};
use crate::port::Reporter;
use crate::settings::Settings;
use crate::signature::{self, SignatureError};

/// Rules that keep messages and requests inside what the operator allows
/// (`AGENT_MAX_MESSAGE_AGE_SECONDS` with `AGENT_MAX_CLOCK_SKEW_SECONDS`,
/// `AGENT_ALLOWED_TARGETS`); both off by default.
#[derive(Debug, Clone)]
pub struct Guardrails {
    /// Signed messages older than this are skipped as stale.
    pub max_message_age: Option<Duration>,
    /// With `max_message_age`: signed messages dated further ahead than
    /// this are stale too.
    pub max_clock_skew: Duration,
    /// Target requests may only go to these URLs.
    pub allowed_targets: Option<AllowList>,
}

/// Default of `AGENT_MAX_CLOCK_SKEW_SECONDS`.
pub const DEFAULT_MAX_CLOCK_SKEW: Duration = Duration::from_secs(300);

impl Default for Guardrails {
    fn default() -> Guardrails {
        Guardrails {
            max_message_age: None,
            max_clock_skew: DEFAULT_MAX_CLOCK_SKEW,
            allowed_targets: None,
        }
    }
}

impl Guardrails {
    /// From settings.
    pub fn from_settings(s: &Settings) -> Guardrails {
        Guardrails {
            max_message_age: s.limits.max_message_age,
            max_clock_skew: s.limits.max_clock_skew,
            allowed_targets: s.target.allowed_targets.clone(),
        }
    }

    /// The replay window's verdict on a message signed at `signed_at`
    /// (its `X-Port-Timestamp`, see [`signed_at_seconds`]) when the clock
    /// says `now`: `None` when it may run.
    pub(super) fn replay_verdict(
        &self,
        signed_at: Result<Option<u64>, BadTimestamp>,
        now: u64,
    ) -> Option<Skip> {
        let max = self.max_message_age?;
        let at = match signed_at {
            Ok(Some(at)) => at,
            Ok(None) => return Some(Skip::InvalidTimestamp("(missing)".into())),
            Err(BadTimestamp(text)) => return Some(Skip::InvalidTimestamp(text)),
        };
        if at > now.saturating_add(self.max_clock_skew.as_secs()) {
            return Some(Skip::Ahead(at - now));
        }
        let age = now.saturating_sub(at);
        (age > max.as_secs()).then_some(Skip::Stale(age))
    }

    /// The warning for a message the replay window skipped.
    pub(super) fn log_replay_skip(&self, skip: &Skip) {
        let max_age = self.max_message_age.map(|d| d.as_secs()).unwrap_or(0);
        let skew = self.max_clock_skew.as_secs();
        match skip {
            Skip::Stale(age) => warn!(
                age_seconds = age,
                max_age_seconds = max_age,
                "skipping message: signed longer ago than AGENT_MAX_MESSAGE_AGE_SECONDS"
            ),
            Skip::Ahead(ahead) => warn!(
                ahead_seconds = ahead,
                max_clock_skew_seconds = skew,
                "skipping message: dated further in the future than AGENT_MAX_CLOCK_SKEW_SECONDS"
            ),
            Skip::InvalidTimestamp(value) => warn!(
                timestamp = %value.escape_debug(),
                "skipping message: its X-Port-Timestamp is not a whole number of seconds"
            ),
            _ => {}
        }
    }
}

/// Longest timestamp text kept in a skip reason, a log line or a summary.
const MAX_SHOWN_TIMESTAMP: usize = 64;

/// An `X-Port-Timestamp` that is not a whole number of seconds: the text as
/// written, shortened to [`MAX_SHOWN_TIMESTAMP`] characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct BadTimestamp(String);

/// `.headers["X-Port-Timestamp"]` in Unix seconds: `Ok(None)` when absent,
/// `Err(the text as written, shortened)` when it is not a non-negative whole
/// number of seconds (a JSON integer or a string of digits; no sign,
/// fraction, exponent or spaces).
fn signed_at_seconds(message: &Value) -> Result<Option<u64>, BadTimestamp> {
    let Some(value) = message.pointer("/headers/X-Port-Timestamp") else {
        return Ok(None);
    };
    let text = match value {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    match text.parse::<u64>() {
        Ok(at) if digits => Ok(Some(at)),
        _ => Err(BadTimestamp(text.chars().take(MAX_SHOWN_TIMESTAMP).collect())),
    }
}

impl<I: Invoker, R: Reporter> Pipeline<I, R> {
    /// Parse the message and decide whether it is ours to run (for the
    /// agent, signature checked, a run or an invocation URL).
    pub(super) fn admit(
        &self,
        delivery: &Delivery,
        span: &tracing::Span,
    ) -> Result<(Invocation, Kind), Box<Outcome>> {
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
        let signed_at = signed_topic.then(|| signed_at_seconds(&inv.message));
        if signed_topic {
            let gitlab = inv.is_gitlab();
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
        if let Some(skip) = signed_at.and_then(|at| self.guardrails.replay_verdict(at, now_secs())) {
            self.guardrails.log_replay_skip(&skip);
            return Err(Box::new(skipped(skip)));
        }
        let Some(kind) = kind.clone() else {
            warn!("skipping message: neither a run id nor an invocation URL");
            return Err(Box::new(Outcome::skipped(Skip::NoInvocation)));
        };
        Ok((inv, kind))
    }
}
