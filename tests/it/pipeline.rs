//! The core pipeline end to end against real HTTP servers on 127.0.0.1: a
//! fake Port API and a fake target (tests/it/support). Each scenario asserts the
//! exact requests and Port calls.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::*;
use port_agent::delivery::Delivery;
use port_agent::http::ClientOptions;
use port_agent::invoke::HttpInvoker;
use port_agent::mapping::{JqEnv, MappingSet};
use port_agent::message::Kind;
use port_agent::outcome::{Disposition, Outcome, Skip};
use port_agent::pipeline::{Config, Pipeline};
use port_agent::port::PortClient;
use port_agent::retry::{Backoff, Policy};
use port_agent::secret::Secret;
use port_agent::settings::RunLogs;
use port_agent::signature::sign;
use serde_json::{json, Value};

const RUNS: &str = "org_1.runs";
const CHANGES: &str = "org_1.change.log";

type Agent = Pipeline<HttpInvoker, PortClient>;

fn agent_with(port: &FakePort, mappings: Value, tweak: impl FnOnce(&mut Config)) -> Agent {
    let opts = ClientOptions {
        timeout: Duration::from_secs(5),
        verify_tls: true,
        ca_bundle: None,
        pool_idle_per_host: 8,
        proxies: Default::default(),
    };
    let retry = Policy {
        backoff: Backoff {
            max_attempts: 3,
            max_elapsed: Duration::from_secs(5),
            initial: Duration::from_millis(10),
            max: Duration::from_millis(50),
        },
        ..Policy::default()
    };
    let invoker = HttpInvoker::new(&opts, retry).unwrap();
    let reporter = PortClient::new(&port.base(), "client-id", Secret::new(SECRET), &opts, 5)
        .unwrap()
        .with_backoff(Backoff {
            max_attempts: 5,
            max_elapsed: Duration::from_secs(5),
            initial: Duration::from_millis(10),
            max: Duration::from_millis(50),
        });
    let mut config = crate::support::pipeline::config();
    tweak(&mut config);
    let env = JqEnv::new([("MY_TOKEN".to_string(), "tok-123".to_string())]);
    Pipeline::new(
        config,
        Arc::new(MappingSet::from_value(&mappings).unwrap()),
        env,
        invoker,
        reporter,
    )
}

fn agent(port: &FakePort, mappings: Value) -> Agent {
    agent_with(port, mappings, |_| {})
}

fn delivery(topic: &str, message: &Value) -> Delivery {
    crate::support::pipeline::delivery(topic, message.to_string(), 7)
}

async fn run(agent: &Agent, message: Value) -> Outcome {
    agent
        .process(&delivery(RUNS, &signed(message, SECRET, 1763800000)))
        .await
}

fn log_lines(port: &FakePort, run: &str) -> Vec<String> {
    port.accepted()
        .iter()
        .filter(|c| c.path() == format!("/v1/actions/runs/{run}/logs"))
        .map(|c| c.json()["message"].as_str().unwrap().to_string())
        .collect()
}

fn patches(port: &FakePort) -> Vec<(String, Value)> {
    port.accepted()
        .iter()
        .filter(|c| c.method == "PATCH")
        .map(|c| (c.path().to_string(), c.json()))
        .collect()
}

