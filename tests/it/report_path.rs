//! The path from the target's answer to the run's visible status (issue 19):
//! the library's pipeline in-process, with a Port that takes a fixed 50 ms
//! per call and records when each call started and ended, and a target
//! that answers at once. The clock is tokio's paused clock, so the record
//! is exact; nothing is asserted on elapsed time: the assertions count how
//! many Port calls had to end, one after another, before a call started
//! (its depth), and which calls were in flight together.
//!
//! Built from the tests' own pipeline `Config` (`support::pipeline`).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use port_agent::http::ResponseContext;
use port_agent::invoke::{InvokeError, Invoker, OutgoingRequest, TargetResponse};
use port_agent::mapping::{JqEnv, MappingSet};
use port_agent::outcome::{Disposition, Outcome};
use port_agent::pipeline::{Config, Pipeline};
use port_agent::port::{PortCall, PortError, Reporter};
use port_agent::settings::{ReportSettings, RunLogs};
use serde_json::{json, Value};
use tokio::time::Instant;

/// Port's latency per call.
const LATENCY: Duration = Duration::from_millis(50);
const FINISHED: &str = "Port agent finished processing the action run";

/// One Port call as the fake Port saw it.
#[derive(Debug, Clone)]
struct Seen {
    call: PortCall,
    start: Instant,
    end: Instant,
}

/// What the fake Port does with a call, once.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    /// Fail it transiently (after the client's retries): it stays pending.
    Transient,
    /// Refuse it for good (a 4xx).
    Permanent,
}

/// A Port that takes [`LATENCY`] per call and records each accepted call.
#[derive(Default)]
struct SlowPort {
    seen: Mutex<Vec<Seen>>,
    /// Calls to fail once, by (method, path suffix).
    faults: Mutex<Vec<(&'static str, &'static str, Fault)>>,
}

impl SlowPort {
    fn fail_once(&self, method: &'static str, path_suffix: &'static str, fault: Fault) {
        self.faults.lock().unwrap().push((method, path_suffix, fault));
    }

    fn seen(&self) -> Vec<Seen> {
        let mut seen = self.seen.lock().unwrap().clone();
        seen.sort_by_key(|s| s.start);
        seen
    }

    fn take_fault(&self, call: &PortCall) -> Option<Fault> {
        let mut faults = self.faults.lock().unwrap();
        let path = call.path();
        let i = faults
            .iter()
            .position(|(m, p, _)| *m == call.method() && path.ends_with(p))?;
        Some(faults.remove(i).2)
    }
}

impl Reporter for SlowPort {
    async fn send(&self, call: &PortCall) -> Result<(), PortError> {
        let start = Instant::now();
        tokio::time::sleep(LATENCY).await;
        if let Some(fault) = self.take_fault(call) {
            return Err(PortError {
                call: format!("{} {}", call.method(), call.path()),
                message: "injected".into(),
                permanent: fault == Fault::Permanent,
                ..PortError::default()
            });
        }
        let end = Instant::now();
        self.seen.lock().unwrap().push(Seen {
            call: call.clone(),
            start,
            end,
        });
        Ok(())
    }
}

/// A target that answers at once with a fixed answer (or fails), and
/// records when.
struct QuickTarget {
    answer: Result<(u16, String), String>,
    answered_at: Mutex<Option<Instant>>,
}

impl QuickTarget {
    fn answering(status: u16, text: &str) -> QuickTarget {
        QuickTarget {
            answer: Ok((status, text.into())),
            answered_at: Mutex::default(),
        }
    }

    fn failing(message: &str) -> QuickTarget {
        QuickTarget {
            answer: Err(message.into()),
            answered_at: Mutex::default(),
        }
    }

    fn answered_at(&self) -> Instant {
        self.answered_at.lock().unwrap().expect("the target was called")
    }
}

impl Invoker for QuickTarget {
    async fn send(&self, _request: &OutgoingRequest) -> Result<TargetResponse, InvokeError> {
        *self.answered_at.lock().unwrap() = Some(Instant::now());
        match &self.answer {
            Ok((status, text)) => Ok(TargetResponse {
                response: ResponseContext {
                    status: *status,
                    headers: vec![],
                    text: text.clone(),
                },
                attempts: 1,
                truncated: false,
            }),
            Err(message) => Err(InvokeError {
                message: message.clone(),
                attempts: 1,
            }),
        }
    }
}

type Agent = Pipeline<QuickTarget, SlowPort>;

