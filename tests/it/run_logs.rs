//! Run-log parity with the Python agent (issue 27): with `AGENT_RUN_LOGS=all`
//! (the default) a run's log in Port holds the Python agent's lines, in its
//! order, to the character. The built binary in polling mode against the
//! fake Port API; every kind of run and outcome is one row of the table,
//! each run with a target of its own. The texts are quoted from the Python
//! agent v0.8.9 (`port-labs/port-agent` at tag v0.8.9, commit 4732c34,
//! `app/invokers/webhook_invoker.py`); the lines that differ on purpose
//! (README, "Differences from the Python agent") are marked `OURS`.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::agent::{claimable, offer, start_polling};
use crate::support::broker::AgentProcess;
use crate::support::{closed_port, FakePort, FakeTarget, Recorded};

// webhook_invoker.py:324 `run_logger("An action message has been received")`
const RECEIVED: &str = "An action message has been received";
// webhook_invoker.py:333 `run_logger("Preparing the payload for the request")`
const PREPARING: &str = "Preparing the payload for the request";
// webhook_invoker.py:162 `run_logger("Sending the request")`
const SENDING: &str = "Sending the request";
// webhook_invoker.py:249 `run_logger("Reporting the run response")`
const REPORTING: &str = "Reporting the run response";
// webhook_invoker.py:259 `run_logger("The run response was reported successfully ")`
// (the trailing space is the Python agent's)
const REPORTED: &str = "The run response was reported successfully ";
// webhook_invoker.py:360 `run_logger("Port agent finished processing the action run")`
const FINISHED: &str = "Port agent finished processing the action run";
// webhook_invoker.py:295 `node_run_logger("A workflow node run has been received")`
const NODE_RECEIVED: &str = "A workflow node run has been received";
// webhook_invoker.py:318 `node_run_logger("Port agent finished processing the workflow node run")`
const NODE_FINISHED: &str = "Port agent finished processing the workflow node run";

/// `DETAILED_LOGGING`'s suffix: `user_msg += f" and response: {res.text}"`
/// (webhook_invoker.py:202, 227, 273), an empty text too.
fn detail(response: Option<&str>) -> String {
    response
        .map(|r| format!(" and response: {r}"))
        .unwrap_or_default()
}

// webhook_invoker.py:188-191 `"Action invocation has completed successfully with " f"status code: {res.status_code}"`
fn succeeded(status: u16) -> String {
    format!("Action invocation has completed successfully with status code: {status}")
}

// webhook_invoker.py:200-203 `f"Action invocation failed with status code: {res.status_code}"` (+ detail)
fn failed(status: u16, response: Option<&str>) -> String {
    format!(
        "Action invocation failed with status code: {status}{}",
        detail(response)
    )
}

// webhook_invoker.py:268-274 `f"The run response failed to be reported " f"with status code: {res.status_code}"` (+ detail)
fn response_not_reported(status: u16, response: Option<&str>) -> String {
    format!(
        "The run response failed to be reported with status code: {status}{}",
        detail(response)
    )
}

// webhook_invoker.py:222-228 `f"The run state failed to be reported " f"with status code: {res.status_code}"` (+ detail)
fn state_not_reported(status: u16, response: Option<&str>) -> String {
    format!(
        "The run state failed to be reported with status code: {status}{}",
        detail(response)
    )
}

/// OURS: the line of a request that could not be delivered (the Python
/// agent posts none: its exception ends the run, an action run left
/// IN_PROGRESS).
const UNDELIVERED: &str = "Action invocation failed: ";

