//! README claims about the pipeline, checked on the built binary: run logs
//! travel while the target request is in flight (polling mode, no broker),
//! and numbers keep their form from a Kafka message to the target (tansu).

use std::time::Duration;

use crate::support::agent::*;
use crate::support::broker::{agent_env, eventually, produce, AgentProcess, Tansu};
use crate::support::{action_run, signed, FakePort, FakeTarget, SECRET};
use serde_json::{json, Value};

/// The target holds the request for 3 s; the three run logs that precede
/// it ("received", "preparing", "sending") reach Port while it is held, in
/// order, and the status report only after the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_logs_travel_while_the_target_request_is_in_flight() {
    let (port, target) = (FakePort::start().await, FakeTarget::start().await);
    let hold = Duration::from_secs(3);
    target.answer_after(200, hold);
    offer(
        &port,
        [claimable("r_logs", &target.url("/held"), true, json!({}))],
    );
    let agent = start_polling(&port, "logs-in-flight", &json!([{"enabled": true}]), &[]);
    wait_until(Duration::from_secs(30), "the held request", &agent, || {
        target.requests().len() == 1
    });
    wait_until(Duration::from_secs(2), "three run logs", &agent, || {
        run_logs_of(&port, "r_logs").len() >= 3
    });
    // Still held: the logs did not wait for the answer.
    let in_flight = target.state.in_flight.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(in_flight, 1, "the target has not answered yet");
    let answered_at = target.requests()[0].at + hold;
    let early: Vec<String> = run_logs_of(&port, "r_logs")
        .iter()
        .filter(|c| c.at < answered_at)
        .map(|c| c.json()["message"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        early,
        [
            "An action message has been received",
            "Preparing the payload for the request",
            "Sending the request"
        ]
    );
    wait_until(Duration::from_secs(10), "the report", &agent, || {
        !patches_of(&port, "r_logs").is_empty()
    });
    stop(agent);
    let status = port
        .accepted()
        .into_iter()
        .find(|c| c.method == "PATCH" && c.path() == "/v1/actions/runs/r_logs")
        .expect("the report");
    assert!(status.at >= answered_at, "reported after the answer");
}

/// The properties of the message, as Port writes them (parsed from text so
/// that the literals keep their form).
const NUMBERS: &str = r#"{"big": 123456789012345678901234567890, "p53": 9007199254740993, "small": 1e-07, "negz": -0.0, "one": 1.0}"#;

/// A signed Kafka message carrying a 30-digit integer, 2^53+1, `1e-07`,
/// `-0.0` and `1.0` reaches the target with each number as it was written:
/// in the whole message (the default body) and through jq (`.payload`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_keep_their_form_from_the_message_to_the_target() {
    let tansu = Tansu::start();
    tansu.create_topic("org_1.runs", 1).await;
    tansu.create_topic("org_1.change.log", 1).await;
    let (port, target) = (FakePort::start().await, FakeTarget::start().await);
    let properties: Value = serde_json::from_str(NUMBERS).unwrap();
    let message = |run: &str| {
        let mut m = action_run(run, &target.url("/n"), "POST", false);
        m["payload"]["properties"] = properties.clone();
        signed(m, SECRET, 1)
    };
    produce(
        &tansu.bootstrap,
        "org_1.runs",
        vec![(0, message("r_whole")), (0, message("r_jq"))],
    )
    .await;
    let mapping = mapping_file(
        "numbers",
        &json!([
            {"enabled": ".context.runId == \"r_jq\"", "body": ".payload.properties"},
            {"enabled": true}
        ]),
    );
    let env = agent_env(&tansu.bootstrap, &port.base(), &mapping, "org_1.numbers", &[]);
    let mut agent = AgentProcess::start(&env, "numbers");
    eventually("both runs at the target", Duration::from_secs(60), || {
        target.requests().len() == 2
    })
    .await;
    agent.signal("-TERM");
    assert_eq!(
        agent.wait(Duration::from_secs(30)),
        Some(0),
        "{}",
        agent.log_text()
    );

    let body_of = |run: &str| {
        target
            .requests()
            .into_iter()
            .find(|r| r.header("x-port-run-id") == Some(run))
            .unwrap_or_else(|| panic!("{run} reached the target"))
            .text()
    };
    let literals =
        r#""big":123456789012345678901234567890,"p53":9007199254740993,"small":1e-07,"negz":-0.0,"one":1.0"#;
    assert_eq!(body_of("r_jq"), format!("{{{literals}}}"));
    let whole = body_of("r_whole");
    assert!(
        whole.contains(&format!(r#""properties":{{{literals}}}"#)),
        "{whole}"
    );
}
