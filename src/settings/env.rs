//! Environment → [`Settings`]: the only module that reads the process
//! environment.
//!
//! Each part of [`Settings`] takes its variables from [`Vars`] by name
//! (written once, where it is read); the validation turns each into a
//! typed value and, on failure, produces one line that names the variable
//! and says what was expected, without echoing the value of a secret.

use std::collections::HashMap;
use std::time::Duration;

use super::{
    KafkaSettings, LimitSettings, LogFormat, MappingSettings, OffsetReset, PollingSettings, PortSettings,
    ReportSettings, Requirement, SecurityProtocol, Settings, SettingsError, Streamer, TargetSettings,
    TelemetrySettings,
};
use crate::guard::{AllowList, RedirectPolicy};
use crate::proxy::{parse_proxy_url, NoProxy, Proxies};
use crate::retry::{Backoff, Policy};
use crate::secret::Secret;

use super::parse::{err, seconds, Vars};

/// The process environment, for `env.X` in jq expressions.
pub fn process_env() -> impl Iterator<Item = (String, String)> {
    std::env::vars()
}

impl Settings {
    /// Read the process environment.
    pub fn from_env(req: Requirement) -> Result<Settings, SettingsError> {
        Self::from_iter(process_env(), req)
    }

    /// Read settings from explicit pairs (tests, `--env`).
    pub fn from_iter(
        vars: impl IntoIterator<Item = (String, String)>,
        req: Requirement,
    ) -> Result<Settings, SettingsError> {
        let vars: HashMap<String, String> = vars.into_iter().collect();
        let proxies = proxies(&vars)?;
        let mut raw = Vars::new(vars);
        let port = port(&mut raw, req)?;
        let streamer = streamer(&mut raw)?;
        Ok(Settings {
            kafka: kafka(&mut raw, req, streamer, &port.org_id)?,
            polling: polling(&mut raw)?,
            target: target(&mut raw)?,
            report: report(&mut raw)?,
            mapping: MappingSettings {
                path: raw
                    .present("CONTROL_THE_PAYLOAD_CONFIG_PATH")
                    .unwrap_or_else(|| "./control_the_payload_config.json".into()),
                reload: raw.boolean("AGENT_MAPPING_RELOAD", true)?,
            },
            limits: limits(&mut raw)?,
            telemetry: telemetry(&mut raw)?,
            ca_bundle: raw.present("SSL_CERT_FILE").or(raw.present("REQUESTS_CA_BUNDLE")),
            proxies,
            streamer,
            port,
        })
    }
}

/// The proxy variables: each name, upper case first (the lower-case one
/// is read when the upper-case one is unset or empty).
const HTTP_PROXY: [&str; 2] = ["HTTP_PROXY", "http_proxy"];
const HTTPS_PROXY: [&str; 2] = ["HTTPS_PROXY", "https_proxy"];
const ALL_PROXY: [&str; 2] = ["ALL_PROXY", "all_proxy"];
const NO_PROXY: [&str; 2] = ["NO_PROXY", "no_proxy"];

/// The proxies (read by exact name, not through [`Vars`]: both
/// cases of these are in use).
fn proxies(vars: &HashMap<String, String>) -> Result<Proxies, SettingsError> {
    let get = |names: [&'static str; 2]| {
        names.into_iter().find_map(|n| {
            vars.get(n)
                .filter(|v| !v.trim().is_empty())
                .map(|v| (n, v.clone()))
        })
    };
    let url = |names| -> Result<Option<url::Url>, SettingsError> {
        get(names)
            .map(|(n, v)| parse_proxy_url(&v).map_err(|e| err(n, e.to_string())))
            .transpose()
    };
    let all = url(ALL_PROXY)?;
    Ok(Proxies {
        http: url(HTTP_PROXY)?.or_else(|| all.clone()),
        https: url(HTTPS_PROXY)?.or(all),
        no_proxy: get(NO_PROXY).map(|(_, v)| NoProxy::parse(&v)).unwrap_or_default(),
    })
}