#[tokio::test]
async fn s01_catch_all_sends_the_whole_message_signed_over_the_raw_body() {
    let (port, target) = (FakePort::start().await, FakeTarget::start().await);
    let agent = agent(&port, json!([{"enabled": true}]));
    let mut message = action_run("r_1", &target.url("/deploy"), "POST", false);
    message["payload"]["properties"]["note"] = json!("déploiement 🚀");
    let outcome = run(&agent, message.clone()).await;
    assert_eq!(outcome.result, Disposition::Delivered(200));

    let reqs = target.requests();
    assert_eq!(reqs.len(), 1);
    let req = &reqs[0];
    assert_eq!((req.method.as_str(), req.uri.as_str()), ("POST", "/deploy"));
    // The body is the message without the signature headers, `"headers":{}` kept.
    assert_eq!(req.json(), message);
    assert!(req.text().contains(r#""headers":{}}"#), "{}", req.text());
    assert!(
        req.text().contains(r#"d\u00e9ploiement \ud83d\ude80"#),
        "non-ASCII is escaped: {}",
        req.text()
    );
    let ts = req.header("X-Port-Timestamp").unwrap();
    assert_eq!(
        req.header("X-Port-Signature").unwrap(),
        sign(SECRET, ts, &req.text())
    );
    assert_eq!(req.header("content-type"), Some("application/json"));
}

#[tokio::test]
async fn s02_enabled_runtime_error_passes_to_the_next_mapping() {
    let (port, target) = (FakePort::start().await, FakeTarget::start().await);
    let agent = agent(
        &port,
        json!([
            {"enabled": ".payload.nope | error(\"bad\")", "url": "\"http://127.0.0.1:1/never\""},
            {"enabled": ".action == \"deploy_service\"", "body": {"chosen": "\"second\""}}
        ]),
    );
    let outcome = run(&agent, action_run("r_2", &target.url("/x"), "POST", false)).await;
    assert_eq!(outcome.mapping, Some(1));
    assert_eq!(outcome.warnings.len(), 1, "{:?}", outcome.warnings);
    assert_eq!(target.requests()[0].json(), json!({"chosen": "second"}));
}

#[tokio::test]
async fn s03_mapped_headers_query_and_body() {
    let (port, target) = (FakePort::start().await, FakeTarget::start().await);
    let agent = agent(
        &port,
        json!([{
            "headers": {"MY-HEADER": ".resourceType", "Authorization": "\"Bearer \" + env.MY_TOKEN"},
            "query": {"ref": ".payload.properties.version", "entity": ".context.entity"},
            "body": {"version": ".payload.properties.version", "replicas": "3 * 2", "run": ".context.runId"}
        }]),
    );
    run(&agent, action_run("r_3", &target.url("/hook"), "POST", false)).await;
    let req = &target.requests()[0];
    assert_eq!(req.header("MY-HEADER"), Some("run"));
    assert_eq!(req.header("Authorization"), Some("Bearer tok-123"));
    assert_eq!(req.uri, "/hook?ref=1.2.3&entity=svc-a");
    assert_eq!(req.text(), r#"{"version":"1.2.3","replicas":6,"run":"r_3"}"#);
}

#[tokio::test]
async fn s04_synchronized_success_patches_response_then_status_with_link() {
    let (port, target) = (FakePort::start().await, FakeTarget::start().await);
    target.answer_json(200, json!({"id": 42, "url": "https://ci/42"}));
    let agent = agent(&port, json!([{"report": {"link": ".response.json.url"}}]));
    run(&agent, action_run("r_4", &target.url("/sync"), "POST", true)).await;
    assert_eq!(
        patches(&port),
        vec![
            (
                "/v1/actions/runs/r_4/response".to_string(),
                json!({"response": {"id": 42, "url": "https://ci/42"}})
            ),
            (
                "/v1/actions/runs/r_4".to_string(),
                json!({"status": "SUCCESS", "link": "https://ci/42"})
            ),
        ]
    );
}

#[tokio::test]
async fn s05_method_comes_from_the_invocation_method() {
    let (port, target) = (FakePort::start().await, FakeTarget::start().await);
    let agent = agent(&port, json!([{"enabled": true}]));
    for method in ["GET", "put", "PATCH", "DELETE"] {
        run(&agent, action_run("r_5", &target.url("/m"), method, false)).await;
    }
    let methods: Vec<_> = target.requests().iter().map(|r| r.method.clone()).collect();
    assert_eq!(methods, ["GET", "PUT", "PATCH", "DELETE"]);
}

#[tokio::test]
async fn s06_target_500_reports_failure_with_the_spec_summary() {
    let (port, target) = (FakePort::start().await, FakeTarget::start().await);
    target.answer(500, "boom");
    let agent = agent(&port, json!([{"enabled": true}]));
    let outcome = run(&agent, action_run("r_6", &target.url("/f"), "POST", false)).await;
    assert_eq!(outcome.result, Disposition::Delivered(500));
    // 500 is not in AGENT_RETRY_STATUSES: one attempt of the three allowed.
    assert_eq!(target.requests().len(), 1);
    assert_eq!(
        patches(&port),
        vec![(
            "/v1/actions/runs/r_6".to_string(),
            json!({"status": "FAILURE", "summary": "Failed to invoke the webhook with status code: 500. Response: boom"})
        )]
    );
    assert_eq!(
        log_lines(&port, "r_6")[3],
        "Action invocation failed with status code: 500 and response: boom"
    );
    // Without detailed logging the response text stays out.
    let quiet = agent_with(&port, json!([{"enabled": true}]), |c| {
        c.report.detailed_logging = false
    });
    run(&quiet, action_run("r_6b", &target.url("/f"), "POST", false)).await;
    assert_eq!(
        patches(&port).last().unwrap().1,
        json!({"status": "FAILURE", "summary": "Failed to invoke the webhook with status code: 500."})
    );
}

#[tokio::test]
async fn s07_async_success_logs_in_order_and_sends_no_status() {
    let (port, target) = (FakePort::start().await, FakeTarget::start().await);
    target.answer(202, "accepted");
    let agent = agent(&port, json!([{"enabled": true}]));
    run(&agent, action_run("r_7", &target.url("/a"), "POST", false)).await;
    assert_eq!(
        log_lines(&port, "r_7"),
        [
            "An action message has been received",
            "Preparing the payload for the request",
            "Sending the request",
            "Action invocation has completed successfully with status code: 202",
            "Port agent finished processing the action run",
        ]
    );
    assert!(patches(&port).is_empty());
    // Every call carried the cached token and a User-Agent.
    for c in port.accepted() {
        assert_eq!(c.header("authorization"), Some("Bearer token-1"));
        assert!(c.header("user-agent").unwrap().starts_with("port-agent/"));
    }
    // AGENT_RUN_LOGS=false turns the logs off.
    let silent = agent_with(&port, json!([{"enabled": true}]), |c| {
        c.report.run_logs = RunLogs::Off
    });
    run(&silent, action_run("r_7b", &target.url("/a"), "POST", false)).await;
    assert!(log_lines(&port, "r_7b").is_empty());
}

#[tokio::test]
async fn s08_report_overrides_and_null_removes_a_key() {
    let (port, target) = (FakePort::start().await, FakeTarget::start().await);
    target.answer_json(500, json!({"id": "x9", "web": "https://ci/x9"}));
    let agent = agent(
        &port,
        json!([{"report": {
            "status": "if .response.statusCode == 500 then \"SUCCESS\" else \"FAILURE\" end",
            "summary": "null",
            "link": "[.response.json.web, \"https://docs\"]",
            "externalRunId": ".response.json.id"
        }}]),
    );
    run(&agent, action_run("r_8", &target.url("/r"), "POST", false)).await;
    assert_eq!(
        patches(&port),
        vec![(
            "/v1/actions/runs/r_8".to_string(),
            json!({"status": "SUCCESS", "link": ["https://ci/x9", "https://docs"], "externalRunId": "x9"})
        )]
    );
}

#[tokio::test]
async fn s09_workflow_node_runs() {
    let (port, target) = (FakePort::start().await, FakeTarget::start().await);
    let agent = agent(&port, json!([{"enabled": true}]));
    target.answer_json(200, json!({"ok": 1}));
    run(&agent, action_run("wfnr_sync", &target.url("/n"), "POST", true)).await;
    run(&agent, action_run("wfnr_async", &target.url("/n"), "POST", false)).await;
    target.answer(503, "down");
    run(&agent, action_run("wfnr_fail", &target.url("/n"), "POST", false)).await;
    assert_eq!(
        patches(&port),
        vec![
            (
                "/v1/workflows/nodes/runs/wfnr_sync".to_string(),
                json!({"status": "COMPLETED", "result": "SUCCESS", "output": {"response": {"status": 200, "data": {"ok": 1}}}})
            ),
            (
                "/v1/workflows/nodes/runs/wfnr_fail".to_string(),
                json!({"status": "COMPLETED", "result": "FAILED"})
            ),
        ]
    );
    let logs: Vec<_> = port
        .accepted()
        .into_iter()
        .filter(|c| c.path() == "/v1/workflows/nodes/runs/wfnr_async/logs")
        .collect();
    assert_eq!(
        logs[0].json(),
        json!({"logs": [{"level": "INFO", "message": "A workflow node run has been received"}]})
    );
    // 503 is retried (3 attempts) before FAILED is reported.
    assert_eq!(target.requests().len(), 2 + 3);
}

#[tokio::test]
async fn s10_not_for_agent_bad_or_missing_signature_do_nothing() {
    let (port, target) = (FakePort::start().await, FakeTarget::start().await);
    let agent = agent(&port, json!([{"enabled": true}]));
    let mut not_ours = action_run("r_10a", &target.url("/x"), "POST", false);
    not_ours["payload"]["action"]["invocationMethod"]["agent"] = json!(false);
    assert_eq!(
        run(&agent, not_ours).await.result,
        Disposition::Skipped(Skip::NotForAgent)
    );

    let mut tampered = signed(action_run("r_10b", &target.url("/x"), "POST", false), SECRET, 1);
    tampered["payload"]["properties"]["version"] = json!("6.6.6");
    let outcome = agent.process(&delivery(RUNS, &tampered)).await;
    assert_eq!(outcome.result, Disposition::Skipped(Skip::BadSignature));

    let unsigned = action_run("r_10c", &target.url("/x"), "POST", false);
    let outcome = agent.process(&delivery(RUNS, &unsigned)).await;
    assert_eq!(outcome.result, Disposition::Skipped(Skip::MissingSignature));

    let outcome = agent
        .process(&Delivery {
            payload: b"{not json".to_vec(),
            ..delivery(RUNS, &json!({}))
        })
        .await;
    assert!(matches!(
        outcome.result,
        Disposition::Skipped(Skip::Unparsable(_))
    ));
    assert!(outcome.needs_dead_letter());

    assert!(target.requests().is_empty());
    assert!(port.all_calls().is_empty());
}

#[tokio::test]
async fn s11_change_log_event_sends_the_request_and_calls_no_port_api() {
    let (port, target) = (FakePort::start().await, FakeTarget::start().await);
    let agent = agent(&port, json!([{"enabled": true}]));
    // Change-log messages are not signed (compat).
    let event = json!({"changelogDestination": {"type": "WEBHOOK", "agent": true, "url": target.url("/changes")},
                        "diff": {"before": null, "after": {"identifier": "svc-a"}}, "headers": {}});
    let outcome = agent.process(&delivery(CHANGES, &event)).await;
    assert_eq!(outcome.result, Disposition::Delivered(200));
    assert_eq!(outcome.kind, Some(Kind::ChangeLog));
    assert_eq!(target.requests()[0].json(), event);
    assert!(port.all_calls().is_empty());
}

/// A `tracing` writer that keeps every line in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every log line of this thread, from now until the guard is dropped.
fn capture_logs() -> (Captured, tracing::subscriber::DefaultGuard) {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    (captured, tracing::subscriber::set_default(subscriber))
}

/// The decrypted value is used (it reaches the target) and then met where
/// a careless agent would show it: the target echoes it in a refusal (the
/// FAILURE summary and the run-log line quote the answer with detailed
/// logging), and a header's expression fails with a jq error that quotes
/// it (the run's warning and the agent's log). Everywhere it is replaced by
/// `<redacted>`, and nowhere, in the log or in a Port call, does it appear.
#[tokio::test]
async fn s12_decrypted_fields_reach_the_target_and_never_the_logs() {
    let (captured, _guard) = capture_logs();

    let (port, target) = (FakePort::start().await, FakeTarget::start().await);
    let agent = agent_with(
        &port,
        json!([{
            "fieldsToDecryptPaths": ["payload.properties.token", ".payload.properties.bad"],
            "headers": {"X-Token-Number": ".payload.properties.token | tonumber"}
        }]),
        |c| c.report.detailed_logging = true,
    );
    // Encrypted with SECRET's first 32 bytes: IV 00..0f, plaintext below.
    let plaintext = "ghp_SuperSecretValue_42";
    let encrypted = crate::support::encrypt(plaintext);
    target.answer(403, &format!("denied for {plaintext}"));
    let mut message = action_run("r_12", &target.url("/d"), "POST", true);
    message["payload"]["properties"]["token"] = json!(encrypted);
    message["payload"]["properties"]["bad"] = json!("%%%");
    let outcome = run(&agent, message).await;

    let req = &target.requests()[0];
    assert_eq!(req.json()["payload"]["properties"]["token"], plaintext);
    assert_eq!(req.json()["payload"]["properties"]["bad"], "%%%");

    // The refusal, quoted with the value hidden.
    let (_, body) = patches(&port).pop().expect("a status report");
    assert_eq!(
        body["summary"],
        "Failed to invoke the webhook with status code: 403. Response: denied for <redacted>"
    );
    assert!(
        log_lines(&port, "r_12").contains(
            &"Action invocation failed with status code: 403 and response: denied for <redacted>".to_string()
        ),
        "{:?}",
        log_lines(&port, "r_12")
    );
    // The header's jq error quoted the value: the warning hides it.
    let header_warning = outcome
        .warnings
        .iter()
        .find(|w| w.contains("X-Token-Number"))
        .unwrap_or_else(|| panic!("a warning for the header: {:?}", outcome.warnings));
    assert!(header_warning.contains("<redacted>"), "{header_warning}");
    for call in port.all_calls() {
        let text = String::from_utf8_lossy(&call.body).to_string();
        assert!(
            !text.contains(plaintext),
            "plaintext sent to Port: {} {text}",
            call.path()
        );
    }

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("could not decrypt"),
        "the failure is logged: {logs}"
    );
    assert!(
        logs.contains("X-Token-Number"),
        "the header's failure is logged: {logs}"
    );
    assert!(!logs.contains(plaintext), "plaintext leaked into logs");
    assert!(!logs.contains(SECRET), "secret leaked into logs");
    assert!(!logs.contains("token-1"), "token leaked into logs");
}

#[tokio::test]
async fn s13_connection_refused_is_retried_then_reported_as_failure() {
    let (captured, _guard) = capture_logs();
    let port = FakePort::start().await;
    let agent = agent(&port, json!([{"enabled": true}]));
    let url = format!("http://127.0.0.1:{}/gone", closed_port());
    let outcome = run(&agent, action_run("r_13", &url, "POST", false)).await;
    assert!(
        matches!(outcome.result, Disposition::RequestFailed(_)),
        "{outcome:?}"
    );
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let failed = logs
        .lines()
        .find(|l| l.contains("target request failed"))
        .unwrap_or_default();
    assert!(failed.contains("attempts=3"), "3 attempts in all: {logs}");
    let (path, body) = patches(&port).pop().unwrap();
    assert_eq!(path, "/v1/actions/runs/r_13");
    assert_eq!(body["status"], "FAILURE");
    let summary = body["summary"].as_str().unwrap();
    assert!(
        summary.starts_with("Failed to invoke the webhook: connection failed"),
        "{summary}"
    );
    assert!(summary.to_lowercase().contains("refused"), "{summary}");
    assert_eq!(
        log_lines(&port, "r_13").last().unwrap(),
        "Port agent finished processing the action run"
    );
}

#[tokio::test]
async fn s14_port_401_then_503s_refreshes_the_token_and_retries() {
    let (port, target) = (FakePort::start().await, FakeTarget::start().await);
    target.answer_json(200, json!({"done": true}));
    let agent = agent_with(&port, json!([{"enabled": true}]), |c| {
        c.report.run_logs = RunLogs::Off
    });
    port.fail_next(&[401, 503, 503]);
    let outcome = run(&agent, action_run("r_14", &target.url("/p"), "POST", true)).await;
    assert!(outcome.port_errors.is_empty(), "{:?}", outcome.port_errors);
    assert_eq!(port.token_calls(), 2, "the 401 forced one refresh");
    let statuses: Vec<_> = port
        .all_calls()
        .iter()
        .filter(|c| c.path() != "/v1/auth/access_token")
        .map(|c| c.status)
        .collect();
    assert_eq!(statuses, [401, 503, 503, 200, 200]);
    assert_eq!(
        patches(&port),
        vec![
            (
                "/v1/actions/runs/r_14/response".to_string(),
                json!({"response": {"done": true}})
            ),
            ("/v1/actions/runs/r_14".to_string(), json!({"status": "SUCCESS"})),
        ]
    );
    assert_eq!(port.accepted()[0].header("authorization"), Some("Bearer token-2"));
}

#[tokio::test]
async fn s15_one_token_for_a_hundred_runs() {
    let (port, target) = (FakePort::start().await, FakeTarget::start().await);
    let agent = Arc::new(agent(&port, json!([{"enabled": true}])));
    let mut tasks = Vec::new();
    for i in 0..100 {
        let agent = agent.clone();
        let msg = signed(
            action_run(&format!("r_{i}"), &target.url("/t"), "POST", true),
            SECRET,
            1,
        );
        tasks.push(tokio::spawn(
            async move { agent.process(&delivery(RUNS, &msg)).await },
        ));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().result, Disposition::Delivered(200));
    }
    assert_eq!(port.token_calls(), 1);
    assert_eq!(target.requests().len(), 100);
    // 5 logs + 1 status patch per synchronized run with an empty body.
    assert_eq!(port.accepted().len(), 100 * 6);
}

#[tokio::test]
async fn s16_no_mapping_matches() {
    let (port, target) = (FakePort::start().await, FakeTarget::start().await);
    let agent = agent(&port, json!([{"enabled": ".action == \"other\""}]));
    let outcome = run(&agent, action_run("r_16", &target.url("/x"), "POST", false)).await;
    assert_eq!(outcome.result, Disposition::Skipped(Skip::NoMapping));
    assert!(port.all_calls().is_empty(), "an action run is left alone");

    let outcome = run(&agent, action_run("wfnr_16", &target.url("/x"), "POST", false)).await;
    assert_eq!(outcome.result, Disposition::Skipped(Skip::NoMapping));
    assert_eq!(
        patches(&port),
        vec![(
            "/v1/workflows/nodes/runs/wfnr_16".to_string(),
            json!({"status": "COMPLETED", "result": "FAILED"})
        )]
    );
    let off = agent_with(&port, json!([{"enabled": false}]), |c| {
        c.report.wf_unmatched_fail = false
    });
    run(&off, action_run("wfnr_16b", &target.url("/x"), "POST", false)).await;
    assert_eq!(patches(&port).len(), 1);
    assert!(target.requests().is_empty());
}

/// Issue 11: a report that still fails after the client's retries (5
/// attempts here, 10 failures in a row) is not dropped: it stays pending,
/// counted in the report backlog, and is sent again until Port accepts it.
/// The target is not called again.
#[tokio::test]
async fn port_outage_longer_than_the_retries_holds_the_report_until_port_accepts() {
    let (port, target) = (FakePort::start().await, FakeTarget::start().await);
    let agent = Arc::new(agent_with(&port, json!([{"enabled": true}]), |c| {
        c.report.run_logs = RunLogs::Off
    }));
    let backlog = agent.report_backlog();
    port.fail_next(&[500; 10]);
    target.answer(500, "x");
    let message = signed(
        action_run("r_out", &target.url("/x"), "POST", false),
        SECRET,
        1763800000,
    );
    let task = tokio::spawn({
        let agent = agent.clone();
        async move { agent.process(&delivery(RUNS, &message)).await }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while backlog.pending() != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the report never became pending"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let outcome = task.await.unwrap();
    assert_eq!(backlog.pending(), 0, "it leaves the backlog once accepted");
    assert!(outcome.port_errors.is_empty(), "{:?}", outcome.port_errors);
    assert!(!outcome.needs_dead_letter());
    let tries: Vec<u16> = port
        .all_calls()
        .iter()
        .filter(|c| c.path() == "/v1/actions/runs/r_out")
        .map(|c| c.status)
        .collect();
    assert_eq!(tries, [[500; 10].as_slice(), &[200]].concat());
    assert_eq!(
        patches(&port),
        vec![(
            "/v1/actions/runs/r_out".to_string(),
            json!({"status": "FAILURE", "summary": "Failed to invoke the webhook with status code: 500. Response: x"})
        )]
    );
    assert_eq!(target.requests().len(), 1, "the target is called once");
}

/// A 4xx other than 401/408/429 is Port refusing the call for good: not
/// sent again, kept in the outcome (a dead-letter candidate).
#[tokio::test]
async fn port_refusing_a_report_for_good_is_final() {
    let (port, target) = (FakePort::start().await, FakeTarget::start().await);
    let agent = agent_with(&port, json!([{"enabled": true}]), |c| {
        c.report.run_logs = RunLogs::Off
    });
    port.fail_next(&[404]);
    target.answer(500, "x");
    let outcome = run(&agent, action_run("r_gone", &target.url("/x"), "POST", false)).await;
    assert_eq!(outcome.port_errors.len(), 1, "{:?}", outcome.port_errors);
    assert!(outcome.port_errors[0]
        .to_string()
        .contains("PATCH /v1/actions/runs/r_gone"));
    assert!(outcome.needs_dead_letter());
    let tries: Vec<u16> = port
        .all_calls()
        .iter()
        .filter(|c| c.path() == "/v1/actions/runs/r_gone")
        .map(|c| c.status)
        .collect();
    assert_eq!(tries, [404]);
    assert_eq!(agent.report_backlog().pending(), 0);
}

/// The 408 twin of the test above: a 408 from Port on a report is not a
/// refusal for good; the call is sent again and the run's report arrives.
#[tokio::test]
async fn port_answering_408_to_a_report_is_retried() {
    let (port, target) = (FakePort::start().await, FakeTarget::start().await);
    let agent = agent_with(&port, json!([{"enabled": true}]), |c| {
        c.report.run_logs = RunLogs::Off
    });
    port.fail_next(&[408]);
    target.answer(500, "x");
    let outcome = run(&agent, action_run("r_408", &target.url("/x"), "POST", false)).await;
    assert!(outcome.port_errors.is_empty(), "{:?}", outcome.port_errors);
    assert!(!outcome.needs_dead_letter());
    let tries: Vec<u16> = port
        .all_calls()
        .iter()
        .filter(|c| c.path() == "/v1/actions/runs/r_408")
        .map(|c| c.status)
        .collect();
    assert_eq!(tries, [408, 200]);
    assert_eq!(agent.report_backlog().pending(), 0);
}

#[tokio::test]
async fn a_mapping_without_a_url_reports_failure() {
    let (port, _target) = (FakePort::start().await, FakeTarget::start().await);
    let agent = agent_with(&port, json!([{"url": ".nope"}]), |c| {
        c.report.run_logs = RunLogs::Off
    });
    let mut message = action_run("r_nourl", "http://x", "POST", false);
    message["payload"]["action"]["invocationMethod"]
        .as_object_mut()
        .unwrap()
        .remove("url");
    let outcome = run(&agent, message).await;
    assert!(matches!(outcome.result, Disposition::RequestFailed(_)));
    assert_eq!(
        patches(&port),
        vec![(
            "/v1/actions/runs/r_nourl".to_string(),
            json!({"status": "FAILURE", "summary": "Failed to build the request: the mapping and the invocation method give no URL"})
        )]
    );
}

/// How many headers named `name` (any case) a request carried.
fn header_count(req: &Recorded, name: &str) -> usize {
    req.headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .count()
}

/// The idempotency headers of a request: `(X-Port-Run-Id, Idempotency-Key)`,
/// each checked to appear at most once.
fn idempotency(req: &Recorded) -> (Option<String>, Option<String>) {
    assert!(header_count(req, "x-port-run-id") <= 1, "{:?}", req.headers);
    assert!(header_count(req, "idempotency-key") <= 1, "{:?}", req.headers);
    (
        req.header("x-port-run-id").map(str::to_string),
        req.header("idempotency-key").map(str::to_string),
    )
}

fn change_log_event(url: &str) -> Value {
    json!({"changelogDestination": {"type": "WEBHOOK", "agent": true, "url": url},
           "diff": {"before": null, "after": {"identifier": "svc-a"}}, "headers": {}})
}

/// Issue 11: every target request carries the run id (node-run id for a
/// node run) as `X-Port-Run-Id` and `Idempotency-Key`; a change-log event,
/// which has no run, is keyed by where it was read: topic-partition-offset.
#[tokio::test]
async fn idempotency_headers_name_the_run_or_the_change_log_offset() {
    let (port, target) = (FakePort::start().await, FakeTarget::start().await);
    let agent = agent_with(&port, json!([{"enabled": true}]), |c| {
        c.idempotency_headers = true;
        c.report.run_logs = RunLogs::Off;
    });
    run(&agent, action_run("r_idem", &target.url("/a"), "POST", false)).await;
    run(&agent, action_run("wfnr_idem", &target.url("/n"), "POST", false)).await;
    let outcome = agent
        .process(&Delivery {
            partition: 3,
            offset: 42,
            ..delivery(CHANGES, &change_log_event(&target.url("/c")))
        })
        .await;
    assert_eq!(outcome.result, Disposition::Delivered(200));

    let got: Vec<_> = target.requests().iter().map(idempotency).collect();
    assert_eq!(
        got,
        [
            (Some("r_idem".to_string()), Some("r_idem".to_string())),
            (Some("wfnr_idem".to_string()), Some("wfnr_idem".to_string())),
            (None, Some("org_1.change.log-3-42".to_string())),
        ]
    );
    // The exact names as sent (HTTP/1.1 headers are case-insensitive; the
    // constants are what the README documents).
    assert_eq!(port_agent::invoke::RUN_ID_HEADER, "X-Port-Run-Id");
    assert_eq!(port_agent::invoke::IDEMPOTENCY_HEADER, "Idempotency-Key");
    // The request is still signed over the same body.
    let req = &target.requests()[0];
    let ts = req.header("X-Port-Timestamp").unwrap();
    assert_eq!(
        req.header("X-Port-Signature").unwrap(),
        sign(SECRET, ts, &req.text())
    );
}

/// `AGENT_IDEMPOTENCY_HEADERS=false`: neither header, on any kind.
#[tokio::test]
async fn idempotency_headers_can_be_turned_off() {
    let (port, target) = (FakePort::start().await, FakeTarget::start().await);
    let agent = agent_with(&port, json!([{"enabled": true}]), |c| {
        c.idempotency_headers = false;
        c.report.run_logs = RunLogs::Off;
    });
    run(&agent, action_run("r_off", &target.url("/a"), "POST", false)).await;
    run(&agent, action_run("wfnr_off", &target.url("/n"), "POST", false)).await;
    agent
        .process(&delivery(CHANGES, &change_log_event(&target.url("/c"))))
        .await;
    let reqs = target.requests();
    assert_eq!(reqs.len(), 3);
    for req in &reqs {
        assert_eq!(idempotency(req), (None, None), "{:?}", req.headers);
    }
}

/// A mapping that sets either header, in any case, wins: its value is the
/// only one sent; the header it does not set is still added.
#[tokio::test]
async fn a_mapping_s_own_idempotency_header_wins_in_any_case() {
    let (port, target) = (FakePort::start().await, FakeTarget::start().await);
    let both = agent_with(
        &port,
        json!([{"headers": {"idempotency-KEY": "\"mine-\" + .context.runId", "X-PORT-RUN-ID": "\"custom\""}}]),
        |c| {
            c.idempotency_headers = true;
            c.report.run_logs = RunLogs::Off;
        },
    );
    run(&both, action_run("r_own", &target.url("/a"), "POST", false)).await;
    run(&both, action_run("wfnr_own", &target.url("/n"), "POST", false)).await;
    let one = agent_with(
        &port,
        json!([{"headers": {"IDEMPOTENCY-KEY": "\"deploy-\" + .payload.properties.version"}}]),
        |c| {
            c.idempotency_headers = true;
            c.report.run_logs = RunLogs::Off;
        },
    );
    run(&one, action_run("r_one", &target.url("/a"), "POST", false)).await;
    one.process(&Delivery {
        partition: 1,
        offset: 9,
        ..delivery(CHANGES, &change_log_event(&target.url("/c")))
    })
    .await;

    let got: Vec<_> = target.requests().iter().map(idempotency).collect();
    let some = |a: &str, b: &str| (Some(a.to_string()), Some(b.to_string()));
    assert_eq!(
        got,
        [
            some("custom", "mine-r_own"),
            some("custom", "mine-wfnr_own"),
            some("r_one", "deploy-1.2.3"),
            (None, Some("deploy-".to_string())),
        ]
    );
}

/// A source of a fixed list of deliveries (then nothing), recording the
/// acks it gets back and when its close begins; its close takes
/// `close_takes`, as a source reporting stopped runs to Port would.
struct ListSource {
    items: std::collections::VecDeque<Delivery>,
    acked: Arc<Mutex<Vec<i64>>>,
    closed_at: Arc<Mutex<Option<std::time::Instant>>>,
    close_takes: Duration,
}

struct ListAck {
    offset: i64,
    acked: Arc<Mutex<Vec<i64>>>,
}

impl port_agent::source::Ack for ListAck {
    async fn done(self, _delivery: &Delivery, _outcome: &Outcome) {
        self.acked.lock().unwrap().push(self.offset);
    }
}

impl port_agent::source::Source for ListSource {
    type Ack = ListAck;
    type Error = std::convert::Infallible;

    async fn next(&mut self, _room: usize) -> Option<(Delivery, ListAck)> {
        match self.items.pop_front() {
            Some(d) => {
                let ack = ListAck {
                    offset: d.offset,
                    acked: self.acked.clone(),
                };
                Some((d, ack))
            }
            None => std::future::pending().await,
        }
    }

    async fn close(self) -> Result<(), Self::Error> {
        *self.closed_at.lock().unwrap() = Some(std::time::Instant::now());
        tokio::time::sleep(self.close_takes).await;
        Ok(())
    }
}

/// Messages still running when the drain times out are stopped before the
/// source closes: nothing they would still do (the target's late answer,
/// its status report) reaches Port after that, and they are not acked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_cut_short_by_the_drain_timeout_are_stopped_before_the_source_closes() {
    let (port, target) = (FakePort::start().await, FakeTarget::start().await);
    // The target answers after 1 s; the drain gives 300 ms; the source's
    // close takes 2 s, time enough for a late answer to be reported.
    target.answer_after(200, Duration::from_secs(1));
    let pipeline = Arc::new(agent(&port, json!([{"enabled": true}])));
    let items = (0..4)
        .map(|i| {
            let run = action_run(&format!("r_stop{i}"), &target.url("/slow"), "POST", true);
            Delivery {
                offset: i,
                ..delivery(RUNS, &signed(run, SECRET, 1763800000))
            }
        })
        .collect();
    let (acked, closed_at) = (Arc::default(), Arc::new(Mutex::new(None)));
    let source = ListSource {
        items,
        acked: Arc::clone(&acked),
        closed_at: Arc::clone(&closed_at),
        close_takes: Duration::from_secs(2),
    };
    let (trigger, stop) = port_agent::shutdown::channel();
    let opts = port_agent::settings::LimitSettings {
        max_in_flight: 4,
        drain_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let dispatcher = tokio::spawn(port_agent::source::run(source, pipeline, opts, stop));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while target.requests().len() < 4 {
        assert!(
            std::time::Instant::now() < deadline,
            "the 4 runs never reached the target"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    trigger.fire();
    let Ok(()) = tokio::time::timeout(Duration::from_secs(10), dispatcher)
        .await
        .expect("dispatch ends after the drain timeout and the close")
        .expect("dispatch task");

    let closed_at = closed_at.lock().unwrap().expect("the source was closed");
    let late: Vec<String> = port
        .all_calls()
        .iter()
        .filter(|c| c.at >= closed_at)
        .map(|c| format!("{} {}", c.method, c.path()))
        .collect();
    assert_eq!(late, Vec::<String>::new(), "Port calls after the source closed");
    assert!(
        patches(&port).is_empty(),
        "no status was reported for a stopped run"
    );
    assert!(acked.lock().unwrap().is_empty(), "stopped runs are not acked");
}