fn pipeline_with(target: QuickTarget, mappings: Value, run_logs: RunLogs) -> Agent {
    let config = Config {
        secret: None,
        skip_signature_check: true,
        report: ReportSettings {
            detailed_logging: false,
            run_logs,
            ..ReportSettings::default()
        },
        fixed_timestamp: Some(1_763_800_000),
        ..crate::support::pipeline::config()
    };
    let mappings = Arc::new(MappingSet::from_value(&mappings).unwrap());
    Pipeline::new(config, mappings, JqEnv::new([]), target, SlowPort::default())
}

fn message(run_id: &str, synchronized: bool) -> Value {
    json!({
        "action": "deploy_service",
        "resourceType": "run",
        "status": "TRIGGERED",
        "context": {"entity": "svc-a", "blueprint": "microservice", "runId": run_id},
        "payload": {
            "action": {"invocationMethod": {"type": "WEBHOOK", "agent": true, "synchronized": synchronized,
                                            "method": "POST", "url": "http://target.invalid/hook"}},
            "properties": {}
        },
        "headers": {}
    })
}

/// A message whose request cannot be built: no URL anywhere.
fn without_url(run_id: &str) -> Value {
    let mut m = message(run_id, false);
    m["payload"]["action"]["invocationMethod"]
        .as_object_mut()
        .unwrap()
        .remove("url");
    m
}

async fn process(agent: &Agent, message: Value) -> Outcome {
    let delivery = crate::support::pipeline::delivery("org_1.runs", message.to_string(), 1);
    agent.process(&delivery).await
}

/// How many Port calls ended, one after another, from `from` to the end of
/// `seen[i]`: the longest chain of calls that each started when (or after)
/// the one before it ended, all starting at or after `from`, ending with
/// `seen[i]`.
fn depth(seen: &[Seen], i: usize, from: Instant) -> usize {
    let before = seen
        .iter()
        .enumerate()
        .filter(|(_, s)| s.start >= from && s.end <= seen[i].start)
        .map(|(j, _)| depth(seen, j, from))
        .max()
        .unwrap_or(0);
    before + 1
}

fn is_log(c: &PortCall) -> bool {
    matches!(c, PortCall::RunLog { .. } | PortCall::NodeRunLog { .. })
}

fn log_text(c: &PortCall) -> String {
    match c {
        PortCall::RunLog { message, .. } | PortCall::NodeRunLog { message, .. } => message.clone(),
        _ => unreachable!(),
    }
}

/// The index of the one call that is not a log and is the last of the
/// result chain (the status).
/// The run-log lines among `seen`, in the order they were sent.
fn log_texts(seen: &[Seen]) -> Vec<String> {
    seen.iter()
        .filter(|s| is_log(&s.call))
        .map(|s| log_text(&s.call))
        .collect()
}

fn status_index(seen: &[Seen]) -> usize {
    let results: Vec<usize> = (0..seen.len()).filter(|&i| !is_log(&seen[i].call)).collect();
    *results.last().expect("a status was reported")
}

