//! A run's Port calls as two chains ([`Chains`]): the log lines, and the
//! result calls with the lines their outcomes bring.

use crate::port::PortCall;

/// A run's Port calls as two chains, side by side: the log chain posts
/// `logs`, then for each call of `result` the lines its outcome brings
/// (once Port answered it), then `closing`; the result chain makes the
/// `result` calls one after another and never waits for a log line. So
/// the lines keep the Python agent's order, a line about a call (the
/// response "was reported successfully ") comes after that call, and the
/// run is done when both chains are.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Chains {
    /// Run-log lines posted first, in order.
    pub logs: Vec<PortCall>,
    /// The result: the response (synchronous action runs), then the status.
    pub result: Vec<ResultCall>,
    /// Run-log lines posted last, after the lines of every result call.
    pub closing: Vec<PortCall>,
}

/// A call of the result chain, and the run-log lines its outcome brings.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultCall {
    /// The call.
    pub call: PortCall,
    /// Lines posted once Port accepted it.
    pub accepted: Vec<PortCall>,
    /// The line posted once Port refused it for good, quoting Port's status
    /// (and answer, with `DETAILED_LOGGING`).
    pub refused: Option<Refused>,
}

impl ResultCall {
    /// A call whose outcome brings no line.
    pub fn quiet(call: PortCall) -> ResultCall {
        ResultCall {
            call,
            accepted: Vec::new(),
            refused: None,
        }
    }
}

/// Which call Port refused, for the line that says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The run's response ([`super::LogLine::ResponseNotReported`]).
    Response,
    /// The run's status ([`super::LogLine::StateNotReported`]).
    State,
}

impl Chains {
    /// Both chains as one list, as they go when Port accepts every call:
    /// the first lines, each result call followed by its lines, then the
    /// closing lines (what dry-run and render show: the order of the
    /// Python agent, whose calls were one sequence).
    pub fn in_order(self) -> Vec<PortCall> {
        let mut calls = self.logs;
        for r in self.result {
            calls.push(r.call);
            calls.extend(r.accepted);
        }
        calls.extend(self.closing);
        calls
    }
}
