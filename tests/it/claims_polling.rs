//! README and SECURITY.md claims on the polling path (issue 17,
//! docs/testing.md), through the built binary: no secret in the logs at
//! `debug`, polled runs not subject to AGENT_MAX_MESSAGE_AGE_SECONDS, and
//! a Port API with an untrusted certificate refused.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::support::agent::*;
use crate::support::tls::TlsTarget;
use crate::support::{encrypt, FakePort, FakeTarget, SECRET};
use serde_json::json;

/// Claim 20: at LOG_LEVEL=debug, with a decrypted field and a mapped
/// `Authorization` header, none of the secrets appear in the log, nor in
/// what is posted to Port, though the target echoes both in its answer
/// (the run's response, reported to Port and logged at debug).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_logs_at_debug_show_no_secret() {
    let (port, target) = (FakePort::start().await, FakeTarget::start().await);
    let decrypted = "decrypted-polling-value-7f3a";
    let header_token = "mapped-bearer-token-c41d";
    target.answer_json(
        200,
        json!({"ok": true, "echo": format!("{decrypted} {header_token}")}),
    );
    offer(
        &port,
        [claimable(
            "r_secret",
            &target.url("/deploy"),
            true,
            json!({"token": encrypt(decrypted)}),
        )],
    );
    let mapping = json!([{
        "enabled": true,
        "fieldsToDecryptPaths": ["payload.properties.token"],
        "headers": {"Authorization": "\"Bearer \" + env.DEPLOY_TOKEN"},
        "body": {"t": ".payload.properties.token", "run": ".context.runId"}
    }]);
    let agent = start_polling(
        &port,
        "claims-debug",
        &mapping,
        &[("LOG_LEVEL", "debug"), ("DEPLOY_TOKEN", header_token)],
    );
    wait_until(Duration::from_secs(30), "the status report", &agent, || {
        !patches_of(&port, "r_secret").is_empty()
    });
    stop(agent_and_log(agent, |log| {
        assert!(log.contains("\"level\":\"DEBUG\""), "the log is at debug: {log}");
        for secret in [decrypted, header_token, SECRET, "Bearer "] {
            assert!(!log.contains(secret), "{secret} in the log:\n{log}");
        }
    }));
    // The echoed answer reached Port with both values hidden.
    let response = port
        .accepted()
        .into_iter()
        .find(|c| c.path() == "/v1/actions/runs/r_secret/response")
        .expect("the run's response reported");
    assert_eq!(
        response.json()["response"]["echo"],
        "<redacted> <redacted>",
        "{:?}",
        response.json()
    );
    for call in port.all_calls() {
        let text = String::from_utf8_lossy(&call.body).to_string();
        for secret in [decrypted, header_token] {
            assert!(
                !text.contains(secret),
                "{secret} sent to Port: {} {text}",
                call.path()
            );
        }
    }
    // The secrets were used: the target got the decrypted value and the header.
    let req = &target.requests()[0];
    assert_eq!(req.json()["t"], decrypted);
    assert_eq!(
        req.header("authorization"),
        Some(format!("Bearer {header_token}").as_str())
    );
}

fn agent_and_log(
    agent: crate::support::broker::AgentProcess,
    check: impl FnOnce(&str),
) -> crate::support::broker::AgentProcess {
    check(&agent.log_text());
    agent
}

/// Claim 22 (polling part): polled runs carry no timestamp and are not
/// checked against AGENT_MAX_MESSAGE_AGE_SECONDS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polled_runs_are_not_checked_against_the_message_age() {
    let (port, target) = (FakePort::start().await, FakeTarget::start().await);
    target.answer_json(200, json!({"ok": true}));
    offer(
        &port,
        [claimable("r_aged", &target.url("/deploy"), true, json!({}))],
    );
    let agent = start_polling(
        &port,
        "claims-age",
        &json!([{"enabled": true}]),
        &[("AGENT_MAX_MESSAGE_AGE_SECONDS", "1")],
    );
    wait_until(Duration::from_secs(30), "the status report", &agent, || {
        !patches_of(&port, "r_aged").is_empty()
    });
    let log = agent.log_text();
    stop(agent);
    assert_eq!(patches_of(&port, "r_aged")[0]["status"], "SUCCESS");
    assert_eq!(target.requests().len(), 1);
    assert!(
        !log.contains("stale") && !log.contains("signed longer ago"),
        "{log}"
    );
}

/// Claim 26: a Port API whose certificate is not trusted (self-signed) is
/// refused: no request reaches it, the log names the certificate problem
/// and the agent gives up with exit code 4.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_api_with_an_untrusted_certificate_is_refused() {
    let port = FakePort::start().await;
    let untrusted = TlsTarget::start().await;
    let mut env = polling_env(
        &port,
        "claims-tls",
        &json!([{"enabled": true}]),
        &[
            ("POLLING_INITIAL_BACKOFF_SECONDS", "0.2"),
            ("POLLING_MAX_FAILURE_DURATION_SECONDS", "1"),
        ],
    );
    env.retain(|(k, _)| *k != "PORT_API_BASE_URL");
    env.push(("PORT_API_BASE_URL", untrusted.url("")));
    let mut agent = crate::support::broker::AgentProcess::start(&env, "claims-tls");
    let code = agent.wait(Duration::from_secs(30));
    let log = agent.log_text();
    assert_eq!(code, Some(4), "{log}");
    assert!(
        log.contains("invalid peer certificate: UnknownIssuer"),
        "names the certificate problem: {log}"
    );
    assert!(untrusted.failed_handshakes.load(Ordering::SeqCst) >= 1, "{log}");
    assert!(
        untrusted.requests().is_empty(),
        "nothing sent over the untrusted connection"
    );
    assert!(!log.contains(SECRET));
}
