//! Shutdown of the built binary against tansu, the fake Port API and a fake
//! target (README "Running against Kafka", **Shutdown**): SIGTERM with runs
//! in flight drains them and exits 0 (the probes meanwhile: `/healthz` 200,
//! `/readyz` 503 "shutting down"); the drain timeout stops a slow run, says
//! so and leaves it to the next owner; a second signal exits 130; the agent
//! leaves the group, so another member gets its partitions at once instead
//! of after the session timeout.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::support::agent::patches_of;
use crate::support::broker::{
    agent_env, eventually, eventually_some, free_port, produce, signed_runs, write_mapping, AgentProcess,
    Tansu, World,
};
use crate::support::{http_get, FakePort, FakeTarget};
use serde_json::{json, Value};

const RUNS: &str = "org_1.runs";
const CHANGES: &str = "org_1.change.log";
const GROUP: &str = "org_1.shutdown";

impl World {
    /// Accepted status PATCHes of `run`, with when they arrived.
    fn statuses(&self, run: &str) -> Vec<(Value, Instant)> {
        let path = format!("/v1/actions/runs/{run}");
        self.port
            .accepted()
            .iter()
            .filter(|c| c.method == "PATCH" && c.path() == path)
            .map(|c| (c.json(), c.at))
            .collect()
    }
}