/// One expected line: exactly this text, or (`OURS` lines that name an
/// error of this machine) this beginning.
#[derive(Debug, Clone)]
enum Line {
    Is(String),
    Starts(&'static str),
}

fn is(text: impl Into<String>) -> Line {
    Line::Is(text.into())
}

/// How the run's target answers.
#[derive(Debug, Clone, Copy)]
enum Target {
    Answers(u16, &'static str),
    /// Nothing listens (connection refused).
    Unreachable,
}

/// Port's answer to a refused call (`/response` or the status PATCH).
const REFUSAL: &str = r#"{"ok":false,"error":"not_found"}"#;

struct Case {
    id: &'static str,
    node: bool,
    synchronized: bool,
    target: Target,
    /// Port refuses the call to this path (under the run's) with this status.
    refuses: Option<(&'static str, u16)>,
    want: Vec<Line>,
}

fn action(id: &'static str, synchronized: bool, target: Target, want: Vec<Line>) -> Case {
    Case {
        id,
        node: false,
        synchronized,
        target,
        refuses: None,
        want,
    }
}

fn node(id: &'static str, synchronized: bool, target: Target, want: Vec<Line>) -> Case {
    Case {
        node: true,
        ..action(id, synchronized, target, want)
    }
}

/// The cases with `DETAILED_LOGGING=true` (the default).
fn detailed_cases() -> Vec<Case> {
    use Target::*;
    let start = || vec![is(RECEIVED), is(PREPARING), is(SENDING)];
    let with = |mut head: Vec<Line>, tail: Vec<Line>| {
        head.extend(tail);
        head
    };
    let node_start = || vec![is(NODE_RECEIVED), is(SENDING)];
    vec![
        // Action runs.
        action(
            "r_async_200",
            false,
            Answers(200, r#"{"id":1}"#),
            with(start(), vec![is(succeeded(200)), is(FINISHED)]),
        ),
        action(
            "r_sync_200_body",
            true,
            Answers(200, r#"{"id":1}"#),
            with(
                start(),
                vec![is(succeeded(200)), is(REPORTING), is(REPORTED), is(FINISHED)],
            ),
        ),
        action(
            "r_sync_200_empty",
            true,
            Answers(200, ""),
            with(start(), vec![is(succeeded(200)), is(FINISHED)]),
        ),
        action(
            "r_sync_201_text",
            true,
            Answers(201, "created"),
            with(
                start(),
                vec![is(succeeded(201)), is(REPORTING), is(REPORTED), is(FINISHED)],
            ),
        ),
        // The Python agent reports the response of a synchronous run
        // whatever its status; it ends without the finished line (OURS).
        action(
            "r_sync_400_body",
            true,
            Answers(400, "bad input"),
            with(
                start(),
                vec![
                    is(failed(400, Some("bad input"))),
                    is(REPORTING),
                    is(REPORTED),
                    is(FINISHED),
                ],
            ),
        ),
        action(
            "r_async_500",
            false,
            Answers(500, "oops"),
            with(start(), vec![is(failed(500, Some("oops"))), is(FINISHED)]),
        ),
        action(
            "r_async_404_empty",
            false,
            Answers(404, ""),
            with(start(), vec![is(failed(404, Some(""))), is(FINISHED)]),
        ),
        // OURS: the Python agent posts nothing after "Sending the request".
        action(
            "r_unreachable",
            false,
            Unreachable,
            with(start(), vec![Line::Starts(UNDELIVERED), is(FINISHED)]),
        ),
        Case {
            refuses: Some(("/response", 422)),
            ..action(
                "r_response_refused",
                true,
                Answers(200, r#"{"id":2}"#),
                with(
                    start(),
                    vec![
                        is(succeeded(200)),
                        is(REPORTING),
                        is(response_not_reported(422, Some(REFUSAL))),
                        is(FINISHED),
                    ],
                ),
            )
        },
        Case {
            refuses: Some(("", 404)),
            ..action(
                "r_state_refused",
                true,
                Answers(200, r#"{"id":3}"#),
                with(
                    start(),
                    vec![
                        is(succeeded(200)),
                        is(REPORTING),
                        is(REPORTED),
                        is(state_not_reported(404, Some(REFUSAL))),
                        is(FINISHED),
                    ],
                ),
            )
        },
        Case {
            refuses: Some(("", 404)),
            ..action(
                "r_failed_state_refused",
                false,
                Answers(500, "down"),
                with(
                    start(),
                    vec![
                        is(failed(500, Some("down"))),
                        is(state_not_reported(404, Some(REFUSAL))),
                        is(FINISHED),
                    ],
                ),
            )
        },
        // Node runs: no "Preparing" line, and the finished line only on
        // success (webhook_invoker.py:300-307 returns early on a failure).
        node(
            "wfnr_sync_200",
            true,
            Answers(200, r#"{"a":1}"#),
            with(node_start(), vec![is(succeeded(200)), is(NODE_FINISHED)]),
        ),
        node(
            "wfnr_async_200",
            false,
            Answers(200, r#"{"a":1}"#),
            with(node_start(), vec![is(succeeded(200)), is(NODE_FINISHED)]),
        ),
        node(
            "wfnr_sync_empty",
            true,
            Answers(200, ""),
            with(node_start(), vec![is(succeeded(200)), is(NODE_FINISHED)]),
        ),
        node(
            "wfnr_sync_text",
            true,
            Answers(202, "accepted"),
            with(node_start(), vec![is(succeeded(202)), is(NODE_FINISHED)]),
        ),
        node(
            "wfnr_sync_500",
            true,
            Answers(500, "broken"),
            with(node_start(), vec![is(failed(500, Some("broken")))]),
        ),
        node(
            "wfnr_async_400",
            false,
            Answers(400, ""),
            with(node_start(), vec![is(failed(400, Some("")))]),
        ),
        // OURS: the line that says why (the Python agent posts none).
        node(
            "wfnr_unreachable",
            true,
            Unreachable,
            with(node_start(), vec![Line::Starts(UNDELIVERED)]),
        ),
    ]
}

/// The cases with `DETAILED_LOGGING=false`: no response text in the lines.
fn plain_cases() -> Vec<Case> {
    use Target::*;
    let start = || vec![is(RECEIVED), is(PREPARING), is(SENDING)];
    vec![
        action("r_plain_500", false, Answers(500, "oops"), {
            let mut w = start();
            w.extend([is(failed(500, None)), is(FINISHED)]);
            w
        }),
        Case {
            refuses: Some(("/response", 422)),
            ..action("r_plain_refused", true, Answers(200, r#"{"id":4}"#), {
                let mut w = start();
                w.extend([
                    is(succeeded(200)),
                    is(REPORTING),
                    is(response_not_reported(422, None)),
                    is(FINISHED),
                ]);
                w
            })
        },
        node(
            "wfnr_plain_500",
            true,
            Answers(500, "broken"),
            vec![is(NODE_RECEIVED), is(SENDING), is(failed(500, None))],
        ),
    ]
}

/// Each case's target, and its run offered to Port.
async fn set_up(port: &FakePort, cases: &[Case]) -> Vec<Option<FakeTarget>> {
    let mut targets = Vec::new();
    for case in cases {
        let (url, target) = match case.target {
            Target::Answers(status, body) => {
                let t = FakeTarget::start().await;
                t.answer(status, body);
                (t.url("/hook"), Some(t))
            }
            Target::Unreachable => (format!("http://127.0.0.1:{}/hook", closed_port()), None),
        };
        targets.push(target);
        if let Some((suffix, status)) = case.refuses {
            let base = if case.node {
                "/v1/workflows/nodes/runs"
            } else {
                "/v1/actions/runs"
            };
            let refusal: Value = serde_json::from_str(REFUSAL).expect("json");
            port.state
                .answers
                .lock()
                .unwrap()
                .insert(format!("{base}/{}{suffix}", case.id), (status, refusal));
        }
        if case.node {
            port.state.claimable_node_runs.lock().unwrap().push_back(json!({
                "identifier": case.id,
                "config": {"type": "WEBHOOK", "url": url, "method": "POST", "agent": true,
                           "headers": {}, "synchronized": case.synchronized}}));
        } else {
            offer(port, [claimable(case.id, &url, case.synchronized, json!({}))]);
        }
    }
    targets
}

/// The log lines Port accepted for the run, in order.
fn lines_of(port: &FakePort, case: &Case) -> Vec<String> {
    let path = if case.node {
        format!("/v1/workflows/nodes/runs/{}/logs", case.id)
    } else {
        format!("/v1/actions/runs/{}/logs", case.id)
    };
    port.accepted()
        .iter()
        .filter(|c| c.method == "POST" && c.path() == path)
        .map(|c| {
            let body = c.json();
            if case.node {
                assert_eq!(body["logs"][0]["level"], "INFO", "{}: {body}", case.id);
                assert_eq!(
                    body["logs"].as_array().map(Vec::len),
                    Some(1),
                    "{}: {body}",
                    case.id
                );
                body["logs"][0]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            } else {
                body["message"].as_str().unwrap_or_default().to_string()
            }
        })
        .collect()
}

fn matches(got: &[String], want: &[Line]) -> bool {
    got.len() == want.len()
        && got.iter().zip(want).all(|(g, w)| match w {
            Line::Is(text) => g == text,
            Line::Starts(prefix) => g.starts_with(prefix) && g.len() > prefix.len(),
        })
}

/// Wait (bounded) until every run has at least its expected number of
/// lines, stop the agent (it finishes its runs first), then compare each
/// run's lines with the table.
fn check(port: &FakePort, agent: AgentProcess, cases: &[Case]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && cases.iter().any(|c| lines_of(port, c).len() < c.want.len()) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = agent.log_text();
    crate::support::agent::stop(agent);
    let mut wrong = Vec::new();
    for case in cases {
        let got = lines_of(port, case);
        if !matches(&got, &case.want) {
            wrong.push(format!("{}:\n  got  {got:?}\n  want {:?}", case.id, case.want));
        }
    }
    assert!(wrong.is_empty(), "{}\nagent log:\n{log}", wrong.join("\n"));
}

/// A line about a result call comes after that call: "The run response
/// was reported successfully " after Port took the response, the refusal
/// lines after Port refused.
fn check_lines_follow_their_calls(port: &FakePort) {
    let calls = port.all_calls();
    let at = |pred: &dyn Fn(&Recorded) -> bool, what: &str| {
        calls
            .iter()
            .position(pred)
            .unwrap_or_else(|| panic!("no call: {what}"))
    };
    let line = |run: &'static str, text: String| {
        move |c: &Recorded| {
            c.path() == format!("/v1/actions/runs/{run}/logs") && c.json()["message"] == text.as_str()
        }
    };
    let response = at(
        &|c| c.path() == "/v1/actions/runs/r_sync_200_body/response" && c.status == 200,
        "the response",
    );
    assert!(response < at(&line("r_sync_200_body", REPORTED.into()), REPORTED));
    let refused = at(
        &|c| c.path() == "/v1/actions/runs/r_response_refused/response" && c.status == 422,
        "the refused response",
    );
    let refusal_line = response_not_reported(422, Some(REFUSAL));
    assert!(refused < at(&line("r_response_refused", refusal_line.clone()), &refusal_line));
    let state = at(
        &|c| c.method == "PATCH" && c.path() == "/v1/actions/runs/r_state_refused" && c.status == 404,
        "the refused status",
    );
    let state_line = state_not_reported(404, Some(REFUSAL));
    assert!(state < at(&line("r_state_refused", state_line.clone()), &state_line));
}

/// Every kind of run and outcome posts the Python agent's lines, in its
/// order (`OURS` lines aside), with `DETAILED_LOGGING` on and off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kind_of_run_posts_the_python_agents_lines_in_its_order() {
    let (detailed_port, plain_port) = (FakePort::start().await, FakePort::start().await);
    let (detailed, plain) = (detailed_cases(), plain_cases());
    let _targets = set_up(&detailed_port, &detailed).await;
    let _plain_targets = set_up(&plain_port, &plain).await;
    // The claims follow each other at the test interval of start_polling.
    let settings = [("AGENT_RETRY_MAX_ATTEMPTS", "1")];
    let mapping = json!([{"enabled": true}]);
    let detailed_agent = start_polling(&detailed_port, "runlogs-detailed", &mapping, &settings);
    let mut plain_settings = settings.to_vec();
    plain_settings.push(("DETAILED_LOGGING", "false"));
    let plain_agent = start_polling(&plain_port, "runlogs-plain", &mapping, &plain_settings);
    check(&detailed_port, detailed_agent, &detailed);
    check(&plain_port, plain_agent, &plain);
    check_lines_follow_their_calls(&detailed_port);
}

/// The Port calls `render` and `dry-run` show for `message` (the target
/// assumed to answer 200 with a body), each as `(method, path, body)`.
fn shown_calls(message: &Value) -> (Vec<Value>, Vec<Value>) {
    use crate::support::cli::{arg, run_cli, stdout, temp_file};
    let id = message["context"]["runId"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mapping = temp_file(
        "run_logs",
        &format!("{id}-mapping.json"),
        r#"[{"enabled": true}]"#,
    );
    let file = temp_file("run_logs", &format!("{id}-message.json"), &message.to_string());
    let record = json!({"topic": "org_1.runs", "partition": 0, "offset": 0, "timestamp": 1,
                        "key": null, "headers": {}, "value": message});
    let input = temp_file("run_logs", &format!("{id}-topic.jsonl"), &format!("{record}\n"));
    let env = [
        ("PORT_CLIENT_SECRET", crate::support::SECRET),
        ("PORT_ORG_ID", "org_1"),
    ];
    let body = r#"{"ok":true}"#;
    let render = run_cli(
        &[
            "render",
            "--mapping",
            arg(&mapping),
            "--message",
            arg(&file),
            "--assume-body",
            body,
            "--format",
            "json",
        ],
        &env,
    );
    assert_eq!(
        render.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&render.stderr)
    );
    let rendered: Value = serde_json::from_str(stdout(&render).trim()).expect("render's JSON");
    let dry = run_cli(
        &[
            "dry-run",
            "--input",
            arg(&input),
            "--mapping",
            arg(&mapping),
            "--assume-body",
            body,
            "--format",
            "json",
        ],
        &env,
    );
    assert_eq!(
        dry.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    let entry: Value = stdout(&dry)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("one JSON object per line"))
        .find(|l| l["run_id"] == id.as_str())
        .expect("the run's entry");
    let calls = |v: &Value| v["port_calls"].as_array().cloned().unwrap_or_default();
    (calls(&rendered), calls(&entry))
}

/// `render` and `dry-run` show the lines of the table, around the calls
/// they follow, in the Python agent's order.
#[test]
fn render_and_dry_run_show_the_same_lines() {
    use crate::support::{action_run, signed, SECRET};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let run = "/v1/actions/runs/r_rl_sync";
    let log = |m: &str| json!({"method": "POST", "path": format!("{run}/logs"), "body": {"message": m}});
    let action = signed(
        action_run("r_rl_sync", "http://target.internal/x", "POST", true),
        SECRET,
        now,
    );
    let want = vec![
        log(RECEIVED),
        log(PREPARING),
        log(SENDING),
        log(&succeeded(200)),
        log(REPORTING),
        json!({"method": "PATCH", "path": format!("{run}/response"), "body": {"response": {"ok": true}}}),
        log(REPORTED),
        json!({"method": "PATCH", "path": run, "body": {"status": "SUCCESS"}}),
        log(FINISHED),
    ];
    let (rendered, dry) = shown_calls(&action);
    assert_eq!(rendered, want);
    assert_eq!(dry, want);

    let node_run = "/v1/workflows/nodes/runs/wfnr_rl_sync";
    let node_log = |m: &str| {
        json!({"method": "POST", "path": format!("{node_run}/logs"),
               "body": {"logs": [{"level": "INFO", "message": m}]}})
    };
    let node = signed(
        action_run("wfnr_rl_sync", "http://target.internal/x", "POST", true),
        SECRET,
        now,
    );
    let want = vec![
        node_log(NODE_RECEIVED),
        node_log(SENDING),
        node_log(&succeeded(200)),
        json!({"method": "PATCH", "path": node_run,
               "body": {"status": "COMPLETED", "result": "SUCCESS",
                        "output": {"response": {"status": 200, "data": {"ok": true}}}}}),
        node_log(NODE_FINISHED),
    ];
    let (rendered, dry) = shown_calls(&node);
    assert_eq!(rendered, want);
    assert_eq!(dry, want);
}
