//! Retries end to end, through the built binary (polling mode against the
//! fake Port API): which target answers are retried and how often,
//! `Retry-After`, Port's 429 and transport errors, and the token refreshed
//! before it expires.

use std::time::Duration;

use crate::support::agent::*;
use crate::support::{Answer, FakePort, FakeTarget};
use serde_json::json;

fn status_answer(status: u16, headers: &[(&str, &str)]) -> Answer {
    Answer {
        status,
        body: format!("status {status}"),
        delay: Duration::ZERO,
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

/// AGENT_RETRY_MAX_ATTEMPTS=3 against targets that always answer one
/// status: 429, 502, 503 and 504 get exactly three attempts, 500 exactly
/// one; a 502 followed by a 200 gets two and succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_429_502_503_504_are_retried_and_500_is_not() {
    let port = FakePort::start().await;
    let mut targets = Vec::new();
    for status in [429u16, 502, 503, 504, 500] {
        let t = FakeTarget::start().await;
        t.answer(status, &format!("status {status}"));
        targets.push((status, t));
    }
    let recovering = FakeTarget::start().await;
    recovering
        .state
        .script
        .lock()
        .unwrap()
        .push_back(status_answer(502, &[]));
    let mut runs: Vec<_> = targets
        .iter()
        .map(|(s, t)| claimable(&format!("r_{s}"), &t.url("/x"), true, json!({})))
        .collect();
    runs.push(claimable("r_recovers", &recovering.url("/x"), true, json!({})));
    offer(&port, runs);
    let agent = start_polling(
        &port,
        "retry-statuses",
        &json!([{"enabled": true}]),
        &[
            ("AGENT_RETRY_MAX_ATTEMPTS", "3"),
            ("AGENT_RETRY_INITIAL_BACKOFF_MS", "10"),
            ("AGENT_RETRY_MAX_BACKOFF_MS", "20"),
        ],
    );
    wait_until(Duration::from_secs(30), "six reports", &agent, || {
        ["r_429", "r_502", "r_503", "r_504", "r_500", "r_recovers"]
            .iter()
            .all(|r| !patches_of(&port, r).is_empty())
    });
    stop(agent);
    for (status, t) in &targets {
        let attempts = t.requests().len();
        let want = if *status == 500 { 1 } else { 3 };
        assert_eq!(attempts, want, "status {status}");
        let patch = patches_of(&port, &format!("r_{status}"));
        assert_eq!(
            patch,
            [json!({"status": "FAILURE",
                    "summary": format!("Failed to invoke the webhook with status code: {status}. Response: status {status}")})]
        );
    }
    assert_eq!(recovering.requests().len(), 2);
    assert_eq!(patches_of(&port, "r_recovers"), [json!({"status": "SUCCESS"})]);
}

/// `Retry-After: 1` wins over a 10–20 ms backoff: the attempts are a
/// second apart (and not much more).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured() {
    let (port, target) = (FakePort::start().await, FakeTarget::start().await);
    target.state.script.lock().unwrap().extend([
        status_answer(429, &[("retry-after", "1")]),
        status_answer(503, &[("retry-after", "1")]),
    ]);
    offer(&port, [claimable("r_ra", &target.url("/x"), true, json!({}))]);
    let agent = start_polling(
        &port,
        "retry-after",
        &json!([{"enabled": true}]),
        &[
            ("AGENT_RETRY_INITIAL_BACKOFF_MS", "10"),
            ("AGENT_RETRY_MAX_BACKOFF_MS", "20"),
        ],
    );
    wait_until(Duration::from_secs(30), "the report", &agent, || {
        !patches_of(&port, "r_ra").is_empty()
    });
    stop(agent);
    assert_eq!(patches_of(&port, "r_ra"), [json!({"status": "SUCCESS"})]);
    let at: Vec<_> = target.requests().iter().map(|r| r.at).collect();
    assert_eq!(at.len(), 3);
    for w in at.windows(2) {
        let gap = w[1] - w[0];
        assert!(
            gap >= Duration::from_secs(1) && gap < Duration::from_millis(1500),
            "{gap:?}"
        );
    }
}