fn port(r: &mut Vars, req: Requirement) -> Result<PortSettings, SettingsError> {
    let mut required = |var: &'static str| -> Result<String, SettingsError> {
        match r.present(var) {
            Some(v) => Ok(v),
            None if req == Requirement::Offline => Ok(String::new()),
            None => Err(err(var, "required, but not set")),
        }
    };
    let org_id = required("PORT_ORG_ID")?;
    let client_id = required("PORT_CLIENT_ID")?;
    let client_secret = Secret::new(required("PORT_CLIENT_SECRET")?);
    let base = r
        .present("PORT_API_BASE_URL")
        .unwrap_or_else(|| super::DEFAULT_API_BASE_URL.into());
    let base = base.trim().trim_end_matches('/').to_string();
    if url::Url::parse(&base).is_err() || !(base.starts_with("http://") || base.starts_with("https://")) {
        return Err(err(
            "PORT_API_BASE_URL",
            format!("expected an http(s) URL, got '{base}'"),
        ));
    }
    Ok(PortSettings {
        org_id,
        client_id,
        client_secret,
        api_base_url: base,
        timeout: r.seconds("AGENT_PORT_TIMEOUT_SECONDS", 15.0)?,
        max_attempts: r
            .number("AGENT_PORT_RETRY_MAX_ATTEMPTS", 5, "a whole number of attempts")?
            .max(1),
    })
}

/// `STREAMER_NAME`: exactly `KAFKA` or `POLLING`, upper case, as Port's
/// Python agent reads it (surrounding spaces are ignored, like every
/// setting's); another case is refused with the spelling to use.
fn streamer(r: &mut Vars) -> Result<Streamer, SettingsError> {
    match r.present("STREAMER_NAME").as_deref().map(str::trim) {
        None | Some("KAFKA") => Ok(Streamer::Kafka),
        Some("POLLING") => Ok(Streamer::Polling),
        Some(s) if s.eq_ignore_ascii_case("KAFKA") || s.eq_ignore_ascii_case("POLLING") => Err(err(
            "STREAMER_NAME",
            format!(
                "expected KAFKA or POLLING in upper case (as Port's agent reads it), got '{s}': write '{}'",
                s.to_ascii_uppercase()
            ),
        )),
        Some(s) => Err(err(
            "STREAMER_NAME",
            format!("expected KAFKA or POLLING, got '{s}'"),
        )),
    }
}

fn kafka(
    r: &mut Vars,
    req: Requirement,
    streamer: Streamer,
    org_id: &str,
) -> Result<KafkaSettings, SettingsError> {
    let d = KafkaSettings::default();
    let group_id = r.present("KAFKA_CONSUMER_GROUP_ID").unwrap_or_default();
    if req == Requirement::Run && streamer == Streamer::Kafka && group_id.is_empty() {
        return Err(err(
            "KAFKA_CONSUMER_GROUP_ID",
            "required when STREAMER_NAME is KAFKA (Port expects '<PORT_ORG_ID>.<name>')",
        ));
    }
    let auto_offset_reset = match r.present("KAFKA_CONSUMER_AUTO_OFFSET_RESET") {
        None => d.auto_offset_reset,
        Some(v) => OffsetReset::parse(&v).ok_or_else(|| {
            err(
                "KAFKA_CONSUMER_AUTO_OFFSET_RESET",
                format!(
                    "expected earliest, latest, smallest or largest, got '{}'",
                    v.trim().to_ascii_lowercase()
                ),
            )
        })?,
    };
    let security_protocol = match r.present("KAFKA_CONSUMER_SECURITY_PROTOCOL") {
        None => d.security_protocol,
        Some(v) => SecurityProtocol::parse(&v).ok_or_else(|| {
            err(
                "KAFKA_CONSUMER_SECURITY_PROTOCOL",
                format!("expected {}, got '{}'", SecurityProtocol::EXPECTED, v.trim()),
            )
        })?,
    };
    let runs_topic_set = r.is_set("KAFKA_RUNS_TOPIC");
    Ok(KafkaSettings {
        group_id,
        security_protocol,
        sasl_mechanism: r
            .present("KAFKA_CONSUMER_AUTHENTICATION_MECHANISM")
            .map(|m| m.trim().to_string())
            .filter(|m| !m.eq_ignore_ascii_case("none")),
        session_timeout_ms: r.number(
            "KAFKA_CONSUMER_SESSION_TIMEOUT_MS",
            d.session_timeout_ms,
            "a whole number of milliseconds",
        )?,
        max_poll_interval_ms: r.number(
            "KAFKA_CONSUMER_MAX_POLL_INTERVAL_MS",
            d.max_poll_interval_ms,
            "a whole number of milliseconds",
        )?,
        auto_offset_reset,
        runs_topic: r
            .present("KAFKA_RUNS_TOPIC")
            .unwrap_or_else(|| format!("{org_id}.runs")),
        runs_topic_set,
        change_log_topic: r
            .present("KAFKA_CHANGE_LOG_TOPIC")
            .unwrap_or_else(|| format!("{org_id}.change.log")),
        using_local_port_instance: r.boolean("USING_LOCAL_PORT_INSTANCE", false)?,
        bootstrap_servers: r.present("KAFKA_CONSUMER_BOOTSTRAP_SERVERS").unwrap_or_default(),
        brokers: r.present("KAFKA_CONSUMER_BROKERS"),
        username: r.present("KAFKA_CONSUMER_USERNAME"),
        password: r.present("KAFKA_CONSUMER_PASSWORD").map(Secret::new),
        dlq_topic: r.present("AGENT_DLQ_TOPIC"),
        crash_loop_limit: crash_loop_limit(r, d.crash_loop_limit)?,
    })
}

