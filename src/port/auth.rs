//! Port refusing the agent's credentials: a 401 (or 403) on the token call.
//! Settings are read once, so at start-up this can never heal and the agent
//! stops (exit 3, [`Refusal::startup_line`]); after a successful start
//! (credentials rotated or revoked) the [`AuthStatus`] every clone of the
//! client shares makes `/readyz` 503 with [`Refusal::reason`], and
//! [`log_refusals`] says so once a minute until a token is issued again.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::Value;

/// Where US organisations' Port API is (the default is the EU one).
pub const US_API_BASE_URL: &str = "https://api.us.getport.io";

/// How often a refusal after start-up is logged while it lasts.
pub const REFUSAL_LOG_PERIOD: Duration = Duration::from_secs(60);

/// Port refused the credentials on the token call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// 401 or 403.
    pub status: u16,
    /// What Port said, on one line: `error` and `message` of its JSON
    /// answer, else the start of the answer (never the secret).
    pub port_says: String,
    /// `PORT_API_BASE_URL` as the client uses it.
    pub base: String,
}

impl Refusal {
    /// A refusal with Port's answer `body`; any occurrence of `secret` in
    /// it is replaced.
    pub fn new(status: u16, body: &str, base: &str, secret: &str) -> Refusal {
        let said = match serde_json::from_str::<Value>(body) {
            Ok(v) => {
                let field = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
                match (field("error"), field("message")) {
                    (Some(e), Some(m)) => format!("{e}: {m}"),
                    (Some(e), None) => e,
                    (None, Some(m)) => m,
                    (None, None) => body.to_string(),
                }
            }
            Err(_) => body.to_string(),
        };
        let mut said: String = said
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(300)
            .collect();
        if !secret.is_empty() {
            // Every encoding of it, with the marker the rest of the agent uses.
            said = crate::redact::Redactor::new([secret]).text(&said);
        }
        if said.trim().is_empty() {
            said = "(no answer body)".into();
        }
        Refusal {
            status,
            port_says: said.trim().to_string(),
            base: base.to_string(),
        }
    }

    /// The status and Port's words: `401 "invalid_credentials: …"`.
    pub fn answer(&self) -> String {
        format!("{} {:?}", self.status, self.port_says)
    }

    /// The one line the agent stops with when this happens at start-up.
    pub fn startup_line(&self) -> String {
        format!(
            "Port refused the credentials at start-up: the token call to PORT_API_BASE_URL={} answered {}. \
Check the region first (US organisations use {US_API_BASE_URL}, the default {} is the EU one), \
then PORT_CLIENT_ID and PORT_CLIENT_SECRET; settings are read once, so fix them and start the agent again",
            self.base,
            self.answer(),
            crate::settings::DEFAULT_API_BASE_URL,
        )
    }

    /// Why `/readyz` is 503 when this happens after start-up.
    pub fn reason(&self) -> String {
        format!(
            "Port refuses the credentials: the token call to PORT_API_BASE_URL={} answered {}; \
no run is claimed or reported until PORT_CLIENT_ID and PORT_CLIENT_SECRET are fixed and the agent restarted",
            self.base,
            self.answer()
        )
    }
}

/// Whether Port refuses the credentials now; shared by every clone of the
/// client, read by `/readyz`.
#[derive(Debug, Default)]
pub struct AuthStatus {
    refused: RwLock<Option<Refusal>>,
}

impl AuthStatus {
    /// The refusal in force, if the last token call was refused.
    pub fn refused(&self) -> Option<Refusal> {
        self.refused.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The last token call was refused.
    pub fn set_refused(&self, refusal: Refusal) {
        *self.refused.write().unwrap_or_else(|p| p.into_inner()) = Some(refusal);
    }

    /// A token was issued.
    pub fn set_accepted(&self) {
        let mut slot = self.refused.write().unwrap_or_else(|p| p.into_inner());
        if slot.is_some() {
            *slot = None;
            tracing::info!("Port accepts the credentials again");
        }
    }
}

impl crate::telemetry::server::Readiness for AuthStatus {
    fn not_ready(&self) -> Option<String> {
        self.refused().map(|r| r.reason())
    }
}

/// While Port refuses the credentials, hand the refusal to `emit` at once
/// and then once a `period` (looked at every `check`); a refusal that ends
/// and comes back is handed over at once again. Runs until dropped.
pub async fn each_period(
    status: Arc<AuthStatus>,
    check: Duration,
    period: Duration,
    mut emit: impl FnMut(&Refusal),
) {
    let mut ticks = tokio::time::interval(check);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: Option<tokio::time::Instant> = None;
    loop {
        let now = ticks.tick().await;
        match status.refused() {
            Some(refusal) if last.is_none_or(|at| now - at >= period) => {
                last = Some(now);
                emit(&refusal);
            }
            Some(_) => {}
            None => last = None,
        }
    }
}

/// Log the refusal at once and then once a [`REFUSAL_LOG_PERIOD`] while it
/// lasts (looked at each second).
pub async fn log_refusals(status: Arc<AuthStatus>) {
    each_period(status, Duration::from_secs(1), REFUSAL_LOG_PERIOD, |r| {
        tracing::error!(status = r.status, port_says = %r.port_says, base_url = %r.base,
            "{}; see the runbook, 'Credentials refused after start-up'", r.reason());
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_words_are_quoted_on_one_line_without_the_secret() {
        let body = r#"{"ok":false,"error":"invalid_credentials","message":"bad id\nor s3cr3t"}"#;
        let r = Refusal::new(401, body, "https://api.getport.io", "s3cr3t");
        assert_eq!(r.port_says, "invalid_credentials: bad id or <redacted>");
        let line = r.startup_line();
        assert!(!line.contains('\n') && !line.contains("s3cr3t"), "{line}");
        for part in [
            "PORT_API_BASE_URL=https://api.getport.io",
            "invalid_credentials",
            US_API_BASE_URL,
            "401",
        ] {
            assert!(line.contains(part), "{part} in {line}");
        }
        assert_eq!(Refusal::new(403, "", "b", "x").port_says, "(no answer body)");
        assert_eq!(Refusal::new(401, "nope", "b", "x").port_says, "nope");
    }

    /// A refusal is logged once a period while it lasts, and no more
    /// after it ends (a paused clock: no real minute passes).
    #[tokio::test(start_paused = true)]
    async fn a_refusal_is_logged_once_a_minute_while_it_lasts() {
        let status = Arc::new(AuthStatus::default());
        status.set_refused(Refusal::new(401, "{}", "b", ""));
        let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = lines.clone();
        let task = tokio::spawn(each_period(
            status.clone(),
            Duration::from_secs(1),
            REFUSAL_LOG_PERIOD,
            move |_| seen.lock().unwrap().push(tokio::time::Instant::now()),
        ));
        let start = tokio::time::Instant::now();
        tokio::time::sleep(Duration::from_secs(150)).await;
        let got: Vec<u64> = lines
            .lock()
            .unwrap()
            .iter()
            .map(|t| (*t - start).as_secs())
            .collect();
        assert_eq!(got, vec![0, 60, 120], "at once, then once a minute");
        status.set_accepted();
        tokio::time::sleep(Duration::from_secs(180)).await;
        assert_eq!(
            lines.lock().unwrap().len(),
            3,
            "nothing once the credentials are accepted"
        );
        status.set_refused(Refusal::new(401, "{}", "b", ""));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(
            lines.lock().unwrap().len(),
            4,
            "a new refusal is logged within a second"
        );
        task.abort();
    }
}
