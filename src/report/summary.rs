//! Every failure summary the agent reports to Port (an action run's
//! `FAILURE` `summary`), worded in one place: [`FailureSummary`].

use std::fmt;

use crate::redact::Redactor;

/// Why a run failed, as its summary says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureSummary {
    /// Processing the run panicked.
    InternalError,
    /// The target answered with a status that is not 2xx.
    Answered {
        /// The status.
        status: u16,
        /// Where an unfollowed redirect pointed.
        location: Option<String>,
        /// The answer's text (with `DETAILED_LOGGING`, when not empty).
        response: Option<String>,
    },
    /// The request could not be delivered: why (redacted).
    InvokeFailed(String),
    /// The request could not be built: why (the mapping's error, or what
    /// the HTTP client would refuse).
    BuildFailed(String),
    /// The request's host is not on `AGENT_ALLOWED_TARGETS`.
    TargetNotAllowed(String),
    /// The message was signed longer ago than the replay window allows.
    Stale {
        /// Its age, in seconds.
        age: u64,
        /// `AGENT_MAX_MESSAGE_AGE_SECONDS`.
        max: u64,
    },
    /// The message is dated further ahead than the clock skew allows.
    Ahead {
        /// How far ahead, in seconds.
        ahead: u64,
        /// `AGENT_MAX_CLOCK_SKEW_SECONDS`.
        max: u64,
    },
    /// The message's `X-Port-Timestamp` is not a whole number of seconds
    /// (as written, shortened).
    InvalidTimestamp(String),
    /// The agent died this many times while processing the run (Kafka's
    /// crash-loop guard gave it up).
    GivenUp(u32),
    /// A run claimed from Port could not be processed (polling).
    NotProcessed,
    /// A run claimed from Port cannot be read: why.
    Unreadable(String),
    /// The run was still running when the shutdown drain timed out.
    DrainTimeout,
    /// The run was acked and still in flight at a second stop signal.
    SecondSignal,
}

impl FailureSummary {
    /// The same summary with every secret `redactor` knows hidden in the
    /// texts it quotes.
    pub fn redacted(&self, redactor: &Redactor) -> FailureSummary {
        let hide = |text: &str| redactor.text(text);
        match self {
            FailureSummary::Answered {
                status,
                location,
                response,
            } => FailureSummary::Answered {
                status: *status,
                location: location.as_deref().map(hide),
                response: response.as_deref().map(hide),
            },
            FailureSummary::InvokeFailed(why) => FailureSummary::InvokeFailed(hide(why)),
            FailureSummary::BuildFailed(why) => FailureSummary::BuildFailed(hide(why)),
            FailureSummary::TargetNotAllowed(host) => FailureSummary::TargetNotAllowed(hide(host)),
            FailureSummary::InvalidTimestamp(value) => FailureSummary::InvalidTimestamp(hide(value)),
            FailureSummary::Unreadable(why) => FailureSummary::Unreadable(hide(why)),
            other => other.clone(),
        }
    }
}

impl fmt::Display for FailureSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailureSummary::InternalError => f.write_str("Internal error in the agent while processing this run"),
            FailureSummary::Answered {
                status,
                location,
                response,
            } => {
                write!(f, "Failed to invoke the webhook with status code: {status}.")?;
                if let Some(location) = location {
                    write!(f, " Location: {location}")?;
                }
                match response {
                    Some(text) => write!(f, " Response: {text}"),
                    None => Ok(()),
                }
            }
            FailureSummary::InvokeFailed(why) => write!(f, "Failed to invoke the webhook: {why}"),
            FailureSummary::BuildFailed(why) => write!(f, "Failed to build the request: {why}"),
            FailureSummary::TargetNotAllowed(host) => {
                write!(f, "target not allowed by AGENT_ALLOWED_TARGETS: {host}")
            }
            FailureSummary::Stale { age, max } => write!(
                f,
                "The agent did not run this action: its message was signed {age} s ago, \
                 longer ago than AGENT_MAX_MESSAGE_AGE_SECONDS ({max} s) allows. Run it again from Port."
            ),
            FailureSummary::Ahead { ahead, max } => write!(
                f,
                "The agent did not run this action: its message is dated {ahead} s in the future, \
                 more than AGENT_MAX_CLOCK_SKEW_SECONDS ({max} s) allows. Check the clocks, then run it again from Port."
            ),
            FailureSummary::InvalidTimestamp(value) => write!(
                f,
                "The agent did not run this action: its message's X-Port-Timestamp '{value}' is not a whole \
                 number of seconds, so AGENT_MAX_MESSAGE_AGE_SECONDS cannot be checked. Run it again from Port."
            ),
            FailureSummary::GivenUp(deaths) => {
                write!(f, "the agent stopped {deaths} times while processing this run")
            }
            FailureSummary::NotProcessed => f.write_str("Agent failed to process the run"),
            FailureSummary::Unreadable(why) => write!(f, "The agent could not read the run Port handed out: {why}"),
            FailureSummary::DrainTimeout => f.write_str(
                "The agent stopped before the run finished (shutdown drain timeout); the request may have reached the target",
            ),
            FailureSummary::SecondSignal => f.write_str(
                "The agent was stopped before the run finished (a second stop signal); the request may have reached the target",
            ),
        }
    }
}