/// `AGENT_CRASH_LOOP_LIMIT`: at least 2 (the first death names a whole
/// window of suspects, not one message).
fn crash_loop_limit(r: &mut Vars, default: u32) -> Result<u32, SettingsError> {
    let limit: u32 = r.number("AGENT_CRASH_LOOP_LIMIT", default, "a whole number of deaths")?;
    if limit < 2 {
        return Err(err("AGENT_CRASH_LOOP_LIMIT", "expected at least 2"));
    }
    Ok(limit)
}

/// The shortest `POLLING_INTERVAL_SECONDS`: each iteration makes two claim
/// calls, and Port rate-limits them.
pub const MIN_POLLING_INTERVAL: Duration = Duration::from_secs(1);

/// `POLLING_INTERVAL_SECONDS`: at least [`MIN_POLLING_INTERVAL`].
fn polling_interval(r: &mut Vars, default: Duration) -> Result<Duration, SettingsError> {
    let interval = r.seconds("POLLING_INTERVAL_SECONDS", default.as_secs_f64())?;
    if interval < MIN_POLLING_INTERVAL {
        return Err(err(
            "POLLING_INTERVAL_SECONDS",
            format!(
                "expected at least 1 second (accepted: 1 and up, e.g. 10, the default), got {}: \
each iteration makes two claim calls, and a shorter pause runs into Port's rate limit",
                interval.as_secs_f64()
            ),
        ));
    }
    Ok(interval)
}

fn report(r: &mut Vars) -> Result<ReportSettings, SettingsError> {
    let d = ReportSettings::default();
    Ok(ReportSettings {
        detailed_logging: r.boolean("DETAILED_LOGGING", d.detailed_logging)?,
        run_logs: r.run_logs("AGENT_RUN_LOGS", d.run_logs)?,
        wf_unmatched_fail: r.boolean("AGENT_WF_UNMATCHED_FAIL", d.wf_unmatched_fail)?,
    })
}

fn polling(r: &mut Vars) -> Result<PollingSettings, SettingsError> {
    let d = PollingSettings::default();
    Ok(PollingSettings {
        interval: polling_interval(r, d.interval)?,
        batch_size: r.number("POLLING_RUNS_BATCH_SIZE", d.batch_size, "a whole number")?,
        initial_backoff: r.seconds("POLLING_INITIAL_BACKOFF_SECONDS", d.initial_backoff.as_secs_f64())?,
        max_backoff: r.seconds("POLLING_MAX_BACKOFF_SECONDS", d.max_backoff.as_secs_f64())?,
        backoff_factor: r.number("POLLING_BACKOFF_FACTOR", d.backoff_factor, "a number")?,
        backoff_jitter: r.number("POLLING_BACKOFF_JITTER_FACTOR", d.backoff_jitter, "a number")?,
        max_failure: r.seconds(
            "POLLING_MAX_FAILURE_DURATION_SECONDS",
            d.max_failure.as_secs_f64(),
        )?,
    })
}

