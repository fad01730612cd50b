//! `STREAMER_NAME=POLLING` (SPEC §2.2): the built binary against the fake
//! Port API's claim and ack endpoints and a fake target.

use std::time::{Duration, Instant};

use crate::support::agent::*;
use crate::support::broker::free_port;
use crate::support::{closed_port, http_get, FakePort, FakeTarget, Recorded, SECRET};
use port_agent::signature::sign;
use serde_json::{json, Value};

/// Offer node run `id` for `url` (synchronized; `agent` is its
/// invocation method's `agent` key).
fn offer_node_run(port: &FakePort, id: &str, url: &str, agent: bool) {
    port.state.claimable_node_runs.lock().unwrap().push_back(json!({
        "identifier": id,
        "config": {"type": "WEBHOOK", "url": url, "method": "POST", "agent": agent,
                   "headers": {}, "synchronized": true}}));
}

/// Run the agent (`tag`, every message mapped) until `run` is reported and
/// one more claim iteration has passed, then stop it.
fn poll_past_the_report_of(port: &FakePort, tag: &str, run: &str) {
    let agent = start_polling(port, tag, &json!([{"enabled": true}]), &[]);
    wait_until(
        Duration::from_secs(30),
        &format!("{run}'s report"),
        &agent,
        || !patches_of(port, run).is_empty(),
    );
    let before = calls_to(port, CLAIM_RUNS).len();
    wait_until(Duration::from_secs(30), "another iteration", &agent, || {
        calls_to(port, CLAIM_RUNS).len() > before
    });
    stop(agent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t1_a_claimed_run_is_acked_then_processed_then_reported() {
    let (port, target) = (FakePort::start().await, FakeTarget::start().await);
    target.answer_json(200, json!({"deployed": true}));
    offer(
        &port,
        [claimable("r_1", &target.url("/deploy"), true, json!({"v": 1}))],
    );
    let agent = start_polling(&port, "t1", &json!([{"enabled": true}]), &[]);
    wait_until(Duration::from_secs(30), "the status report", &agent, || {
        !patches_of(&port, "r_1").is_empty()
    });
    stop(agent);

    let claims = calls_to(&port, CLAIM_RUNS);
    assert_eq!(claims[0].header("x-port-reserved-usage"), Some("true"));
    // At most as many runs as there are free slots (issue 11): the default
    // AGENT_MAX_IN_FLIGHT, 64, is below POLLING_RUNS_BATCH_SIZE (100).
    assert_eq!(
        claims[0].json(),
        json!({"installationId": "_PORT_EXEC_AGENT", "limit": 64, "invocationMethod": "WEBHOOK"})
    );
    let acks = calls_to(&port, ACK_RUN);
    assert_eq!(acks.len(), 1);
    assert_eq!(acks[0].json(), json!({"runIds": ["r_1"]}));

    // The target got the run as a Kafka message would carry it: no
    // signature check on this path, but the request is still signed.
    let requests = target.requests();
    assert_eq!(requests.len(), 1);
    let req = &requests[0];
    assert!(acks[0].at < req.at, "acked before processing");
    let body = req.json();
    assert_eq!(body["context"]["runId"], "r_1");
    assert_eq!(body["payload"]["properties"]["v"], 1);
    assert_eq!(
        body["payload"]["action"]["invocationMethod"]["url"],
        target.url("/deploy")
    );
    assert!(body["payload"]["action"]["invocationMethod"]
        .get("agent")
        .is_none());
    // Signed with the client secret over the exact bytes sent.
    let ts = req.header("x-port-timestamp").expect("a timestamp");
    assert_eq!(
        req.header("x-port-signature"),
        Some(sign(SECRET, ts, &req.text()).as_str())
    );
    // Idempotency headers are on by default (AGENT_IDEMPOTENCY_HEADERS).
    assert_eq!(req.header("x-port-run-id"), Some("r_1"));
    assert_eq!(req.header("idempotency-key"), Some("r_1"));

    // Reported after the target answered: response, then SUCCESS.
    let reported: Vec<(String, String)> = port
        .accepted()
        .into_iter()
        .filter(|c| c.path().starts_with("/v1/actions/runs/r_1") && !c.path().ends_with("/logs"))
        .map(|c| (c.method.clone(), c.path().to_string()))
        .collect();
    assert_eq!(
        reported,
        [
            ("PATCH".to_string(), "/v1/actions/runs/r_1/response".to_string()),
            ("PATCH".to_string(), "/v1/actions/runs/r_1".to_string())
        ]
    );
    assert_eq!(patches_of(&port, "r_1")[0]["status"], "SUCCESS");
    let first_report = port
        .accepted()
        .into_iter()
        .find(|c| c.path().starts_with("/v1/actions/runs/r_1/"))
        .expect("a report");
    assert!(acks[0].at < first_report.at);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t2_nothing_pending_sends_no_acks() {
    let port = FakePort::start().await;
    let agent = start_polling(&port, "t2", &json!([{"enabled": true}]), &[]);
    wait_until(Duration::from_secs(30), "three claim iterations", &agent, || {
        calls_to(&port, CLAIM_RUNS).len() >= 3 && calls_to(&port, CLAIM_NODES).len() >= 3
    });
    stop(agent);
    assert!(calls_to(&port, ACK_RUN).is_empty());
    assert!(calls_to(&port, ACK_NODE).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t3_a_run_that_cannot_be_processed_is_reported_as_failure() {
    let port = FakePort::start().await;
    let target = FakeTarget::start().await;
    offer(&port, [claimable("r_3", &target.url("/x"), false, json!({}))]);
    offer_node_run(&port, "wfnr_3", &target.url("/n"), true);
    // No mapping matches: nothing can be sent.
    let agent = start_polling(
        &port,
        "t3",
        &json!([{"enabled": false}]),
        &[("AGENT_WF_UNMATCHED_FAIL", "false")],
    );
    wait_until(Duration::from_secs(30), "both failure reports", &agent, || {
        !patches_of(&port, "r_3").is_empty()
            && port
                .accepted()
                .iter()
                .any(|c| c.path() == "/v1/workflows/nodes/runs/wfnr_3")
    });
    stop(agent);
    assert_eq!(
        patches_of(&port, "r_3"),
        [json!({"status": "FAILURE", "summary": "Agent failed to process the run"})]
    );
    let node: Vec<Value> = port
        .accepted()
        .into_iter()
        .filter(|c| c.method == "PATCH" && c.path() == "/v1/workflows/nodes/runs/wfnr_3")
        .map(|c| c.json())
        .collect();
    assert_eq!(node, [json!({"status": "COMPLETED", "result": "FAILED"})]);
    assert!(target.requests().is_empty());
}

/// Start times of claim iterations (the runs claim of each).
fn iteration_starts(port: &FakePort) -> Vec<Instant> {
    calls_to(port, CLAIM_RUNS).iter().map(|c| c.at).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t4_claim_failures_back_off_and_the_backoff_resets_after_a_success() {
    let port = FakePort::start().await;
    // Iterations (two claim calls each): fail, fail, fail, succeed, fail, then succeed.
    port.state
        .claim_script
        .lock()
        .unwrap()
        .extend([500, 500, 500, 500, 500, 500, 200, 200, 500, 500]);
    let agent = start_polling(
        &port,
        "t4",
        &json!([{"enabled": true}]),
        &[
            ("PORT_AGENT_TEST_POLLING_INTERVAL_MS", "300"),
            ("POLLING_INITIAL_BACKOFF_SECONDS", "0.5"),
            ("POLLING_BACKOFF_FACTOR", "2"),
            ("POLLING_BACKOFF_JITTER_FACTOR", "0"),
        ],
    );
    wait_until(Duration::from_secs(60), "seven iterations", &agent, || {
        iteration_starts(&port).len() >= 7
    });
    stop(agent);
    let starts = iteration_starts(&port);
    let gaps: Vec<f64> = starts.windows(2).map(|w| (w[1] - w[0]).as_secs_f64()).collect();
    // After failures 1, 2, 3: 0.5 s, 1 s, 2 s. After the success: the
    // interval, 0.3 s. After the next failure: 0.5 s again, not 4 s. Each
    // gap is the pause plus two claim round trips on 127.0.0.1; the margin,
    // 0.4 s, is below the smallest change an exponent off by one makes
    // (0.5 s → 0.25 s or 1 s), so that fails on one side or the other.
    const MARGIN: f64 = 0.4;
    for (i, (gap, pause)) in gaps.iter().zip([0.5, 1.0, 2.0, 0.3, 0.5]).enumerate() {
        assert!(
            *gap >= pause && *gap < pause + MARGIN,
            "gap {i} is {gap:.3} s, expected {pause} s (+{MARGIN}): {gaps:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t5_two_runs_each_acked_on_its_own_and_the_second_fails() {
    let (port, target) = (FakePort::start().await, FakeTarget::start().await);
    offer(
        &port,
        [
            claimable("r_5a", &target.url("/a"), false, json!({"ok": true})),
            claimable("r_5b", &target.url("/b"), false, json!({"ok": false})),
        ],
    );
    let agent = start_polling(&port, "t5", &json!([{"enabled": ".payload.properties.ok"}]), &[]);
    wait_until(Duration::from_secs(30), "r_5b's failure", &agent, || {
        !patches_of(&port, "r_5b").is_empty()
    });
    stop(agent);
    let mut acked: Vec<Value> = calls_to(&port, ACK_RUN).iter().map(Recorded::json).collect();
    acked.sort_by_key(|v| v.to_string());
    assert_eq!(acked, [json!({"runIds": ["r_5a"]}), json!({"runIds": ["r_5b"]})]);
    assert_eq!(target.requests().len(), 1);
    assert_eq!(target.requests()[0].json()["context"]["runId"], "r_5a");
    assert!(
        patches_of(&port, "r_5a").is_empty(),
        "async success: the service reports"
    );
    assert_eq!(
        patches_of(&port, "r_5b"),
        [json!({"status": "FAILURE", "summary": "Agent failed to process the run"})]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t6_a_run_whose_ack_fails_is_not_processed() {
    let (port, target) = (FakePort::start().await, FakeTarget::start().await);
    port.state.ack_refused.lock().unwrap().insert("r_6a".into());
    offer(
        &port,
        [
            claimable("r_6a", &target.url("/a"), true, json!({})),
            claimable("r_6b", &target.url("/b"), true, json!({})),
        ],
    );
    // Past r_6b's report by one iteration, so r_6a had every chance to run.
    poll_past_the_report_of(&port, "t6", "r_6b");
    let runs: Vec<Value> = target
        .requests()
        .iter()
        .map(|r| r.json()["context"]["runId"].clone())
        .collect();
    assert_eq!(runs, [json!("r_6b")]);
    assert!(port
        .all_calls()
        .iter()
        .all(|c| !c.path().starts_with("/v1/actions/runs/r_6a")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t7_action_runs_and_node_runs_are_claimed_in_the_same_iteration() {
    let (port, target) = (FakePort::start().await, FakeTarget::start().await);
    target.answer_json(200, json!({"ok": 1}));
    offer(&port, [claimable("r_7", &target.url("/a"), false, json!({}))]);
    port.state.claimable_node_runs.lock().unwrap().push_back(json!({
        "identifier": "wfnr_7",
        "config": {"type": "WEBHOOK", "url": target.url("/n"), "method": "POST", "agent": true,
                   "headers": {"X-Node": "1"}, "synchronized": true}}));
    let agent = start_polling(
        &port,
        "t7",
        &json!([{"enabled": true}]),
        &[("POLLING_INTERVAL_SECONDS", "30")],
    );
    wait_until(Duration::from_secs(30), "the node run's report", &agent, || {
        port.accepted()
            .iter()
            .any(|c| c.method == "PATCH" && c.path() == "/v1/workflows/nodes/runs/wfnr_7")
    });
    wait_until(Duration::from_secs(30), "both targets", &agent, || {
        target.requests().len() == 2
    });
    stop(agent);
    // One iteration (the interval is 30 s): one claim of each kind.
    assert_eq!(calls_to(&port, CLAIM_RUNS).len(), 1);
    assert_eq!(calls_to(&port, CLAIM_NODES).len(), 1);
    // Node runs are claimed after action runs, for the slots left: 64 free
    // slots, one taken by the action run just claimed (issue 11).
    assert!(calls_to(&port, CLAIM_RUNS)[0].at <= calls_to(&port, CLAIM_NODES)[0].at);
    assert_eq!(
        calls_to(&port, CLAIM_NODES)[0].json(),
        json!({"installationId": "_PORT_EXEC_AGENT", "limit": 63})
    );
    assert_eq!(
        calls_to(&port, ACK_NODE)[0].json(),
        json!({"nodeRunIdentifier": "wfnr_7"})
    );
    let node = port
        .accepted()
        .into_iter()
        .find(|c| c.method == "PATCH" && c.path() == "/v1/workflows/nodes/runs/wfnr_7")
        .expect("node report");
    assert_eq!(
        node.json(),
        json!({"status": "COMPLETED", "result": "SUCCESS",
               "output": {"response": {"status": 200, "data": {"ok": 1}}}})
    );
    let node_req = target
        .requests()
        .into_iter()
        .find(|r| r.path() == "/n")
        .expect("node request");
    // The message the mapping sees (here the default body: all of it).
    let message = node_req.json();
    assert_eq!(message["headers"], json!({"X-Node": "1"}));
    assert_eq!(message["context"]["runId"], "wfnr_7");
    assert_eq!(node_req.header("x-port-run-id"), Some("wfnr_7"));
    assert_eq!(node_req.header("idempotency-key"), Some("wfnr_7"));
    assert_eq!(message["context"]["nodeConfig"]["agent"], true);
    assert!(message["payload"]["action"]["invocationMethod"]
        .get("agent")
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t8_a_full_batch_is_followed_by_an_immediate_second_claim() {
    let (port, target) = (FakePort::start().await, FakeTarget::start().await);
    offer(
        &port,
        (1..=3).map(|i| claimable(&format!("r_8{i}"), &target.url("/a"), true, json!({}))),
    );
    let agent = start_polling(
        &port,
        "t8",
        &json!([{"enabled": true}]),
        &[
            ("POLLING_RUNS_BATCH_SIZE", "2"),
            ("POLLING_INTERVAL_SECONDS", "30"),
        ],
    );
    wait_until(Duration::from_secs(30), "all three reports", &agent, || {
        (1..=3).all(|i| !patches_of(&port, &format!("r_8{i}")).is_empty())
    });
    // 2 of 3 (full) → claim again at once → 1 of 2 (not full) → wait 30 s.
    let claims = calls_to(&port, CLAIM_RUNS);
    stop(agent);
    assert_eq!(claims.len(), 2, "exactly two iterations so far");
    assert!(claims.iter().all(|c| c.json()["limit"] == 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t9_claims_failing_past_the_limit_make_the_agent_exit_non_zero() {
    let port = FakePort::start().await;
    *port.state.claims_always_fail.lock().unwrap() = Some(503);
    let mut agent = start_polling(
        &port,
        "t9",
        &json!([{"enabled": true}]),
        &[
            ("POLLING_INITIAL_BACKOFF_SECONDS", "0.2"),
            ("POLLING_MAX_FAILURE_DURATION_SECONDS", "1"),
        ],
    );
    let code = agent.wait(Duration::from_secs(30));
    assert_eq!(code, Some(4), "{}", agent.log_text());
    let log = agent.log_text();
    assert!(
        log.contains("POLLING_MAX_FAILURE_DURATION_SECONDS") && log.contains("status 503"),
        "{log}"
    );
    assert!(
        calls_to(&port, CLAIM_RUNS).len() >= 2,
        "it retried before giving up"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t10_five_hundred_claimed_runs_are_processed_concurrently() {
    let (port, target) = (FakePort::start().await, FakeTarget::start().await);
    target.answer_after(200, Duration::from_millis(20));
    offer(
        &port,
        (0..500).map(|i| claimable(&format!("r_{i:03}"), &target.url("/a"), true, json!({"i": i}))),
    );
    let started = Instant::now();
    let agent = start_polling(
        &port,
        "t10",
        &json!([{"enabled": true}]),
        &[("AGENT_RUN_LOGS", "false")],
    );
    wait_until(Duration::from_secs(120), "500 reports", &agent, || {
        port.accepted()
            .iter()
            .filter(|c| {
                c.method == "PATCH"
                    && c.path().starts_with("/v1/actions/runs/r_")
                    && !c.path().ends_with("/response")
            })
            .count()
            == 500
    });
    let elapsed = started.elapsed();
    stop(agent);
    let mut ids: Vec<String> = target
        .requests()
        .iter()
        .map(|r| {
            r.json()["context"]["runId"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 500, "each run reached the target");
    assert_eq!(target.requests().len(), 500, "exactly once");
    // Processed concurrently, up to AGENT_MAX_IN_FLIGHT (64) at once.
    let peak = target.max_concurrency();
    assert!((2..=64).contains(&peak), "peak concurrency {peak}");
    eprintln!(
        "polling: 500 runs (20 ms target) in {:.2} s = {:.0} runs/s, peak concurrency {peak}",
        elapsed.as_secs_f64(),
        500.0 / elapsed.as_secs_f64()
    );
}

/// Issue 11: claims never exceed the free slots, a run is acked only when
/// it starts, and a drain that times out reports every run still in flight
/// as stopped: no acked run is left without exactly one final status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t11_a_drain_timeout_leaves_no_acked_run_without_a_final_status() {
    let drain_timeout = port_agent::report::FailureSummary::DrainTimeout.to_string();
    let (port, target) = (FakePort::start().await, FakeTarget::start().await);
    target.answer_after(200, Duration::from_secs(2));
    offer(
        &port,
        (0..100).map(|i| claimable(&format!("r_{i:03}"), &target.url("/slow"), true, json!({}))),
    );
    let mut agent = start_polling(
        &port,
        "t11",
        &json!([{"enabled": true}]),
        &[
            ("AGENT_MAX_IN_FLIGHT", "4"),
            ("AGENT_DRAIN_TIMEOUT_SECONDS", "1"),
            ("AGENT_RUN_LOGS", "false"),
        ],
    );
    // The first four runs finished and the next ones started: stop now,
    // with about two seconds of the second wave still to go.
    wait_until(Duration::from_secs(60), "the second wave", &agent, || {
        target.requests().len() > 4
            && port
                .accepted()
                .iter()
                .any(|c| c.method == "PATCH" && c.path().starts_with("/v1/actions/runs/r_"))
    });
    agent.signal("-TERM");
    assert_eq!(
        agent.wait(Duration::from_secs(30)),
        Some(0),
        "{}",
        agent.log_text()
    );

    // Each claim asked for at most the free slots.
    let claims: Vec<Recorded> = calls_to(&port, CLAIM_RUNS)
        .into_iter()
        .chain(calls_to(&port, CLAIM_NODES))
        .collect();
    assert!(!claims.is_empty());
    for c in &claims {
        let limit = c.json()["limit"].as_u64().expect("a limit");
        assert!((1..=4).contains(&limit), "claim limit {limit}: {}", c.text());
    }

    let acked: Vec<String> = calls_to(&port, ACK_RUN)
        .iter()
        .filter(|c| c.status == 200)
        .map(|c| c.json()["runIds"][0].as_str().expect("a run id").to_string())
        .collect();
    let acked_set: std::collections::BTreeSet<String> = acked.iter().cloned().collect();
    assert_eq!(acked_set.len(), acked.len(), "each run acked once: {acked:?}");
    let reached: Vec<String> = target.requests().iter().map(run_of).collect();
    let reached_set: std::collections::BTreeSet<String> = reached.iter().cloned().collect();
    assert_eq!(
        reached_set.len(),
        reached.len(),
        "each run sent once: {reached:?}"
    );

    // Final statuses, per run.
    let mut finals: std::collections::BTreeMap<String, Vec<Value>> = Default::default();
    for c in port.accepted() {
        let Some(id) = c.path().strip_prefix("/v1/actions/runs/") else {
            continue;
        };
        if c.method == "PATCH" && id.starts_with("r_") && !id.contains('/') {
            finals.entry(id.to_string()).or_default().push(c.json());
        }
    }
    let success = json!({"status": "SUCCESS"});
    let stopped = json!({"status": "FAILURE", "summary": drain_timeout});
    let mut stopped_runs = std::collections::BTreeSet::new();
    for id in &acked {
        let got = finals.get(id).cloned().unwrap_or_default();
        assert_eq!(got.len(), 1, "{id}: exactly one final status, got {got:?}");
        assert!(got[0] == success || got[0] == stopped, "{id}: {:?}", got[0]);
        if got[0] == stopped {
            stopped_runs.insert(id.clone());
        } else {
            assert!(reached_set.contains(id), "{id}: SUCCESS without a request");
        }
    }
    // Nothing is reported for a run that was not acked.
    let reported: std::collections::BTreeSet<String> = finals.keys().cloned().collect();
    assert_eq!(reported, acked_set, "final statuses only for acked runs");
    // No run is acked that never started: each reached the target, or was
    // reported stopped (acked as the shutdown began, no slot to start in).
    let accounted: std::collections::BTreeSet<String> = reached_set.union(&stopped_runs).cloned().collect();
    assert!(
        acked_set.is_subset(&accounted),
        "acked, never started: {:?}",
        acked_set.difference(&accounted).collect::<Vec<_>>()
    );
    assert!(reached_set.is_subset(&acked_set), "sent without an ack");
    // Both endings happened: the first wave of 4 finished (SUCCESS); the
    // second, started when it ended and cut short by the 1 s drain (its
    // requests take 2 s), was reported stopped.
    assert!((1..=4).contains(&stopped_runs.len()), "{stopped_runs:?}");
    assert_eq!(acked.len() - stopped_runs.len(), 4, "the first wave succeeded");
    eprintln!(
        "polling drain: {} acked, {} SUCCESS, {} stopped, {} of 100 left unclaimed or unacked",
        acked.len(),
        acked.len() - stopped_runs.len(),
        stopped_runs.len(),
        100 - acked.len()
    );
    assert!(target.max_concurrency() <= 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t12_agent_idempotency_headers_false_sends_neither_header() {
    let (port, target) = (FakePort::start().await, FakeTarget::start().await);
    offer(&port, [claimable("r_12", &target.url("/a"), true, json!({}))]);
    let agent = start_polling(
        &port,
        "t12",
        &json!([{"enabled": true}]),
        &[("AGENT_IDEMPOTENCY_HEADERS", "false")],
    );
    wait_until(Duration::from_secs(30), "the status report", &agent, || {
        !patches_of(&port, "r_12").is_empty()
    });
    stop(agent);
    let requests = target.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(run_of(&requests[0]), "r_12");
    assert_eq!(requests[0].header("x-port-run-id"), None);
    assert_eq!(requests[0].header("idempotency-key"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t13_runs_whose_agent_is_not_true_are_neither_acked_nor_run() {
    let (port, target) = (FakePort::start().await, FakeTarget::start().await);
    let with_agent = |id: &str, agent: Option<Value>| {
        let mut run = claimable(id, &target.url("/a"), true, json!({}));
        match agent {
            Some(v) => run["payload"]["agent"] = v,
            None => {
                run["payload"].as_object_mut().unwrap().remove("agent");
            }
        }
        run
    };
    offer(
        &port,
        [
            with_agent("r_13false", Some(json!(false))),
            with_agent("r_13missing", None),
            with_agent("r_13string", Some(json!("true"))),
            with_agent("r_13yes", Some(json!(true))),
        ],
    );
    offer_node_run(&port, "wfnr_13", &target.url("/n"), false);
    // Past r_13yes's report by one iteration, so the others had every
    // chance to run.
    poll_past_the_report_of(&port, "t13", "r_13yes");
    let acked: Vec<Value> = calls_to(&port, ACK_RUN).iter().map(Recorded::json).collect();
    assert_eq!(acked, [json!({"runIds": ["r_13yes"]})]);
    assert!(calls_to(&port, ACK_NODE).is_empty(), "the node run is not acked");
    let runs: Vec<String> = target.requests().iter().map(run_of).collect();
    assert_eq!(runs, ["r_13yes"]);
    for id in ["r_13false", "r_13missing", "r_13string", "wfnr_13"] {
        let touched: Vec<String> = port
            .all_calls()
            .iter()
            .filter(|c| c.path().contains(id))
            .map(|c| format!("{} {}", c.method, c.path()))
            .collect();
        assert!(touched.is_empty(), "{id}: {touched:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t14_an_unconfirmed_ack_is_not_processed() {
    let (port, target) = (FakePort::start().await, FakeTarget::start().await);
    port.state
        .ack_unconfirmed
        .lock()
        .unwrap()
        .extend(["r_14a".to_string(), "wfnr_14".to_string()]);
    offer(
        &port,
        [
            claimable("r_14a", &target.url("/a"), true, json!({})),
            claimable("r_14b", &target.url("/b"), true, json!({})),
        ],
    );
    offer_node_run(&port, "wfnr_14", &target.url("/n"), true);
    poll_past_the_report_of(&port, "t14", "r_14b");
    // Both acks were answered 200, but only r_14b's was confirmed.
    let acks: Vec<(u16, Value)> = calls_to(&port, ACK_RUN)
        .iter()
        .map(|c| (c.status, c.json()))
        .collect();
    assert_eq!(
        acks,
        [
            (200, json!({"runIds": ["r_14a"]})),
            (200, json!({"runIds": ["r_14b"]}))
        ]
    );
    let node_acks: Vec<(u16, Value)> = calls_to(&port, ACK_NODE)
        .iter()
        .map(|c| (c.status, c.json()))
        .collect();
    assert_eq!(node_acks, [(200, json!({"nodeRunIdentifier": "wfnr_14"}))]);
    let runs: Vec<String> = target.requests().iter().map(run_of).collect();
    assert_eq!(runs, ["r_14b"]);
    assert!(port.all_calls().iter().all(
        |c| !c.path().starts_with("/v1/actions/runs/r_14a") && !c.path().contains("/nodes/runs/wfnr_14")
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t15_readyz_is_503_while_claims_fail_and_200_after_the_first_success() {
    let port = FakePort::start().await;
    *port.state.claims_always_fail.lock().unwrap() = Some(503);
    let http = format!("127.0.0.1:{}", free_port());
    let http_port = http.rsplit(':').next().unwrap().to_string();
    let agent = start_polling(
        &port,
        "t15",
        &json!([{"enabled": true}]),
        &[
            ("AGENT_HTTP_PORT", &http_port),
            ("POLLING_INITIAL_BACKOFF_SECONDS", "0.1"),
            ("POLLING_MAX_BACKOFF_SECONDS", "0.2"),
        ],
    );
    wait_until(Duration::from_secs(30), "three failed claims", &agent, || {
        calls_to(&port, CLAIM_RUNS).len() >= 3
    });
    let (status, body) = http_get(&http, "/readyz").expect("/readyz answers");
    assert_eq!(status, 503, "{body}");
    let body: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(body["status"], "unavailable");
    let reason = body["reason"].as_str().expect("a reason");
    assert!(
        reason.starts_with("claiming runs from Port fails: ") && reason.contains("status 503"),
        "{reason}"
    );
    // The liveness probe is not affected.
    assert_eq!(http_get(&http, "/healthz").map(|(s, _)| s), Some(200));
    // port_agent_polling_claims_total{result}: the failed claims counted as
    // errors, none as ok yet.
    let claims = |result: &str| {
        let (_, text) = http_get(&http, "/metrics").expect("/metrics answers");
        let name = format!("port_agent_polling_claims_total{{result=\"{result}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(name.as_str())?.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {name}in {text}"))
    };
    assert!(claims("error") >= 1.0, "{}", claims("error"));
    assert_eq!(claims("ok"), 0.0);
    *port.state.claims_always_fail.lock().unwrap() = None;
    wait_until(Duration::from_secs(30), "/readyz 200", &agent, || {
        http_get(&http, "/readyz").is_some_and(|(s, _)| s == 200)
    });
    assert!(calls_to(&port, CLAIM_RUNS).iter().any(|c| c.status == 200));
    let errors = claims("error");
    wait_until(Duration::from_secs(10), "an ok claim counted", &agent, || {
        claims("ok") >= 1.0
    });
    assert!(claims("error") >= errors, "a counter");
    stop(agent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t16_a_target_failure_is_reported_with_its_summary() {
    let (port, target) = (FakePort::start().await, FakeTarget::start().await);
    target.answer(500, "boom");
    let refused = format!("http://127.0.0.1:{}/gone", closed_port());
    offer(
        &port,
        [
            claimable("r_16a", &target.url("/f"), true, json!({})),
            claimable("r_16b", &refused, true, json!({})),
        ],
    );
    let agent = start_polling(
        &port,
        "t16",
        &json!([{"enabled": true}]),
        &[("AGENT_RETRY_MAX_ATTEMPTS", "1")],
    );
    wait_until(Duration::from_secs(30), "both reports", &agent, || {
        !patches_of(&port, "r_16a").is_empty() && !patches_of(&port, "r_16b").is_empty()
    });
    stop(agent);
    assert_eq!(
        patches_of(&port, "r_16a"),
        [
            json!({"status": "FAILURE", "summary": "Failed to invoke the webhook with status code: 500. Response: boom"})
        ]
    );
    let b = patches_of(&port, "r_16b");
    assert_eq!(b.len(), 1, "{b:?}");
    assert_eq!(b[0]["status"], "FAILURE");
    let summary = b[0]["summary"].as_str().unwrap();
    assert!(
        summary.starts_with("Failed to invoke the webhook: connection failed")
            && summary.to_lowercase().contains("refused"),
        "{summary}"
    );
    // Not the generic "could not process" summary of the polling source.
    assert!(!summary.contains("Agent failed to process the run"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t17_sigterm_interrupts_the_wait_between_iterations() {
    let port = FakePort::start().await;
    // A 10-minute wait, and a 1 s drain: only an interrupted wait ends
    // within the 5 s the test allows.
    let mut agent = start_polling(
        &port,
        "t17",
        &json!([{"enabled": true}]),
        &[
            ("POLLING_INTERVAL_SECONDS", "600"),
            ("AGENT_DRAIN_TIMEOUT_SECONDS", "1"),
            ("LOG_LEVEL", "debug"),
        ],
    );
    // The source logs this right before it waits: the signal comes during
    // the wait (or just before it, which the wait must notice too).
    wait_until(
        Duration::from_secs(30),
        "the wait after the first iteration",
        &agent,
        || agent.log_text().contains("waiting for the next claim"),
    );
    assert!(
        calls_to(&port, CLAIM_NODES).iter().any(|c| c.status == 200),
        "the first iteration claimed"
    );
    let signalled = Instant::now();
    agent.signal("-TERM");
    assert_eq!(
        agent.wait(Duration::from_secs(5)),
        Some(0),
        "{}",
        agent.log_text()
    );
    let took = signalled.elapsed();
    assert!(took < Duration::from_secs(2), "stopped after {took:?}");
    assert_eq!(calls_to(&port, CLAIM_RUNS).len(), 1, "no second iteration");
}

/// `value` nested `levels` deep in arrays.
fn nested(levels: usize, value: Value) -> Value {
    (0..levels).fold(value, |inner, _| json!([inner]))
}

/// Issue 23, item 4: a claim answer holding one run nested deeper than any
/// JSON reader accepts (200 levels) and one normal run. The normal run is
/// processed and reported; the deep one is acked and reported FAILURE with
/// why, instead of the whole answer being read as nothing (neither acked,
/// processed, reported nor logged).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t18_a_run_too_deep_to_read_is_reported_failure_and_the_others_run() {
    let unreadable = port_agent::report::FailureSummary::Unreadable(String::new()).to_string();
    let (port, target) = (FakePort::start().await, FakeTarget::start().await);
    target.answer_json(200, json!({"ok": true}));
    offer(
        &port,
        [
            claimable(
                "r_deep",
                &target.url("/deep"),
                true,
                json!({"deep": nested(200, json!(1))}),
            ),
            claimable("r_flat", &target.url("/flat"), true, json!({"v": 1})),
        ],
    );
    let agent = start_polling(&port, "t18", &json!([{"enabled": true}]), &[]);
    wait_until(Duration::from_secs(30), "both runs reported", &agent, || {
        !patches_of(&port, "r_deep").is_empty() && !patches_of(&port, "r_flat").is_empty()
    });
    let log = agent.log_text();
    stop(agent);
    // Both came in one answer.
    let claims = calls_to(&port, CLAIM_RUNS);
    assert!(claims[0].status == 200, "{claims:?}");
    let acked: Vec<Value> = calls_to(&port, ACK_RUN)
        .iter()
        .map(|c| c.json()["runIds"].clone())
        .collect();
    assert!(
        acked.contains(&json!(["r_deep"])),
        "the deep run is acked: {acked:?}"
    );
    assert!(acked.contains(&json!(["r_flat"])), "{acked:?}");
    // The normal run went to the target and succeeded; the deep one never
    // reached it.
    let runs: Vec<String> = target.requests().iter().map(run_of).collect();
    assert_eq!(runs, ["r_flat"]);
    assert_eq!(patches_of(&port, "r_flat").last().unwrap()["status"], "SUCCESS");
    let deep = patches_of(&port, "r_deep");
    assert_eq!(deep.len(), 1, "one report of the deep run: {deep:?}");
    assert_eq!(deep[0]["status"], "FAILURE");
    let summary = deep[0]["summary"].as_str().unwrap_or_default();
    assert!(
        summary.starts_with(&unreadable) && summary.contains("nested deeper than"),
        "{summary}"
    );
    assert!(log.contains("claimed run cannot be read"), "{log}");
}

/// Issue 23, item 4: a claim answer that is not JSON (cut short) is a
/// failed claim: logged with its size and the parse error, counted in
/// `port_agent_polling_claims_total{result="error"}`, and backed off (the
/// next claim only after POLLING_INITIAL_BACKOFF_SECONDS, not after the
/// 0.2 s interval). Before, it read as an empty answer: no log, no count,
/// no backoff.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t19_a_claim_answer_that_is_not_json_is_logged_counted_and_backed_off() {
    const BACKOFF: Duration = Duration::from_secs(2);
    let (port, target) = (FakePort::start().await, FakeTarget::start().await);
    target.answer_json(200, json!({"ok": true}));
    let cut = r#"{"runs": [{"id": "r_cut", "payload": {"type": "WEBHOOK", "url": "http://"#;
    port.state
        .raw_claim_answers
        .lock()
        .unwrap()
        .push_back(cut.to_string());
    let http_port = free_port().to_string();
    let agent = start_polling(
        &port,
        "t19",
        &json!([{"enabled": true}]),
        &[
            ("AGENT_HTTP_PORT", &http_port),
            ("POLLING_INITIAL_BACKOFF_SECONDS", "2"),
            ("POLLING_BACKOFF_JITTER_FACTOR", "0"),
        ],
    );
    let http = format!("127.0.0.1:{http_port}");
    let size = format!("the answer ({} bytes) is not JSON", cut.len());
    wait_until(Duration::from_secs(30), "the failed claim logged", &agent, || {
        agent.log_text().contains(&size)
    });
    let line = agent
        .log_text()
        .lines()
        .find(|l| l.contains(&size))
        .map(str::to_string)
        .unwrap_or_default();
    assert!(
        line.contains("\"level\":\"WARN\"")
            && line.contains("backing off")
            && line.contains("EOF while parsing"),
        "{line}"
    );
    let (_, metrics) = http_get(&http, "/metrics").expect("/metrics answers");
    assert!(
        metrics.contains("port_agent_polling_claims_total{result=\"error\"} 1\n"),
        "{metrics}"
    );
    // A run offered now is claimed after the backoff and processed.
    offer(&port, [claimable("r_after", &target.url("/a"), true, json!({}))]);
    wait_until(Duration::from_secs(30), "r_after reported", &agent, || {
        !patches_of(&port, "r_after").is_empty()
    });
    stop(agent);
    let claims = calls_to(&port, CLAIM_RUNS);
    let gap = claims[1].at - claims[0].at;
    assert!(
        gap >= BACKOFF,
        "the second claim came {gap:?} after the failed one, before the {BACKOFF:?} backoff"
    );
    assert_eq!(patches_of(&port, "r_after")[0]["status"], "SUCCESS");
    assert!(!target.requests().iter().any(|r| run_of(r) == "r_cut"));
}

/// Issue 28: the claim `limit` is the free slots when the claim is made:
/// a run that finished during the pause between claims frees its slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t20_the_claim_limit_equals_the_free_slots_after_a_run_finished() {
    let (port, target) = (FakePort::start().await, FakeTarget::start().await);
    offer(&port, [claimable("r_1", &target.url("/run"), true, json!({}))]);
    let agent = start_polling(
        &port,
        "t20",
        &json!([{"enabled": true}]),
        &[("AGENT_MAX_IN_FLIGHT", "3"), ("AGENT_RUN_LOGS", "false")],
    );
    wait_until(Duration::from_secs(30), "r_1's report", &agent, || {
        !patches_of(&port, "r_1").is_empty()
    });
    let before = calls_to(&port, CLAIM_RUNS).len();
    wait_until(Duration::from_secs(30), "two more claims", &agent, || {
        calls_to(&port, CLAIM_RUNS).len() >= before + 2
    });
    stop(agent);
    let claims = calls_to(&port, CLAIM_RUNS);
    let limits: Vec<u64> = claims
        .iter()
        .map(|c| c.json()["limit"].as_u64().expect("a limit"))
        .collect();
    assert_eq!(limits[0], 3, "the first claim asks for every slot: {limits:?}");
    // The second claim after the report was made with r_1 done for at
    // least one pause: every slot is free.
    assert_eq!(limits[before + 1], 3, "claims after r_1 finished: {limits:?}");
}

/// Issue 28: credentials Port refuses after a successful start (rotated or
/// revoked) make `/readyz` 503 with the reason (Port's error and the base
/// URL) and an error line in the log; `/healthz` stays 200, nothing exits,
/// and once Port accepts them again the agent is ready again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t21_credentials_refused_after_start_make_readyz_503_with_the_reason() {
    let port = FakePort::start().await;
    let http_port = free_port().to_string();
    let agent = start_polling(
        &port,
        "t21",
        &json!([{"enabled": true}]),
        &[
            ("AGENT_HTTP_PORT", &http_port),
            ("POLLING_INITIAL_BACKOFF_SECONDS", "0.2"),
            ("POLLING_MAX_BACKOFF_SECONDS", "0.5"),
        ],
    );
    let http = format!("127.0.0.1:{http_port}");
    let readyz = || http_get(&http, "/readyz");
    wait_until(Duration::from_secs(30), "ready", &agent, || {
        readyz().is_some_and(|(s, _)| s == 200)
    });
    port.refuse_credentials(401, "invalid_credentials");
    let mut reason = String::new();
    wait_until(
        Duration::from_secs(30),
        "/readyz 503 naming the refusal",
        &agent,
        || match readyz() {
            Some((503, body)) if body.contains("Port refuses the credentials") => {
                reason = body;
                true
            }
            _ => false,
        },
    );
    let reason: Value = serde_json::from_str(&reason).expect("JSON");
    let reason = reason["reason"].as_str().expect("a reason");
    for part in [
        &format!("PORT_API_BASE_URL={}", port.base()),
        "answered 401 \"invalid_credentials: The provided client id or secret is invalid\"",
    ] {
        assert!(reason.contains(part), "'{part}' in {reason}");
    }
    assert_eq!(http_get(&http, "/healthz").map(|(s, _)| s), Some(200));
    wait_until(Duration::from_secs(10), "the refusal in the log", &agent, || {
        agent.log_text().lines().any(|l| {
            l.contains("\"level\":\"ERROR\"")
                && l.contains("Port refuses the credentials")
                && l.contains("Credentials refused after start-up")
        })
    });
    // Logged at once, then once a minute: one line within this test.
    let logged = agent
        .log_text()
        .lines()
        .filter(|l| l.contains("Credentials refused after start-up"))
        .count();
    assert_eq!(logged, 1, "{}", agent.log_text());
    *port.state.credentials_refused.lock().unwrap() = None;
    wait_until(Duration::from_secs(30), "ready again", &agent, || {
        readyz().is_some_and(|(s, _)| s == 200)
    });
    assert!(!agent.log_text().contains(SECRET));
    stop(agent);
}

/// Issue 28: a start-up token call that fails otherwise than by a refusal
/// (here 503) is only a warning: the agent keeps running and claims once
/// Port answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t22_a_token_call_that_fails_at_start_up_is_only_a_warning() {
    let (port, target) = (FakePort::start().await, FakeTarget::start().await);
    *port.state.credentials_refused.lock().unwrap() = Some((503, json!({"ok": false})));
    offer(&port, [claimable("r_1", &target.url("/run"), true, json!({}))]);
    let mut agent = start_polling(
        &port,
        "t22",
        &json!([{"enabled": true}]),
        &[
            ("POLLING_INITIAL_BACKOFF_SECONDS", "0.2"),
            ("POLLING_MAX_BACKOFF_SECONDS", "0.5"),
        ],
    );
    wait_until(Duration::from_secs(10), "the warning", &agent, || {
        agent
            .log_text()
            .contains("could not get a token from Port; continuing")
    });
    assert!(
        agent.exited().expect("try_wait").is_none(),
        "{}",
        agent.log_text()
    );
    *port.state.credentials_refused.lock().unwrap() = None;
    wait_until(Duration::from_secs(30), "r_1's report", &agent, || {
        patches_of(&port, "r_1") == vec![json!({"status": "SUCCESS"})]
    });
    stop(agent);
}