/// JSON log lines of the agent.
fn log_lines(agent: &AgentProcess) -> Vec<Value> {
    agent
        .log_text()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The partitions the agent's last assignment named ("" for a standby).
fn last_assignment(agent: &AgentProcess) -> Option<String> {
    log_lines(agent)
        .iter()
        .rev()
        .find_map(|l| match l["message"].as_str() {
            Some("partitions assigned") => l["partitions"].as_str().map(str::to_string),
            Some(m) if m.contains("warm standby") => Some(String::new()),
            _ => None,
        })
}

/// A [`World`] (`tag`) whose target holds one synchronized run for a
/// minute, and the agent (`agent_tag`, `AGENT_DRAIN_TIMEOUT_SECONDS` =
/// `drain_timeout`) with that run in flight; with the agent's settings.
async fn one_held_run(
    tag: &str,
    drain_timeout: &'static str,
    agent_tag: &str,
) -> (World, Vec<(&'static str, String)>, AgentProcess) {
    let w = World::start(tag, GROUP).await;
    // The target would hold the run for a minute.
    w.target.answer_after(200, Duration::from_secs(60));
    produce(
        &w.tansu.bootstrap,
        RUNS,
        signed_runs(1, &w.target.url("/run"), true),
    )
    .await;
    let env = w.env(&[("AGENT_DRAIN_TIMEOUT_SECONDS", drain_timeout)]);
    let agent = AgentProcess::start(&env, agent_tag);
    eventually("the run at the target", Duration::from_secs(60), || {
        w.target.requests().len() == 1
    })
    .await;
    (w, env, agent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_runs_in_flight_drains_them_reports_them_commits_and_exits_zero() {
    let w = World::start("drain", GROUP).await;
    // Each run is held 3 s at the target: they are in flight at the signal.
    w.target.answer_after(200, Duration::from_secs(3));
    let ends = produce(
        &w.tansu.bootstrap,
        RUNS,
        signed_runs(3, &w.target.url("/run"), true),
    )
    .await;
    let http_port = free_port().to_string();
    let http = format!("127.0.0.1:{http_port}");
    let mut agent = AgentProcess::start(&w.env(&[("AGENT_HTTP_PORT", &http_port)]), "drain");
    eventually("3 runs at the target", Duration::from_secs(60), || {
        w.target.requests().len() == 3
    })
    .await;
    let (_, metrics) = http_get(&http, "/metrics").expect("/metrics answers");
    assert!(
        metrics.lines().any(|l| l == "port_agent_messages_in_flight 3"),
        "{metrics}"
    );

    let signalled = Instant::now();
    agent.signal("-TERM");
    // During the drain: not ready, with the reason; still alive.
    let body = eventually_some("/readyz 503 while draining", Duration::from_secs(3), || {
        http_get(&http, "/readyz")
            .filter(|(s, _)| *s == 503)
            .map(|(_, b)| b)
    })
    .await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"status": "unavailable", "reason": "shutting down: draining in-flight messages"})
    );
    assert_eq!(
        http_get(&http, "/healthz"),
        Some((200, json!({"status": "ok"}).to_string()))
    );
    assert!(
        w.statuses("r_0000").is_empty(),
        "the probes were read while the runs were still in flight"
    );

    assert_eq!(
        agent.wait(Duration::from_secs(30)),
        Some(0),
        "log: {}",
        agent.log_text()
    );
    for i in 0..3 {
        let run = format!("r_{i:04}");
        let statuses = w.statuses(&run);
        assert_eq!(statuses.len(), 1, "{run}: {statuses:?}");
        assert_eq!(statuses[0].0, json!({"status": "SUCCESS"}), "{run}");
        assert!(statuses[0].1 > signalled, "{run} was reported in the drain");
    }
    assert_eq!(
        w.tansu.committed(GROUP, RUNS, 3),
        (0..3).map(|p| ends[&p]).collect::<Vec<_>>(),
        "the drained runs are committed before the exit"
    );
    let messages: Vec<String> = log_lines(&agent)
        .iter()
        .filter_map(|l| l["message"].as_str().map(str::to_string))
        .collect();
    let position = |m: &str| {
        messages
            .iter()
            .position(|x| x == m)
            .unwrap_or_else(|| panic!("no log line {m:?}: {messages:?}"))
    };
    assert!(
        position("shutdown requested: draining (send the signal again to exit at once)")
            < position("all in-flight messages finished")
    );
    assert!(position("all in-flight messages finished") < position("left the consumer group"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_timeout_stops_a_slow_run_says_so_and_leaves_it_for_the_next_owner() {
    let (w, env, mut agent) = one_held_run("drain-timeout", "1", "drain-timeout-1").await;
    let signalled = Instant::now();
    agent.signal("-TERM");
    assert_eq!(
        agent.wait(Duration::from_secs(15)),
        Some(0),
        "log: {}",
        agent.log_text()
    );
    let took = signalled.elapsed();
    // 1 s of drain, at most 2 s for the stopped run to end, then the close.
    assert!(took < Duration::from_secs(8), "exit took {took:?}");
    let said = log_lines(&agent)
        .into_iter()
        .find(|l| {
            l["message"] == "drain timeout reached; unfinished messages are stopped and not acknowledged"
        })
        .unwrap_or_else(|| panic!("the drain timeout is logged: {}", agent.log_text()));
    assert_eq!(said["level"], "WARN");
    assert_eq!(said["in_flight"], 1);
    assert!(w.statuses("r_0000").is_empty(), "a stopped run is not reported");
    assert!(
        w.tansu.committed(GROUP, RUNS, 3)[0] <= 0,
        "nothing is committed past the stopped run"
    );

    // The next owner of the partition runs it again.
    w.target.answer(200, "");
    let mut next = AgentProcess::start(&env, "drain-timeout-2");
    eventually(
        "the run reported by the next owner",
        Duration::from_secs(60),
        || w.statuses("r_0000").len() == 1,
    )
    .await;
    assert_eq!(w.target.requests().len(), 2, "the stopped run was sent again");
    next.signal("-TERM");
    assert_eq!(next.wait(Duration::from_secs(30)), Some(0));
}

/// SIGINT is a shutdown like SIGTERM: the run in flight is drained,
/// reported and committed, and the agent exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_drains_like_sigterm_and_exits_zero() {
    let w = World::start("sigint", GROUP).await;
    w.target.answer_after(200, Duration::from_secs(2));
    let ends = produce(
        &w.tansu.bootstrap,
        RUNS,
        signed_runs(1, &w.target.url("/run"), true),
    )
    .await;
    let mut agent = AgentProcess::start(&w.env(&[]), "sigint");
    eventually("the run at the target", Duration::from_secs(60), || {
        w.target.requests().len() == 1
    })
    .await;
    let signalled = Instant::now();
    agent.signal("-INT");
    assert_eq!(
        agent.wait(Duration::from_secs(30)),
        Some(0),
        "log: {}",
        agent.log_text()
    );
    let statuses = w.statuses("r_0000");
    assert_eq!(statuses.len(), 1, "{statuses:?}");
    assert_eq!(statuses[0].0, json!({"status": "SUCCESS"}));
    assert!(statuses[0].1 > signalled, "reported in the drain");
    let committed = w.tansu.committed(GROUP, RUNS, 3);
    for (p, end) in &ends {
        assert_eq!(committed[*p as usize], *end, "partition {p}: {committed:?}");
    }
    assert!(agent
        .log_text()
        .contains("shutdown requested: draining (send the signal again to exit at once)"));
}

/// A run whose report waits for Port (Port down) when the drain times out
/// is stopped like a run held at the target: the agent exits 0 within a few
/// seconds, nothing is committed past it, and the next owner runs it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_report_waits_for_port_at_the_drain_timeout_is_stopped_and_left_uncommitted() {
    let w = World::start("drain-port-down", GROUP).await;
    w.target.answer(200, "");
    // Port answers 503 to everything but the token.
    w.port.state.down.store(true, Ordering::SeqCst);
    let ends = produce(
        &w.tansu.bootstrap,
        RUNS,
        signed_runs(1, &w.target.url("/run"), true),
    )
    .await;
    let env = w.env(&[
        ("AGENT_DRAIN_TIMEOUT_SECONDS", "1"),
        ("AGENT_PORT_RETRY_MAX_ATTEMPTS", "2"),
    ]);
    let mut agent = AgentProcess::start(&env, "drain-port-down-1");
    // The report proper (the status PATCH or the response), not a run-log
    // line, is refused: the target has answered and the run waits for Port.
    eventually(
        "the run's report pending on Port",
        Duration::from_secs(60),
        || {
            w.port.all_calls().iter().any(|c| {
                let path = c.path();
                (path == "/v1/actions/runs/r_0000" || path == "/v1/actions/runs/r_0000/response")
                    && c.status == 503
            })
        },
    )
    .await;
    assert_eq!(w.target.requests().len(), 1, "the target answered the run once");
    let signalled = Instant::now();
    agent.signal("-TERM");
    assert_eq!(
        agent.wait(Duration::from_secs(15)),
        Some(0),
        "log: {}",
        agent.log_text()
    );
    let took = signalled.elapsed();
    assert!(took < Duration::from_secs(8), "exit took {took:?}");
    assert!(
        agent
            .log_text()
            .contains("drain timeout reached; unfinished messages are stopped and not acknowledged"),
        "{}",
        agent.log_text()
    );
    assert!(
        !w.port
            .accepted()
            .iter()
            .any(|c| c.path().starts_with("/v1/actions/runs/r_0000")),
        "Port accepted nothing for the run"
    );
    let at_target = w.target.requests().len();
    assert_eq!(at_target, 1, "stopping sent nothing more to the target");
    let committed = w.tansu.committed(GROUP, RUNS, 3);
    for (p, end) in &ends {
        assert!(
            committed[*p as usize] < *end,
            "partition {p}: nothing committed past the stopped run: {committed:?}"
        );
    }

    // Port is back: the next owner runs it again and reports it.
    w.port.state.down.store(false, Ordering::SeqCst);
    let mut next = AgentProcess::start(&env, "drain-port-down-2");
    eventually(
        "the run reported by the next owner",
        Duration::from_secs(60),
        || !w.statuses("r_0000").is_empty(),
    )
    .await;
    assert_eq!(
        w.target.requests().len(),
        at_target + 1,
        "the stopped run was run again"
    );
    next.signal("-TERM");
    assert_eq!(next.wait(Duration::from_secs(30)), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_during_the_drain_exits_at_once_with_130() {
    let (w, _env, mut agent) = one_held_run("second-signal", "60", "second-signal").await;
    agent.signal("-TERM");
    eventually("the drain started", Duration::from_secs(10), || {
        agent.log_text().contains("stopping: draining in-flight messages")
    })
    .await;
    let second = Instant::now();
    agent.signal("-TERM");
    assert_eq!(
        agent.wait(Duration::from_secs(5)),
        Some(130),
        "log: {}",
        agent.log_text()
    );
    assert!(
        second.elapsed() < Duration::from_secs(2),
        "{:?}",
        second.elapsed()
    );
    assert!(agent.log_text().contains("second signal: exiting now"));
    assert!(w.statuses("r_0000").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_leaves_the_group_so_another_member_takes_over_before_the_session_timeout() {
    let w = World::start("leave", GROUP).await;
    // A member that vanished without leaving would keep its partitions for
    // 30 s; one that leaves hands them over at the next rebalance.
    let env = w.env(&[("KAFKA_CONSUMER_SESSION_TIMEOUT_MS", "30000")]);
    let mut first = AgentProcess::start(&env, "leave-1");
    eventually("the first agent assigned", Duration::from_secs(60), || {
        last_assignment(&first).is_some_and(|p| !p.is_empty())
    })
    .await;
    let second = AgentProcess::start(&env, "leave-2");
    eventually("two members, both assigned", Duration::from_secs(60), || {
        w.tansu.group_members(GROUP).len() == 2
            && last_assignment(&second).is_some()
            && log_lines(&first)
                .iter()
                .filter(|l| l["message"] == "partitions assigned")
                .count()
                >= 2
    })
    .await;
    let members = w.tansu.group_members(GROUP);
    // The broker names a member after its client.id.
    assert!(
        members.iter().all(|m| m.starts_with("port-agent-")),
        "client.id=port-agent: {members:?}"
    );

    let signalled = Instant::now();
    first.signal("-TERM");
    assert_eq!(first.wait(Duration::from_secs(30)), Some(0));
    let all = format!("{CHANGES}[0],{RUNS}[0],{RUNS}[1],{RUNS}[2]");
    eventually(
        "the second agent assigned every partition",
        Duration::from_secs(15),
        || {
            last_assignment(&second).is_some_and(|p| {
                let mut v: Vec<&str> = p.split(',').collect();
                v.sort_unstable();
                v.join(",") == all
            })
        },
    )
    .await;
    let handed_over = signalled.elapsed();
    assert!(
        handed_over < Duration::from_secs(15),
        "took {handed_over:?}, the session timeout is 30 s"
    );
    let left = w.tansu.group_members(GROUP);
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(members.contains(&left[0]), "{members:?} / {left:?}");

    // And it works them.
    produce(
        &w.tansu.bootstrap,
        RUNS,
        signed_runs(3, &w.target.url("/run"), false),
    )
    .await;
    eventually(
        "3 runs delivered by the second agent",
        Duration::from_secs(30),
        || w.target.requests().len() == 3,
    )
    .await;
}

/// Issue 23: SIGTERM while every broker is unreachable (the relay in front
/// of tansu cut). The commits before and after the drain and the one on
/// revoke in the consumer's close each wait at most the commit timeout
/// (5 s, or the drain timeout when shorter), and the close is waited for
/// with the same bound: the agent exits 0 within the drain timeout plus
/// 10 s, and says which offsets it could not commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_the_brokers_are_unreachable_exits_in_time_and_says_what_was_not_committed() {
    let (tansu, relay) = Tansu::start_behind_relay().await;
    tansu.create_topic(RUNS, 3).await;
    tansu.create_topic(CHANGES, 1).await;
    let port = FakePort::start().await;
    let target = FakeTarget::start().await;
    target.answer(200, "");
    produce(&tansu.bootstrap, RUNS, signed_runs(3, &target.url("/run"), true)).await;
    let mapping = write_mapping("unreachable");
    let env = agent_env(
        &tansu.bootstrap,
        &port.base(),
        &mapping,
        "org_1.unreachable",
        &[
            ("KAFKA_CONSUMER_SESSION_TIMEOUT_MS", "6000"),
            ("AGENT_DRAIN_TIMEOUT_SECONDS", "5"),
            ("LOG_LEVEL", "info"),
        ],
    );
    let mut agent = AgentProcess::start(&env, "unreachable");
    eventually("the 3 runs reported", Duration::from_secs(60), || {
        (0..3).all(|i| patches_of(&port, &format!("r_{i:04}")).len() == 1)
    })
    .await;

    relay.stop();
    let signalled = Instant::now();
    agent.signal("-TERM");
    // The test's own bound: an agent that hangs fails here, with its log.
    let code = agent.wait(Duration::from_secs(60));
    let took = signalled.elapsed();
    eprintln!("SIGTERM with the brokers unreachable: exit after {took:?}");
    assert!(
        took < Duration::from_secs(15),
        "exit took {took:?}, more than the drain timeout (5 s) + 10 s; log: {}",
        agent.log_text()
    );
    assert_eq!(code, Some(0), "log: {}", agent.log_text());
    let said = log_lines(&agent)
        .into_iter()
        .find(|l| {
            l["level"] == "WARN"
                && l["not_committed"]
                    .as_str()
                    .is_some_and(|s| s.contains("org_1.runs["))
        })
        .unwrap_or_else(|| panic!("a warning names what was not committed: {}", agent.log_text()));
    assert!(
        said["message"]
            .as_str()
            .unwrap_or_default()
            .contains("not committed"),
        "{said}"
    );
    drop(tansu);
}

/// Polling: two runs acked and held at the target, then SIGTERM (the drain
/// starts, with a long drain timeout) and a second SIGTERM; the agent and
/// its fake Port API.
async fn two_polled_runs_then_two_signals(tag: &str, port: &FakePort) -> (AgentProcess, Instant) {
    use crate::support::agent::{claimable, offer, start_polling, wait_until};
    let target = FakeTarget::start().await;
    target.answer_after(200, Duration::from_secs(60));
    offer(
        port,
        ["r_p1", "r_p2"].map(|id| claimable(id, &target.url("/slow"), true, json!({}))),
    );
    let agent = start_polling(
        port,
        tag,
        &json!([{"enabled": true}]),
        &[("AGENT_DRAIN_TIMEOUT_SECONDS", "60"), ("AGENT_RUN_LOGS", "false")],
    );
    wait_until(Duration::from_secs(30), "both runs at the target", &agent, || {
        target.requests().len() == 2
    });
    agent.signal("-TERM");
    wait_until(Duration::from_secs(10), "the drain", &agent, || {
        agent.log_text().contains("stopping: draining in-flight messages")
    });
    let second = Instant::now();
    agent.signal("-TERM");
    (agent, second)
}

/// Issue 28: a second signal while polled runs are in flight (acked, so
/// Port will not hand them out again) reports each FAILURE, "stopped before
/// the run finished", before exiting 130, within a bounded time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_fails_the_polled_runs_in_flight_then_exits_130() {
    let signal_stopped = port_agent::report::FailureSummary::SecondSignal.to_string();
    let port = FakePort::start().await;
    let (mut agent, second) = two_polled_runs_then_two_signals("second-signal-polling", &port).await;
    assert_eq!(
        agent.wait(Duration::from_secs(10)),
        Some(130),
        "{}",
        agent.log_text()
    );
    assert!(
        second.elapsed() < Duration::from_secs(6),
        "{:?}",
        second.elapsed()
    );
    for run in ["r_p1", "r_p2"] {
        assert_eq!(
            patches_of(&port, run),
            vec![json!({"status": "FAILURE", "summary": signal_stopped})],
            "{run}: {}",
            agent.log_text()
        );
    }
    assert!(signal_stopped.starts_with("The agent was stopped before the run finished"));
}

/// Issue 28: the failure reports of a second signal have their own
/// deadline: with Port holding them, the agent still exits 130 within the
/// 5 s bound and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_130_in_bounded_time_when_port_holds_the_reports() {
    let port = FakePort::start().await;
    port.state.holds.lock().unwrap().extend(
        ["/v1/actions/runs/r_p1", "/v1/actions/runs/r_p2"].map(|p| (p.to_string(), Duration::from_secs(60))),
    );
    let (mut agent, second) = two_polled_runs_then_two_signals("second-signal-held", &port).await;
    assert_eq!(
        agent.wait(Duration::from_secs(10)),
        Some(130),
        "{}",
        agent.log_text()
    );
    let took = second.elapsed();
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(7),
        "{took:?}"
    );
    assert!(
        agent
            .log_text()
            .contains("reporting the stopped runs took too long"),
        "{}",
        agent.log_text()
    );
    assert_eq!(port.state.held.lock().unwrap().len(), 2, "both reports were sent");
}

/// Issue 28: a third signal exits at once (130), without waiting for the
/// failure reports of the second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_third_signal_exits_at_once_without_the_reports() {
    let port = FakePort::start().await;
    port.state.holds.lock().unwrap().extend(
        ["/v1/actions/runs/r_p1", "/v1/actions/runs/r_p2"].map(|p| (p.to_string(), Duration::from_secs(60))),
    );
    let (mut agent, _) = two_polled_runs_then_two_signals("third-signal", &port).await;
    crate::support::agent::wait_until(Duration::from_secs(5), "the held reports", &agent, || {
        port.state.held.lock().unwrap().len() == 2
    });
    let third = Instant::now();
    agent.signal("-TERM");
    assert_eq!(
        agent.wait(Duration::from_secs(10)),
        Some(130),
        "{}",
        agent.log_text()
    );
    assert!(third.elapsed() < Duration::from_secs(2), "{:?}", third.elapsed());
    assert!(
        agent.log_text().contains("third signal: exiting at once"),
        "{}",
        agent.log_text()
    );
}