fn retry(r: &mut Vars) -> Result<Policy, SettingsError> {
    let defaults = Policy::default();
    let statuses = match r.present("AGENT_RETRY_STATUSES") {
        None => defaults.statuses.clone(),
        Some(list) => list
            .split(',')
            .map(|s| s.trim().parse::<u16>().ok().filter(|c| (100..600).contains(c)))
            .collect::<Option<Vec<u16>>>()
            .ok_or_else(|| {
                err(
                    "AGENT_RETRY_STATUSES",
                    format!("expected a comma-separated list of HTTP statuses, got '{list}'"),
                )
            })?,
    };
    let millis = |r: &mut Vars, var, default: Duration| -> Result<Duration, SettingsError> {
        let ms = r.number(var, default.as_millis() as u64, "a whole number of milliseconds")?;
        Ok(Duration::from_millis(ms))
    };
    let d = defaults.backoff;
    Ok(Policy {
        backoff: Backoff {
            max_attempts: r
                .number(
                    "AGENT_RETRY_MAX_ATTEMPTS",
                    d.max_attempts,
                    "a whole number of attempts",
                )?
                .max(1),
            max_elapsed: r.seconds("AGENT_RETRY_MAX_ELAPSED_SECONDS", d.max_elapsed.as_secs_f64())?,
            initial: millis(r, "AGENT_RETRY_INITIAL_BACKOFF_MS", d.initial)?,
            max: millis(r, "AGENT_RETRY_MAX_BACKOFF_MS", d.max)?,
        },
        statuses,
    })
}

fn target(r: &mut Vars) -> Result<TargetSettings, SettingsError> {
    let redirects = match r.present("AGENT_TARGET_REDIRECTS") {
        None => RedirectPolicy::SameHost,
        Some(v) => RedirectPolicy::parse(&v).ok_or_else(|| {
            err(
                "AGENT_TARGET_REDIRECTS",
                format!("expected none, same-host or any, got '{v}'"),
            )
        })?,
    };
    Ok(TargetSettings {
        retry: retry(r)?,
        timeout: r.seconds("WEBHOOK_INVOKER_TIMEOUT", 30.0)?,
        verify_ssl: r.boolean("WEBHOOK_VERIFY_SSL", true)?,
        redirects,
        max_response_bytes: r.number("AGENT_MAX_RESPONSE_BYTES", 1024 * 1024, "a whole number of bytes")?,
        allowed_targets: r
            .present("AGENT_ALLOWED_TARGETS")
            .map(|list| AllowList::parse(&list).map_err(|e| err("AGENT_ALLOWED_TARGETS", e.to_string())))
            .transpose()?,
        idempotency_headers: r.boolean("AGENT_IDEMPOTENCY_HEADERS", true)?,
    })
}

fn limits(r: &mut Vars) -> Result<LimitSettings, SettingsError> {
    let d = LimitSettings::default();
    let max_in_flight: usize = r.number(
        "AGENT_MAX_IN_FLIGHT",
        d.max_in_flight,
        "a whole number of messages",
    )?;
    if max_in_flight == 0 {
        return Err(err("AGENT_MAX_IN_FLIGHT", "expected at least 1"));
    }
    let max_message_age = match r.present("AGENT_MAX_MESSAGE_AGE_SECONDS") {
        None => None,
        Some(v) => {
            let age = seconds("AGENT_MAX_MESSAGE_AGE_SECONDS", Some(v), 0.0)?;
            if age.is_zero() {
                return Err(err(
                    "AGENT_MAX_MESSAGE_AGE_SECONDS",
                    "expected a number of seconds above 0 (unset it to turn the check off)",
                ));
            }
            Some(age)
        }
    };
    Ok(LimitSettings {
        max_in_flight,
        drain_timeout: r.seconds("AGENT_DRAIN_TIMEOUT_SECONDS", d.drain_timeout.as_secs_f64())?,
        jq_timeout: Duration::from_millis(r.number(
            "AGENT_JQ_TIMEOUT_MS",
            d.jq_timeout.as_millis() as u64,
            "a whole number of milliseconds",
        )?),
        jq_max_bytes: jq_max_bytes(r)?,
        max_message_age,
        max_clock_skew: r.seconds("AGENT_MAX_CLOCK_SKEW_SECONDS", d.max_clock_skew.as_secs_f64())?,
    })
}