/// (method, path, body) of the calls in start order.
fn wire(seen: &[Seen]) -> Vec<(String, String, Value)> {
    seen.iter()
        .map(|s| (s.call.method().to_string(), s.call.path(), s.call.body()))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_synchronous_run_shows_its_status_two_round_trips_after_the_answer() {
    let agent = pipeline_with(
        QuickTarget::answering(200, r#"{"id":7}"#),
        json!([{"enabled": true}]),
        RunLogs::All,
    );
    let (port, target) = (agent.reporter(), agent.invoker());
    let started = Instant::now();
    let outcome = process(&agent, message("r_sync", true)).await;
    assert_eq!(outcome.result, Disposition::Delivered(200));
    assert!(outcome.port_errors.is_empty());

    let seen = port.seen();
    // Exactly the calls of before, with the same bodies.
    let run = "/v1/actions/runs/r_sync";
    let log = |m: &str| ("POST".to_string(), format!("{run}/logs"), json!({ "message": m }));
    let mut got = wire(&seen);
    got.sort_by(|a, b| a.1.cmp(&b.1).then(a.2.to_string().cmp(&b.2.to_string())));
    let mut want = vec![
        log("An action message has been received"),
        log("Preparing the payload for the request"),
        log("Sending the request"),
        log("Action invocation has completed successfully with status code: 200"),
        log("Reporting the run response"),
        log("The run response was reported successfully "),
        log(FINISHED),
        (
            "PATCH".into(),
            format!("{run}/response"),
            json!({"response": {"id": 7}}),
        ),
        ("PATCH".into(), run.to_string(), json!({"status": "SUCCESS"})),
    ];
    want.sort_by(|a, b| a.1.cmp(&b.1).then(a.2.to_string().cmp(&b.2.to_string())));
    assert_eq!(got, want);

    // Each chain in its order: the log lines one after another, the
    // response ended before the status started.
    let logs: Vec<&Seen> = seen.iter().filter(|s| is_log(&s.call)).collect();
    let texts = log_texts(&seen);
    assert_eq!(
        texts,
        [
            "An action message has been received",
            "Preparing the payload for the request",
            "Sending the request",
            "Action invocation has completed successfully with status code: 200",
            "Reporting the run response",
            "The run response was reported successfully ",
            FINISHED,
        ]
    );
    assert!(
        logs.windows(2).all(|w| w[0].end <= w[1].start),
        "log lines overlap"
    );
    let response = seen
        .iter()
        .position(|s| matches!(s.call, PortCall::RunResponse { .. }))
        .unwrap();
    let status = status_index(&seen);
    assert!(
        seen[response].end <= seen[status].start,
        "the status went before the response"
    );

    // The status: 2 round trips after the answer (the response, then it),
    // 2 after the message too (the target answered at once).
    assert_eq!(depth(&seen, status, target.answered_at()), 2);
    assert_eq!(depth(&seen, status, started), 2);
    // The status was in flight while a log line was: the logs did not
    // hold it back; the run ended with its seventh log, 7 round trips in.
    assert!(logs
        .iter()
        .any(|l| l.start < seen[status].end && seen[status].start < l.end));
    let last = seen.iter().map(|s| s.end).max().unwrap();
    let finished = seen
        .iter()
        .position(|s| s.end == last && is_log(&s.call))
        .unwrap();
    assert_eq!(depth(&seen, finished, started), 7);
}

#[tokio::test(start_paused = true)]
async fn without_a_response_the_status_is_one_round_trip_after_the_answer() {
    // (run id, synchronized, target answer, AGENT_RUN_LOGS, the status call)
    let cases = [
        ("r_fail", false, 500, RunLogs::All, "/v1/actions/runs/r_fail"),
        ("r_empty", true, 200, RunLogs::All, "/v1/actions/runs/r_empty"),
        (
            "wfnr_sync",
            true,
            200,
            RunLogs::All,
            "/v1/workflows/nodes/runs/wfnr_sync",
        ),
        (
            "wfnr_fail",
            false,
            503,
            RunLogs::Minimal,
            "/v1/workflows/nodes/runs/wfnr_fail",
        ),
        ("r_min", false, 500, RunLogs::Minimal, "/v1/actions/runs/r_min"),
    ];
    for (run_id, synchronized, status, run_logs, path) in cases {
        let text = if run_id == "r_empty" { "" } else { "{}" };
        let agent = pipeline_with(
            QuickTarget::answering(status, text),
            json!([{"enabled": true}]),
            run_logs,
        );
        let (port, target) = (agent.reporter(), agent.invoker());
        process(&agent, message(run_id, synchronized)).await;
        let seen = port.seen();
        let results: Vec<&Seen> = seen.iter().filter(|s| !is_log(&s.call)).collect();
        assert_eq!(results.len(), 1, "{run_id}: {seen:?}");
        assert_eq!(results[0].call.path(), path);
        assert_eq!(
            depth(&seen, status_index(&seen), target.answered_at()),
            1,
            "{run_id}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn failures_without_an_answer_show_their_status_after_one_round_trip() {
    // The request could not be delivered.
    let agent = pipeline_with(
        QuickTarget::failing("connection refused"),
        json!([{"enabled": true}]),
        RunLogs::All,
    );
    let port = agent.reporter();
    let started = Instant::now();
    let outcome = process(&agent, message("r_down", false)).await;
    assert!(matches!(outcome.result, Disposition::RequestFailed(_)));
    let seen = port.seen();
    let texts = log_texts(&seen);
    assert_eq!(
        texts,
        [
            "An action message has been received",
            "Preparing the payload for the request",
            "Sending the request",
            "Action invocation failed: connection refused",
            FINISHED,
        ]
    );
    let status = status_index(&seen);
    assert_eq!(
        seen[status].call.body(),
        json!({"status": "FAILURE", "summary": "Failed to invoke the webhook: connection refused"})
    );
    assert_eq!(depth(&seen, status, started), 1);

    // The request could not be built: "received", "preparing", then
    // "finished"; the status does not wait for them.
    let agent = pipeline_with(
        QuickTarget::answering(200, ""),
        json!([{"enabled": true}]),
        RunLogs::All,
    );
    let port = agent.reporter();
    let started = Instant::now();
    let outcome = process(&agent, without_url("r_bad")).await;
    assert!(matches!(outcome.result, Disposition::RequestFailed(_)));
    let seen = port.seen();
    let texts = log_texts(&seen);
    assert_eq!(
        texts,
        [
            "An action message has been received",
            "Preparing the payload for the request",
            FINISHED,
        ]
    );
    assert_eq!(depth(&seen, status_index(&seen), started), 1);
}

#[tokio::test(start_paused = true)]
async fn run_logs_minimal_posts_one_line_and_off_none() {
    // A synchronous run with a response body: seven lines with `all`.
    let cases = [(RunLogs::All, 7), (RunLogs::Minimal, 1), (RunLogs::Off, 0)];
    for (run_logs, lines) in cases {
        let agent = pipeline_with(
            QuickTarget::answering(200, r#"{"id":7}"#),
            json!([{"enabled": true}]),
            run_logs,
        );
        let port = agent.reporter();
        process(&agent, message("r_logs", true)).await;
        let seen = port.seen();
        let texts = log_texts(&seen);
        assert_eq!(texts.len(), lines, "{run_logs:?}: {texts:?}");
        if run_logs == RunLogs::Minimal {
            assert_eq!(
                texts,
                ["Action invocation has completed successfully with status code: 200"]
            );
        }
        // The response and the status, whatever the logs.
        assert_eq!(seen.len() - lines, 2, "{run_logs:?}");
    }
    // Minimal, a request that could not be delivered: the line says so.
    let agent = pipeline_with(
        QuickTarget::failing("timed out"),
        json!([{"enabled": true}]),
        RunLogs::Minimal,
    );
    let port = agent.reporter();
    process(&agent, message("r_min_down", false)).await;
    let texts = log_texts(&port.seen());
    assert_eq!(texts, ["Action invocation failed: timed out"]);
    // Minimal, a request that could not be built: its summary.
    let agent = pipeline_with(
        QuickTarget::answering(200, ""),
        json!([{"enabled": true}]),
        RunLogs::Minimal,
    );
    let port = agent.reporter();
    process(&agent, without_url("r_min_bad")).await;
    let texts = log_texts(&port.seen());
    assert_eq!(texts.len(), 1);
    assert_eq!(
        texts,
        ["Failed to build the request: the mapping and the invocation method give no URL"]
    );
}

#[tokio::test(start_paused = true)]
async fn a_pending_response_holds_the_status_and_the_run_until_port_accepts_it() {
    let agent = pipeline_with(
        QuickTarget::answering(200, r#"{"id":7}"#),
        json!([{"enabled": true}]),
        RunLogs::All,
    );
    let port = agent.reporter();
    port.fail_once("PATCH", "/response", Fault::Transient);
    port.fail_once("POST", "/logs", Fault::Transient);
    // While a log line and the response both wait for Port, the run
    // counts once in the backlog (`/readyz`).
    let backlog = agent.report_backlog();
    let peek = async {
        tokio::time::sleep(4 * LATENCY).await;
        backlog.pending()
    };
    let (outcome, waiting) = tokio::join!(process(&agent, message("r_pending", true)), peek);
    assert_eq!(waiting, 1);
    assert!(outcome.port_errors.is_empty());
    // Every call was accepted in the end, each chain in order.
    let seen = port.seen();
    assert_eq!(seen.len(), 9);
    let response = seen
        .iter()
        .position(|s| matches!(s.call, PortCall::RunResponse { .. }))
        .unwrap();
    let status = status_index(&seen);
    assert!(seen[response].end <= seen[status].start);
    let texts = log_texts(&seen);
    assert_eq!(texts[0], "An action message has been received");
    assert_eq!(texts[6], FINISHED);
    // The run (and so the message's offset) was done only after the last
    // accepted call.
    assert_eq!(agent.report_backlog().pending(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_call_port_refuses_for_good_is_a_port_error_and_the_rest_still_goes() {
    let agent = pipeline_with(
        QuickTarget::answering(500, "{}"),
        json!([{"enabled": true}]),
        RunLogs::All,
    );
    let port = agent.reporter();
    port.fail_once("POST", "/logs", Fault::Permanent);
    let outcome = process(&agent, message("r_refused", false)).await;
    assert_eq!(outcome.port_errors.len(), 1, "{:?}", outcome.port_errors);
    assert!(outcome.needs_dead_letter());
    let seen = port.seen();
    let paths: HashSet<String> = seen.iter().map(|s| s.call.path()).collect();
    assert!(paths.contains("/v1/actions/runs/r_refused"));
    // 5 lines, the first refused; 1 status.
    assert_eq!(seen.len(), 4 + 1);
}
