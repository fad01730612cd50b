//! Typed values from the environment's strings, with one-line errors that
//! name the variable and say what was expected (never echoing a secret).

use std::time::Duration;

use std::collections::HashMap;

use super::SettingsError;

/// Parse the compat boolean spelling: `true/false/1/0/yes/no/on/off/t/f/y/n`.
pub fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" | "t" | "y" => Some(true),
        "false" | "0" | "no" | "off" | "f" | "n" => Some(false),
        _ => None,
    }
}

/// The environment's variables by name (in any case, as the Python agent's
/// settings library read them); each setting takes its own once, by the
/// name written once where the setting is read.
pub(super) struct Vars(HashMap<String, String>);

impl Vars {
    /// The variables given.
    pub(super) fn new(vars: HashMap<String, String>) -> Vars {
        Vars(
            vars.into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect(),
        )
    }

    /// `name`'s value as set (possibly empty).
    pub(super) fn raw(&mut self, name: &'static str) -> Option<String> {
        self.0.remove(&name.to_ascii_lowercase())
    }

    /// Is `name` set (possibly empty)?
    pub(super) fn is_set(&self, name: &'static str) -> bool {
        self.0.contains_key(&name.to_ascii_lowercase())
    }

    /// `name`'s value, unless unset or blank.
    pub(super) fn present(&mut self, name: &'static str) -> Option<String> {
        present(self.raw(name))
    }

    /// `name` as a boolean ([`parse_bool`]), `default` when unset.
    pub(super) fn boolean(&mut self, name: &'static str, default: bool) -> Result<bool, SettingsError> {
        boolean(name, self.raw(name), default)
    }

    /// `name` as a number; `what` says what was expected.
    pub(super) fn number<T: std::str::FromStr>(
        &mut self,
        name: &'static str,
        default: T,
        what: &str,
    ) -> Result<T, SettingsError> {
        number(name, self.raw(name), default, what)
    }

    /// `name` as a non-negative number of seconds.
    pub(super) fn seconds(&mut self, name: &'static str, default: f64) -> Result<Duration, SettingsError> {
        seconds(name, self.raw(name), default)
    }

    /// `name` as [`RunLogs`], `default` when unset.
    pub(super) fn run_logs(
        &mut self,
        name: &'static str,
        default: RunLogs,
    ) -> Result<RunLogs, SettingsError> {
        run_logs(name, self.raw(name), default)
    }
}

pub(super) fn err(variable: &'static str, problem: impl Into<String>) -> SettingsError {
    SettingsError {
        variable,
        problem: problem.into(),
    }
}

/// Treat an empty string like an unset variable.
pub(super) fn present(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

pub(super) fn boolean(
    var: &'static str,
    value: Option<String>,
    default: bool,
) -> Result<bool, SettingsError> {
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

/// `AGENT_RUN_LOGS`: `all`, `minimal`, `off` or a boolean, in any case.
pub(super) fn run_logs(
    var: &'static str,
    value: Option<String>,
    default: RunLogs,
) -> Result<RunLogs, SettingsError> {
    match present(value) {
        None => Ok(default),
        Some(v) => {
            RunLogs::parse(&v).ok_or_else(|| err(var, format!("expected {}, got '{v}'", RunLogs::EXPECTED)))
        }
    }
}

pub(super) fn number<T: std::str::FromStr>(
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

pub(super) fn seconds(
    var: &'static str,
    value: Option<String>,
    default: f64,
) -> Result<Duration, SettingsError> {
    let s: f64 = number(var, value, default, "a number of seconds")?;
    Duration::try_from_secs_f64(s)
        .map_err(|_| err(var, format!("expected a non-negative number of seconds, got {s}")))
}

/// Which run-log lines are posted (`AGENT_RUN_LOGS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunLogs {
    /// Every line the Python agent posts, in its order (`all`, or a true
    /// boolean): five per answered asynchronous action run, seven for a
    /// synchronous one with a response body, four for a node run.
    All,
    /// Only the line that says how the run ended (`minimal`): one per run
    /// that `All` posts lines for (see `report::ReportPlan`).
    Minimal,
    /// None (`off`, or a false boolean).
    Off,
}

impl RunLogs {
    /// The accepted spellings, as an error message lists them.
    pub const EXPECTED: &'static str = "all, minimal or off (or a boolean: true = all, false = off)";

    /// Parse `all`, `minimal`, `off` or a compat boolean, in any case.
    pub fn parse(value: &str) -> Option<RunLogs> {
        match value.trim().to_ascii_lowercase().as_str() {
            "all" => Some(RunLogs::All),
            "minimal" => Some(RunLogs::Minimal),
            other => parse_bool(other).map(|on| if on { RunLogs::All } else { RunLogs::Off }),
        }
    }
}