/// `AGENT_JQ_MAX_BYTES`: at least 1 MiB, so that a typo cannot make every
/// mapping fail.
fn jq_max_bytes(r: &mut Vars) -> Result<usize, SettingsError> {
    const VAR: &str = "AGENT_JQ_MAX_BYTES";
    let bytes = r.number(VAR, super::DEFAULT_JQ_MAX_BYTES, "a whole number of bytes")?;
    if bytes < 1 << 20 {
        return Err(err(
            VAR,
            format!("expected at least 1048576 (1 MiB), got {bytes}"),
        ));
    }
    Ok(bytes)
}

fn telemetry(r: &mut Vars) -> Result<TelemetrySettings, SettingsError> {
    let log_format = match r.present("AGENT_LOG_FORMAT").as_deref().map(str::trim) {
        None => None,
        Some(f) if f.eq_ignore_ascii_case("json") => Some(LogFormat::Json),
        Some(f) if f.eq_ignore_ascii_case("text") => Some(LogFormat::Text),
        Some(f) => {
            return Err(err(
                "AGENT_LOG_FORMAT",
                format!("expected json or text, got '{f}'"),
            ))
        }
    };
    let (rust_log, log_level) = (r.present("RUST_LOG"), r.present("LOG_LEVEL"));
    let log_filter_chosen = rust_log.is_some() || log_level.is_some();
    let log_filter = match rust_log {
        Some(f) => f,
        None => log_level
            .unwrap_or_else(|| "INFO".into())
            .trim()
            .to_ascii_lowercase(),
    };
    if tracing_subscriber::EnvFilter::try_new(&log_filter).is_err() {
        return Err(err(
            "LOG_LEVEL",
            format!("expected a level such as INFO or DEBUG, got '{log_filter}'"),
        ));
    }
    Ok(TelemetrySettings {
        log_filter,
        log_filter_chosen,
        log_format,
        http_port: r.number("AGENT_HTTP_PORT", 8080, "a TCP port number (0 turns it off)")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn base() -> Vec<(String, String)> {
        env(&[
            ("PORT_ORG_ID", "org_1"),
            ("PORT_CLIENT_ID", "cid"),
            ("PORT_CLIENT_SECRET", "very-secret-value"),
            ("KAFKA_CONSUMER_GROUP_ID", "org_1.agent"),
        ])
    }

    fn with(extra: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let mut v = base();
        v.extend(env(extra));
        Settings::from_iter(v, Requirement::Run)
    }

    #[test]
    fn defaults_match_the_python_agent() {
        let s = with(&[]).unwrap();
        assert_eq!(s.port.api_base_url, "https://api.getport.io");
        assert_eq!(s.streamer, Streamer::Kafka);
        assert_eq!(s.kafka.runs_topic, "org_1.runs");
        assert_eq!(s.kafka.change_log_topic, "org_1.change.log");
        assert_eq!(s.kafka.security_protocol, SecurityProtocol::Plaintext);
        assert_eq!(s.kafka.sasl_mechanism, None);
        assert_eq!(s.kafka.session_timeout_ms, 45_000);
        assert_eq!(s.kafka.max_poll_interval_ms, 300_000);
        assert_eq!(s.kafka.auto_offset_reset, OffsetReset::Earliest);
        assert_eq!(s.mapping.path, "./control_the_payload_config.json");
        assert_eq!(s.target.timeout, Duration::from_secs(30));
        assert!(
            s.target.verify_ssl
                && s.report.detailed_logging
                && s.report.run_logs == crate::settings::RunLogs::All
                && s.report.wf_unmatched_fail
        );
        assert!(s.target.idempotency_headers);
        assert_eq!(s.limits.max_in_flight, 64);
        assert_eq!(s.telemetry.http_port, 8080);
        assert_eq!(s.polling.interval, Duration::from_secs(10));
        assert_eq!(s.polling.batch_size, 100);
        assert_eq!(s.polling.max_failure, Duration::from_secs(3600));
        assert_eq!(s.telemetry.log_filter, "info");
        assert_eq!(s.target.redirects, RedirectPolicy::SameHost);
        assert_eq!(s.target.max_response_bytes, 1024 * 1024);
        assert_eq!(s.target.allowed_targets, None);
        assert_eq!(s.limits.max_message_age, None);
        assert!(s.warnings().is_empty());
    }

    #[test]
    fn crash_loop_limit_is_at_least_two() {
        assert_eq!(with(&[]).unwrap().kafka.crash_loop_limit, 3);
        assert_eq!(
            with(&[("AGENT_CRASH_LOOP_LIMIT", "5")])
                .unwrap()
                .kafka
                .crash_loop_limit,
            5
        );
        for bad in ["1", "0", "x"] {
            let e = with(&[("AGENT_CRASH_LOOP_LIMIT", bad)]).unwrap_err().to_string();
            assert!(e.contains("AGENT_CRASH_LOOP_LIMIT"), "{bad}: {e}");
        }
    }

    #[test]
    fn booleans_accept_every_compat_spelling() {
        for (v, want) in [
            ("true", true),
            ("TRUE", true),
            ("1", true),
            ("yes", true),
            ("On", true),
            ("t", true),
            ("Y", true),
            ("false", false),
            ("0", false),
            ("NO", false),
            ("off", false),
            ("f", false),
            ("n", false),
        ] {
            assert_eq!(
                with(&[("WEBHOOK_VERIFY_SSL", v)]).unwrap().target.verify_ssl,
                want,
                "{v}"
            );
        }
        let e = with(&[("DETAILED_LOGGING", "maybe")]).unwrap_err();
        assert_eq!(e.variable, "DETAILED_LOGGING");
        assert!(e.to_string().contains("expected a boolean"), "{e}");
    }

    #[test]
    fn run_logs_take_all_minimal_off_or_a_boolean() {
        use crate::settings::RunLogs;
        let run_logs = |v: &str| with(&[("AGENT_RUN_LOGS", v)]).map(|s| s.report.run_logs);
        assert_eq!(with(&[]).unwrap().report.run_logs, RunLogs::All);
        assert_eq!(run_logs(""), Ok(RunLogs::All));
        for (v, want) in [
            ("all", RunLogs::All),
            ("All", RunLogs::All),
            ("minimal", RunLogs::Minimal),
            ("MINIMAL", RunLogs::Minimal),
            ("off", RunLogs::Off),
            ("Off", RunLogs::Off),
            ("true", RunLogs::All),
            ("TRUE", RunLogs::All),
            ("1", RunLogs::All),
            ("yes", RunLogs::All),
            ("On", RunLogs::All),
            ("t", RunLogs::All),
            ("Y", RunLogs::All),
            ("false", RunLogs::Off),
            ("0", RunLogs::Off),
            ("NO", RunLogs::Off),
            ("f", RunLogs::Off),
            ("n", RunLogs::Off),
        ] {
            assert_eq!(run_logs(v), Ok(want), "{v}");
        }
        let e = run_logs("some").unwrap_err();
        assert_eq!(
            e.to_string(),
            "AGENT_RUN_LOGS: expected all, minimal or off (or a boolean: true = all, false = off), got 'some'"
        );
        assert!(!e.to_string().contains('\n'));
    }

    #[test]
    fn missing_required_value_names_the_variable() {
        let e = Settings::from_iter(env(&[("PORT_ORG_ID", "o")]), Requirement::Run).unwrap_err();
        assert_eq!(e.to_string(), "PORT_CLIENT_ID: required, but not set");
        let e = Settings::from_iter(
            env(&[
                ("PORT_ORG_ID", "o"),
                ("PORT_CLIENT_ID", "c"),
                ("PORT_CLIENT_SECRET", "s"),
            ]),
            Requirement::Run,
        )
        .unwrap_err();
        assert_eq!(e.variable, "KAFKA_CONSUMER_GROUP_ID");
        // offline commands accept missing credentials
        assert!(Settings::from_iter(Vec::new(), Requirement::Offline).is_ok());
    }

    #[test]
    fn invalid_values_are_rejected_with_what_is_expected() {
        for (var, value) in [
            ("STREAMER_NAME", "RABBIT"),
            ("WEBHOOK_INVOKER_TIMEOUT", "soon"),
            ("AGENT_MAX_IN_FLIGHT", "0"),
            ("AGENT_HTTP_PORT", "70000"),
            ("KAFKA_CONSUMER_AUTO_OFFSET_RESET", "sometimes"),
            ("KAFKA_CONSUMER_SECURITY_PROTOCOL", "tls"),
            ("AGENT_LOG_FORMAT", "xml"),
            ("AGENT_RETRY_STATUSES", "429,abc"),
            ("PORT_API_BASE_URL", "api.getport.io"),
            ("AGENT_TARGET_REDIRECTS", "always"),
            ("AGENT_MAX_RESPONSE_BYTES", "1MB"),
            ("AGENT_ALLOWED_TARGETS", "10.0.0.0/40"),
            ("AGENT_MAX_MESSAGE_AGE_SECONDS", "0"),
            ("POLLING_INTERVAL_SECONDS", "0"),
            ("POLLING_INTERVAL_SECONDS", "0.999"),
            ("STREAMER_NAME", "polling"),
            ("STREAMER_NAME", "Kafka"),
        ] {
            let e = with(&[(var, value)]).unwrap_err();
            assert_eq!(e.variable, var);
        }
        let e = with(&[("STREAMER_NAME", "kafka")]).unwrap_err();
        assert!(e.problem.contains("write 'KAFKA'"), "{e}");
        let e = with(&[("KAFKA_CONSUMER_SECURITY_PROTOCOL", "tls")]).unwrap_err();
        assert_eq!(
            e.problem,
            "expected plaintext, ssl, sasl_plaintext or sasl_ssl, got 'tls'"
        );
        let s = with(&[("KAFKA_CONSUMER_SECURITY_PROTOCOL", "SASL_SSL")]).unwrap();
        assert_eq!(s.kafka.security_protocol, SecurityProtocol::SaslSsl);
        let e = with(&[("POLLING_INTERVAL_SECONDS", "0")]).unwrap_err();
        assert!(e.problem.contains("at least 1 second"), "{e}");
        let s = with(&[("POLLING_INTERVAL_SECONDS", "1")]).unwrap();
        assert_eq!(s.polling.interval, Duration::from_secs(1));
    }

    #[test]
    fn trailing_slash_and_aliases_are_tolerated() {
        let s = with(&[
            ("PORT_API_BASE_URL", "https://api.us.getport.io/"),
            ("KAFKA_CONSUMER_AUTO_OFFSET_RESET", "largest"),
            ("STREAMER_NAME", " POLLING "),
            ("KAFKA_CONSUMER_AUTHENTICATION_MECHANISM", "SCRAM-SHA-512"),
            ("REQUESTS_CA_BUNDLE", "/etc/ca.pem"),
        ])
        .unwrap();
        assert_eq!(s.port.api_base_url, "https://api.us.getport.io");
        assert_eq!(s.kafka.auto_offset_reset, OffsetReset::Latest);
        assert_eq!(s.streamer, Streamer::Polling);
        assert_eq!(s.kafka.sasl_mechanism.as_deref(), Some("SCRAM-SHA-512"));
        assert_eq!(s.ca_bundle.as_deref(), Some("/etc/ca.pem"));
    }

    #[test]
    fn group_without_org_prefix_is_a_warning() {
        let mut v = base();
        v.retain(|(k, _)| k != "KAFKA_CONSUMER_GROUP_ID");
        v.push(("KAFKA_CONSUMER_GROUP_ID".into(), "my-group".into()));
        let s = Settings::from_iter(v, Requirement::Run).unwrap();
        assert_eq!(s.warnings().len(), 1);
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let mut v = base();
        v.push(("KAFKA_CONSUMER_PASSWORD".into(), "kafka-pass-123".into()));
        let s = Settings::from_iter(v, Requirement::Run).unwrap();
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("very-secret-value"), "{dbg}");
        assert!(!dbg.contains("kafka-pass-123"), "{dbg}");
    }
}