/// Port answers 429 twice: the Port client retries (AGENT_PORT_RETRY_MAX_ATTEMPTS=3)
/// within the same claim, so the polling loop never sees a failure (its own
/// backoff, 600 s, would stall the test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_429_is_retried() {
    let (port, target) = (FakePort::start().await, FakeTarget::start().await);
    let http_port = crate::support::broker::free_port().to_string();
    let agent = start_polling(
        &port,
        "port-429",
        &json!([{"enabled": true}]),
        &[
            ("AGENT_PORT_RETRY_MAX_ATTEMPTS", "3"),
            ("POLLING_INITIAL_BACKOFF_SECONDS", "600"),
            ("AGENT_HTTP_PORT", &http_port),
        ],
    );
    wait_until(Duration::from_secs(30), "the first claim", &agent, || {
        !calls_to(&port, CLAIM_NODES).is_empty()
    });
    // The next two calls (whichever claim comes next) are refused with 429.
    let n = port.all_calls().len();
    port.fail_next(&[429, 429]);
    offer(&port, [claimable("r_p429", &target.url("/x"), true, json!({}))]);
    wait_until(Duration::from_secs(30), "the run", &agent, || {
        !patches_of(&port, "r_p429").is_empty()
    });
    let log = agent.log_text();
    let metrics = crate::support::http_get(&format!("127.0.0.1:{http_port}"), "/metrics")
        .map(|(_, text)| text)
        .unwrap_or_default();
    stop(agent);
    assert!(
        metrics
            .lines()
            .any(|l| l == "port_agent_port_rate_limited_total 2"),
        "both 429s counted: {metrics}"
    );
    // Calls are sequential here: the refused call, its two retries.
    let later: Vec<_> = port.all_calls()[n..]
        .iter()
        .filter(|c| c.path() != "/v1/auth/access_token")
        .cloned()
        .collect();
    let i = later.iter().position(|c| c.status == 429).expect("a 429");
    let tries: Vec<(String, u16)> = later[i..i + 3]
        .iter()
        .map(|c| (c.path().to_string(), c.status))
        .collect();
    let path = tries[0].0.clone();
    assert!(path.ends_with("/claim-pending"), "{path}");
    assert_eq!(tries, [(path.clone(), 429), (path.clone(), 429), (path, 200)]);
    assert!(!log.contains("claiming runs failed"), "{log}");
    assert_eq!(target.requests().len(), 1);
}

/// AGENT_PORT_TIMEOUT_SECONDS=1 ends a claim Port holds for 5 s, and the
/// timed-out call (a transport error) is retried at once: the second
/// attempt arrives about a second after the first. With the default
/// (15 s) the first would have been answered after 5 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_timeout_ends_a_slow_call_which_is_retried() {
    let (port, target) = (FakePort::start().await, FakeTarget::start().await);
    port.state
        .holds
        .lock()
        .unwrap()
        .push((CLAIM_RUNS.to_string(), Duration::from_secs(5)));
    offer(&port, [claimable("r_pto", &target.url("/x"), true, json!({}))]);
    let agent = start_polling(
        &port,
        "port-timeout",
        &json!([{"enabled": true}]),
        &[
            ("AGENT_PORT_TIMEOUT_SECONDS", "1"),
            ("AGENT_PORT_RETRY_MAX_ATTEMPTS", "3"),
            ("POLLING_INITIAL_BACKOFF_SECONDS", "600"),
            ("POLLING_INTERVAL_SECONDS", "600"),
        ],
    );
    wait_until(Duration::from_secs(30), "the run", &agent, || {
        target.requests().len() == 1
    });
    stop(agent);
    // The held claim (the agent gave up on it), then the retry, answered.
    let held = port.state.held.lock().unwrap().clone();
    assert_eq!(held.len(), 1);
    let claims = calls_to(&port, CLAIM_RUNS);
    assert_eq!(claims.len(), 1, "the held call was never answered");
    let gap = claims[0].at - held[0].at;
    // 1 s timeout + at most 200 ms of jittered backoff, + 300 ms margin.
    assert!(
        gap >= Duration::from_millis(1000) && gap < Duration::from_millis(1500),
        "second claim {gap:?} after the first"
    );
}

/// A token that lives 3 s is replaced before it expires (at 90 % of a
/// lifetime under ten minutes; a minute early for longer ones, see the unit
/// test in src/port): the fake refuses expired tokens, and not one call is
/// refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_is_refreshed_before_it_expires() {
    let port = FakePort::start().await;
    *port.state.token_lifetime.lock().unwrap() = 3;
    port.state
        .tokens_expire
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let agent = start_polling(&port, "token-refresh", &json!([{"enabled": true}]), &[]);
    wait_until(Duration::from_secs(30), "a third token", &agent, || {
        port.token_calls() >= 3
    });
    stop(agent);
    let refused: Vec<String> = port
        .all_calls()
        .iter()
        .filter(|c| c.status == 401)
        .map(|c| c.uri.clone())
        .collect();
    assert!(refused.is_empty(), "calls with an expired token: {refused:?}");
    let issued = port.state.token_issued_at.lock().unwrap().clone();
    // Not fetched for every call either: each token served its 2.7 s.
    for w in issued.windows(2) {
        let lived = w[1] - w[0];
        assert!(
            lived >= Duration::from_millis(2650),
            "a token was used for {lived:?}"
        );
    }
}
