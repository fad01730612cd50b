//! Security hardening (issue 12), each rule against real servers on
//! 127.0.0.1 or through the built binary: no signature bypass through
//! `changelogDestination`, redirects by policy, bounded response bodies, the
//! target allow-list, the replay window, no secret in what is printed, and
//! run ids that cannot change a Port path.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::support::broker::AgentProcess;
use crate::support::*;
use port_agent::delivery::Delivery;
use port_agent::guard::{AllowList, RedirectPolicy};
use port_agent::http::ClientOptions;
use port_agent::invoke::HttpInvoker;
use port_agent::mapping::{JqEnv, MappingSet};
use port_agent::outcome::{Disposition, Outcome, Skip};
use port_agent::pipeline::{Guardrails, Pipeline};
use port_agent::port::PortClient;
use port_agent::retry::{Backoff, Policy};
use port_agent::secret::Secret;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const RUNS: &str = "org_1.runs";
const CHANGES: &str = "org_1.change.log";

type Agent = Pipeline<HttpInvoker, PortClient>;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

fn opts() -> ClientOptions {
    ClientOptions {
        timeout: Duration::from_secs(10),
        verify_tls: true,
        ca_bundle: None,
        pool_idle_per_host: 8,
        proxies: Default::default(),
    }
}

/// A pipeline like `run` builds, against the fakes, with these limits.
fn agent(
    port: &FakePort,
    mappings: Value,
    redirects: RedirectPolicy,
    max_bytes: usize,
    guard: Guardrails,
) -> Agent {
    let mut retry = Policy::default();
    retry.backoff.max_attempts = 1;
    let invoker = HttpInvoker::new(&opts(), retry).unwrap().with_limits(
        redirects,
        max_bytes,
        guard.allowed_targets.clone(),
    );
    let reporter = PortClient::new(&port.base(), "client-id", Secret::new(SECRET), &opts(), 2)
        .unwrap()
        .with_backoff(Backoff {
            max_attempts: 2,
            max_elapsed: Duration::from_secs(2),
            initial: Duration::from_millis(10),
            max: Duration::from_millis(20),
        });
    let config = crate::support::pipeline::config();
    let env = JqEnv::new([("MY_TOKEN".to_string(), "tok-123456".to_string())]);
    Pipeline::new(
        config,
        Arc::new(MappingSet::from_value(&mappings).unwrap()),
        env,
        invoker,
        reporter,
    )
    .with_guardrails(guard)
}

fn plain_agent(port: &FakePort) -> Agent {
    agent(
        port,
        json!([{"enabled": true, "headers": {"Authorization": "\"Bearer \" + env.MY_TOKEN"}}]),
        RedirectPolicy::SameHost,
        1024 * 1024,
        Guardrails::default(),
    )
}

fn delivery(topic: &str, message: &Value) -> Delivery {
    crate::support::pipeline::delivery(topic, message.to_string(), 3)
}

async fn run_signed(agent: &Agent, message: Value) -> Outcome {
    agent
        .process(&delivery(RUNS, &signed(message, SECRET, now())))
        .await
}

fn patches(port: &FakePort) -> Vec<(String, Value)> {
    port.accepted()
        .iter()
        .filter(|c| c.method == "PATCH")
        .map(|c| (c.path().to_string(), c.json()))
        .collect()
}

fn run_logs(port: &FakePort, run: &str) -> Vec<String> {
    port.accepted()
        .iter()
        .filter(|c| c.path() == format!("/v1/actions/runs/{run}/logs"))
        .map(|c| c.json()["message"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn redirect(target: &FakeTarget, status: u16, location: &str) {
    target.state.script.lock().unwrap().push_back(Answer {
        status,
        body: String::new(),
        delay: Duration::ZERO,
        headers: vec![("location".into(), location.into())],
    });
}

// ------------------------------------------------ 1. changelogDestination

#[tokio::test]
async fn a_changelog_destination_key_on_the_runs_topic_does_not_skip_verification() {
    let (port, foreign) = (FakePort::start().await, FakeTarget::start().await);
    let agent = plain_agent(&port);
    for key in [json!(null), json!({"agent": true, "url": foreign.url("/cl")})] {
        let mut message = action_run("r_cl", &foreign.url("/steal"), "POST", false);
        message["changelogDestination"] = key;
        let outcome = agent.process(&delivery(RUNS, &message)).await;
        assert_eq!(outcome.result, Disposition::Skipped(Skip::MissingSignature));
        // A forged signature is still checked.
        let mut forged = signed(message, "not-the-secret", now());
        forged["headers"]["X-Port-Timestamp"] = json!(now());
        let outcome = agent.process(&delivery(RUNS, &forged)).await;
        assert_eq!(outcome.result, Disposition::Skipped(Skip::BadSignature));
    }
    assert!(foreign.requests().is_empty(), "nothing reaches the foreign host");
    assert!(port.accepted().is_empty(), "nothing is reported for a forged run");

    // The change-log topic itself stays unsigned (compat).
    let event = json!({"changelogDestination": {"agent": true, "url": foreign.url("/cl")}, "diff": {}});
    let outcome = agent.process(&delivery(CHANGES, &event)).await;
    assert_eq!(outcome.result, Disposition::Delivered(200));
    assert_eq!(foreign.requests().len(), 1);
    assert_eq!(foreign.requests()[0].path(), "/cl");
}

// ------------------------------------------------------------- 2. redirects

#[tokio::test]
async fn a_redirect_to_another_host_is_not_followed_and_is_reported_with_its_location() {
    let port = FakePort::start().await;
    let (first, second) = (FakeTarget::start().await, FakeTarget::start().await);
    let agent = plain_agent(&port);
    let elsewhere = second.url("/collect");
    for status in [301, 302, 303, 307, 308] {
        redirect(&first, status, &elsewhere);
        let id = format!("r_{status}");
        let outcome = run_signed(&agent, action_run(&id, &first.url("/deploy"), "POST", false)).await;
        assert_eq!(outcome.result, Disposition::Delivered(status));
        let summary =
            format!("Failed to invoke the webhook with status code: {status}. Location: {elsewhere}");
        assert!(
            patches(&port).contains(&(
                format!("/v1/actions/runs/{id}"),
                json!({"status": "FAILURE", "summary": summary})
            )),
            "{:?}",
            patches(&port)
        );
        // DETAILED_LOGGING (on here) appends the answer, an empty one too,
        // as the Python agent does.
        assert!(run_logs(&port, &id).contains(&format!(
            "Action invocation failed with status code: {status} redirecting to {elsewhere} and response: "
        )));
    }
    assert_eq!(first.requests().len(), 5);
    assert!(second.requests().is_empty(), "the second host received nothing");
}

#[tokio::test]
async fn a_same_host_redirect_is_followed_keeping_method_and_body_for_307_and_308() {
    let (port, target) = (FakePort::start().await, FakeTarget::start().await);
    let agent = plain_agent(&port);
    redirect(&target, 307, "/v2/deploy");
    redirect(&target, 308, &target.url("/v3/deploy"));
    let outcome = run_signed(
        &agent,
        action_run("r_same", &target.url("/deploy"), "POST", false),
    )
    .await;
    assert_eq!(outcome.result, Disposition::Delivered(200));
    let reqs = target.requests();
    let paths: Vec<&str> = reqs.iter().map(|r| r.path()).collect();
    assert_eq!(paths, ["/deploy", "/v2/deploy", "/v3/deploy"]);
    for r in &reqs {
        assert_eq!(r.method, "POST");
        assert_eq!(r.body, reqs[0].body);
        assert_eq!(r.header("x-port-signature"), reqs[0].header("x-port-signature"));
        assert_eq!(r.header("authorization"), Some("Bearer tok-123456"));
    }

    // 303 (and 301/302) become a GET without a body.
    redirect(&target, 303, "/status");
    let outcome = run_signed(&agent, action_run("r_303", &target.url("/deploy"), "POST", false)).await;
    assert_eq!(outcome.result, Disposition::Delivered(200));
    let last = target.requests().pop().unwrap();
    assert_eq!(
        (last.method.as_str(), last.path(), last.body.len()),
        ("GET", "/status", 0)
    );
}

#[tokio::test]
async fn at_most_five_redirects_are_followed() {
    let (port, target) = (FakePort::start().await, FakeTarget::start().await);
    let agent = plain_agent(&port);
    for _ in 0..10 {
        redirect(&target, 302, "/again");
    }
    let outcome = run_signed(&agent, action_run("r_loop", &target.url("/deploy"), "GET", false)).await;
    assert_eq!(outcome.result, Disposition::Delivered(302));
    assert_eq!(target.requests().len(), 6, "the first request and five hops");
}

#[tokio::test]
async fn redirect_policies_none_and_any() {
    let port = FakePort::start().await;
    let (first, second) = (FakeTarget::start().await, FakeTarget::start().await);
    let mapping = json!([{"enabled": true, "headers": {"Authorization": "\"Bearer \" + env.MY_TOKEN", "X-Trace": "\"t-1\""}}]);

    let none = agent(
        &port,
        mapping.clone(),
        RedirectPolicy::None,
        1 << 20,
        Guardrails::default(),
    );
    redirect(&first, 307, "/same-host");
    let outcome = run_signed(&none, action_run("r_none", &first.url("/deploy"), "POST", false)).await;
    assert_eq!(outcome.result, Disposition::Delivered(307));
    assert_eq!(first.requests().len(), 1);

    // `any` follows to another host only a request that carries no known
    // secret (here `MY_TOKEN` in `Authorization`: the 307 is the answer),
    // and never to a host outside AGENT_ALLOWED_TARGETS.
    let any = agent(
        &port,
        mapping,
        RedirectPolicy::Any,
        1 << 20,
        Guardrails::default(),
    );
    redirect(&first, 307, &second.url("/elsewhere"));
    let outcome = run_signed(&any, action_run("r_any", &first.url("/deploy"), "POST", false)).await;
    assert_eq!(outcome.result, Disposition::Delivered(307));
    let allowed = AllowList::parse(&format!("http://{}/", first.addr)).unwrap();
    let guarded = agent(
        &port,
        json!([{"enabled": true}]),
        RedirectPolicy::Any,
        1 << 20,
        Guardrails {
            allowed_targets: Some(allowed),
            ..Guardrails::default()
        },
    );
    redirect(&first, 307, &second.url("/elsewhere"));
    let outcome = run_signed(
        &guarded,
        action_run("r_any2", &first.url("/deploy"), "POST", false),
    )
    .await;
    assert_eq!(outcome.result, Disposition::Delivered(307));
    assert!(second.requests().is_empty(), "no request reached the other host");
}

/// A server that answers every request with a redirect to `to`, and counts.
async fn redirecting_server(to: String) -> (SocketAddr, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let router = axum::Router::new().fallback(move || {
        let (to, counter) = (to.clone(), counter.clone());
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            (
                axum::http::StatusCode::TEMPORARY_REDIRECT,
                [(axum::http::header::LOCATION, to)],
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (addr, hits)
}

#[tokio::test]
async fn the_port_client_follows_no_redirect_and_never_reposts_the_secret() {
    let elsewhere = FakeTarget::start().await;
    let (addr, hits) = redirecting_server(elsewhere.url("/v1/auth/access_token")).await;
    let client = PortClient::new(
        &format!("http://{addr}"),
        "client-id",
        Secret::new(SECRET),
        &opts(),
        1,
    )
    .unwrap();
    let result = client.record_streamer("KAFKA").await;
    let error = result.expect_err("a redirect is an error").to_string();
    assert!(error.contains("307"), "{error}");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    assert!(
        elsewhere.requests().is_empty(),
        "the client secret went nowhere else"
    );
}

// -------------------------------------------------------- 3. bounded bodies

/// A target that answers every request 200 with `len` bytes of `a`, written
/// as fast as the client reads them, and stops when the client goes away.
/// What a streaming target did: connections taken, bytes of body written,
/// connections finished (the whole body written, or the client gone).
#[derive(Clone, Default)]
struct Streamed {
    hits: Arc<AtomicUsize>,
    sent: Arc<AtomicUsize>,
    finished: Arc<AtomicUsize>,
}

async fn streaming_target(len: u64) -> (SocketAddr, Arc<AtomicUsize>) {
    let (addr, streamed) = counted_streaming_target(len).await;
    (addr, streamed.hits)
}

async fn counted_streaming_target(len: u64) -> (SocketAddr, Streamed) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let streamed = Streamed::default();
    let seen = streamed.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            seen.hits.fetch_add(1, Ordering::SeqCst);
            let seen = seen.clone();
            tokio::spawn(async move {
                let _finished = Finished(seen.finished.clone());
                let mut buf = vec![0u8; 8192];
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
                );
                if sock.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = vec![b'a'; 64 * 1024];
                let mut left = len;
                while left > 0 {
                    let n = left.min(chunk.len() as u64) as usize;
                    if sock.write_all(&chunk[..n]).await.is_err() {
                        return;
                    }
                    seen.sent.fetch_add(n, Ordering::SeqCst);
                    left -= n as u64;
                }
            });
        }
    });
    (addr, streamed)
}

/// Counts a connection as finished when its task ends, however it ends.
struct Finished(Arc<AtomicUsize>);

impl Drop for Finished {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A synchronized action run `id` against the target at `addr`. Bounded:
/// under a mutation of the bounded read that returned no body, such a run
/// hung until cargo-mutants' 900 s timeout (no test may hang).
async fn run_within_60_s(agent: &Agent, id: &str, addr: SocketAddr) -> Outcome {
    tokio::time::timeout(
        Duration::from_secs(60),
        run_signed(agent, action_run(id, &format!("http://{addr}/x"), "POST", true)),
    )
    .await
    .expect("the run ends within 60 s")
}

/// The agent of the response-cap tests: every message matches, answers
/// are read up to 1000 bytes.
fn agent_with_a_1000_byte_cap(port: &FakePort) -> Agent {
    agent(
        port,
        json!([{"enabled": true}]),
        RedirectPolicy::SameHost,
        1000,
        Guardrails::default(),
    )
}

/// The response of run `run` as the agent forwarded it to Port.
fn forwarded_response(port: &FakePort, run: &str) -> Value {
    let path = format!("/v1/actions/runs/{run}/response");
    let call = port
        .accepted()
        .into_iter()
        .find(|c| c.path() == path)
        .expect("the /response call");
    call.json()["response"].clone()
}

/// An answer of exactly `AGENT_MAX_RESPONSE_BYTES` is read whole and not
/// said to be truncated.
#[tokio::test]
async fn an_answer_of_exactly_the_cap_is_whole() {
    let port = FakePort::start().await;
    let (addr, _) = streaming_target(1000).await;
    let agent = agent_with_a_1000_byte_cap(&port);
    let outcome = run_within_60_s(&agent, "r_whole", addr).await;
    assert_eq!(outcome.result, Disposition::Delivered(200));
    assert_eq!(forwarded_response(&port, "r_whole"), json!("a".repeat(1000)));
    let logs = run_logs(&port, "r_whole");
    assert!(
        logs.contains(&"Action invocation has completed successfully with status code: 200".to_string()),
        "{logs:?}"
    );
}

#[tokio::test]
async fn a_long_answer_is_cut_at_the_cap_and_the_run_log_says_so() {
    let port = FakePort::start().await;
    const BODY: usize = 50 * 1024 * 1024;
    let (addr, streamed) = counted_streaming_target(BODY as u64).await;
    let hits = streamed.hits.clone();
    let agent = agent_with_a_1000_byte_cap(&port);
    let outcome = run_within_60_s(&agent, "r_big", addr).await;
    assert_eq!(outcome.result, Disposition::Delivered(200));
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    assert_eq!(forwarded_response(&port, "r_big"), json!("a".repeat(1000)));
    assert!(run_logs(&port, "r_big").contains(
        &"Action invocation has completed successfully with status code: 200 (response truncated: only its first 1000 bytes were read, AGENT_MAX_RESPONSE_BYTES)"
            .to_string()
    ));
    assert!(patches(&port).contains(&("/v1/actions/runs/r_big".into(), json!({"status": "SUCCESS"}))));
    // The rest is not read: the agent lets the connection go, and the
    // target's writes stop once the socket buffers are full (a few MiB on
    // loopback), far short of the 50 MiB body.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while streamed.finished.load(Ordering::SeqCst) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the target's connection never ended"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sent = streamed.sent.load(Ordering::SeqCst);
    assert!(
        sent < BODY / 2,
        "the target wrote {sent} of {BODY} bytes: the agent read past its cap"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_runs_answered_with_200_mb_each_keep_the_agent_under_80_mib() {
    const RUNS_IN_FLIGHT: usize = 64;
    let port = FakePort::start().await;
    let (addr, hits) = streaming_target(200 * 1024 * 1024).await;
    let runs = (0..RUNS_IN_FLIGHT).map(|i| {
        json!({"id": format!("r_{i}"), "payload": {
            "type": "WEBHOOK", "url": format!("http://{addr}/big"), "agent": true, "synchronized": true,
            "method": "POST", "headers": {}, "body": {"payload": {"properties": {}}}}})
    });
    port.state.claimable_runs.lock().unwrap().extend(runs);
    let mapping = std::env::temp_dir().join(format!("security-rss-mapping-{}.json", std::process::id()));
    std::fs::write(&mapping, r#"[{"enabled": true}]"#).unwrap();
    let env: Vec<(&str, String)> = vec![
        ("PORT_ORG_ID", "org_1".into()),
        ("PORT_CLIENT_ID", "client-id".into()),
        ("PORT_CLIENT_SECRET", SECRET.into()),
        ("PORT_API_BASE_URL", port.base()),
        ("STREAMER_NAME", "POLLING".into()),
        ("CONTROL_THE_PAYLOAD_CONFIG_PATH", mapping.display().to_string()),
        ("POLLING_INTERVAL_SECONDS", "1".into()),
        ("PORT_AGENT_TEST_POLLING_INTERVAL_MS", "200".into()),
        ("AGENT_MAX_IN_FLIGHT", RUNS_IN_FLIGHT.to_string()),
        ("AGENT_MAX_RESPONSE_BYTES", "262144".into()),
        ("AGENT_HTTP_PORT", "0".into()),
        ("AGENT_LOG_FORMAT", "json".into()),
        ("LOG_LEVEL", "warn".into()),
    ];
    let agent = AgentProcess::start(&env, "security-rss");
    let reported = || {
        port.accepted()
            .iter()
            .filter(|c| c.method == "PATCH" && c.json() == json!({"status": "SUCCESS"}))
            .count()
    };
    crate::support::broker::eventually("every run reported", Duration::from_secs(120), || {
        reported() == RUNS_IN_FLIGHT
    })
    .await;
    let peak = crate::support::agent::peak_rss_kib(agent.child.id());
    drop(agent);
    assert_eq!(hits.load(Ordering::SeqCst), RUNS_IN_FLIGHT);
    let responses: Vec<Value> = port
        .accepted()
        .iter()
        .filter(|c| c.path().ends_with("/response"))
        .map(|c| c.json())
        .collect();
    assert_eq!(responses.len(), RUNS_IN_FLIGHT);
    assert!(responses
        .iter()
        .all(|r| r["response"].as_str().map(str::len) == Some(262_144)));
    // 57-62 MiB measured (debug build, after issue 27's run-log chain);
    // reading whole answers would need 12.8 GB.
    assert!(peak < 80 * 1024, "peak RSS {peak} KiB, expected under 80 MiB");
    eprintln!("peak RSS of the agent: {} KiB", peak);
}

// ------------------------------------------------------- 6. the allow-list

#[tokio::test]
async fn a_target_outside_the_allow_list_is_not_called_and_the_run_fails_saying_why() {
    let port = FakePort::start().await;
    let (allowed, other) = (FakeTarget::start().await, FakeTarget::start().await);
    let list = AllowList::parse(&format!("http://{}/hooks/, *.internal", allowed.addr)).unwrap();
    let agent = agent(
        &port,
        json!([{"enabled": true}]),
        RedirectPolicy::SameHost,
        1 << 20,
        Guardrails {
            allowed_targets: Some(list),
            ..Guardrails::default()
        },
    );
    let ok = run_signed(
        &agent,
        action_run("r_in", &allowed.url("/hooks/deploy"), "POST", false),
    )
    .await;
    assert_eq!(ok.result, Disposition::Delivered(200));
    let outside = other.url("/hooks/deploy");
    let refused = run_signed(&agent, action_run("r_out", &outside, "POST", false)).await;
    let summary = "target not allowed by AGENT_ALLOWED_TARGETS: 127.0.0.1";
    assert!(
        matches!(&refused.result, Disposition::RequestFailed(s) if s.to_string() == summary),
        "{:?}",
        refused.result
    );
    let path_outside = run_signed(
        &agent,
        action_run("r_path", &allowed.url("/admin"), "POST", false),
    )
    .await;
    assert!(
        matches!(&path_outside.result, Disposition::RequestFailed(s) if s.to_string() == summary),
        "{:?}",
        path_outside.result
    );
    assert!(other.requests().is_empty());
    assert_eq!(allowed.requests().len(), 1);
    assert!(patches(&port).contains(&(
        "/v1/actions/runs/r_out".into(),
        json!({"status": "FAILURE", "summary": summary})
    )));
}

// --------------------------------------------------- 7. the replay window

#[tokio::test]
async fn a_message_signed_longer_ago_than_the_window_is_skipped_as_stale_and_failed() {
    let (port, target) = (FakePort::start().await, FakeTarget::start().await);
    let agent = agent(
        &port,
        json!([{"enabled": true}]),
        RedirectPolicy::SameHost,
        1 << 20,
        Guardrails {
            max_message_age: Some(Duration::from_secs(600)),
            ..Guardrails::default()
        },
    );
    let old = signed(
        action_run("r_old", &target.url("/d"), "POST", false),
        SECRET,
        now() - 3600,
    );
    let outcome = agent.process(&delivery(RUNS, &old)).await;
    let Disposition::Skipped(Skip::Stale(age)) = outcome.result else {
        panic!("expected stale, got {:?}", outcome.result);
    };
    assert!((3600..3700).contains(&age), "{age}");
    assert_eq!(outcome.name(), "stale");
    assert!(outcome.needs_dead_letter());
    assert!(target.requests().is_empty());
    let (path, body) = patches(&port).pop().expect("a status report");
    assert_eq!(path, "/v1/actions/runs/r_old");
    assert_eq!(body["status"], "FAILURE");
    let summary = body["summary"].as_str().unwrap_or_default();
    assert!(
        summary.starts_with(&format!(
            "The agent did not run this action: its message was signed {age} s ago"
        )) && summary.contains("AGENT_MAX_MESSAGE_AGE_SECONDS (600 s)"),
        "{summary}"
    );

    // A fresh message, and a string timestamp, are within the window.
    let fresh = run_signed(&agent, action_run("r_new", &target.url("/d"), "POST", false)).await;
    assert_eq!(fresh.result, Disposition::Delivered(200));
    let ts = (now() - 10).to_string();
    let mut m = action_run("r_str", &target.url("/d"), "POST", false);
    m["headers"] = json!({});
    let sig = port_agent::signature::sign(SECRET, &ts, &port_agent::json_canon::to_raw_string(&m));
    m["headers"] = json!({"X-Port-Signature": sig, "X-Port-Timestamp": ts});
    let outcome = agent.process(&delivery(RUNS, &m)).await;
    assert_eq!(outcome.result, Disposition::Delivered(200));
}

// ------------------------------------------------------- 8. smaller holes

#[tokio::test]
async fn a_dot_or_dot_dot_run_id_cannot_change_the_port_path() {
    let (port, target) = (FakePort::start().await, FakeTarget::start().await);
    let agent = plain_agent(&port);
    for id in [".", ".."] {
        let outcome = run_signed(&agent, action_run(id, &target.url("/d"), "POST", false)).await;
        assert_eq!(
            outcome.result,
            Disposition::Skipped(Skip::Unparsable(format!("run id '{id}' is not a valid id")))
        );
    }
    assert!(target.requests().is_empty());
    assert!(port.all_calls().is_empty(), "no Port call at all");
}

// ------------------------------------------- 1 and 5 through the binary

use crate::support::cli::{all_output, arg, run_cli as binary};

fn temp_file(name: &str, text: &str) -> PathBuf {
    crate::support::cli::temp_file("security", name, text)
}

#[test]
fn dry_run_skips_an_unsigned_runs_message_that_has_a_changelog_destination_key() {
    let mut message = action_run("r_x", "http://evil.example/steal", "POST", false);
    message["changelogDestination"] = Value::Null;
    let line = json!({"topic": RUNS, "partition": 0, "offset": 0, "value": message});
    let input = temp_file("cl.jsonl", &format!("{line}\n"));
    let o = binary(
        &[
            "dry-run",
            "--input",
            arg(&input),
            "--mapping",
            "mappings/generic-webhook.json",
            "--format",
            "json",
        ],
        &[("PORT_CLIENT_SECRET", SECRET), ("PORT_ORG_ID", "org_1")],
    );
    assert_eq!(o.status.code(), Some(0), "{}", all_output(&o));
    let first: Value = serde_json::from_str(
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .next()
            .unwrap_or_default(),
    )
    .expect("a JSON line");
    assert_eq!(first["outcome"], "missing_signature");
    assert_eq!(first["request"], Value::Null);
}

fn gitlab_message() -> Value {
    let mut m = action_run("r_gl", "http://unused", "POST", false);
    m["payload"]["action"]["invocationMethod"] = json!({"type": "GITLAB", "agent": true,
        "groupName": "acme/platform", "projectName": "svc-a", "defaultRef": "main"});
    m
}

#[test]
fn render_redacts_secret_named_fields_and_secret_environment_values() {
    let message = temp_file(
        "gitlab.json",
        &signed(gitlab_message(), SECRET, now()).to_string(),
    );
    let o = binary(
        &[
            "render",
            "--mapping",
            "mappings/gitlab-pipeline.json",
            "--message",
            arg(&message),
            "--env",
            "acme_platform_svc-a=trig-tok",
            "--format",
            "json",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(0), "{}", all_output(&o));
    assert!(!all_output(&o).contains("trig-tok"), "{}", all_output(&o));
    let out: Value = serde_json::from_slice(&o.stdout).expect("render JSON");
    assert_eq!(out["request"]["body"]["token"], "<redacted>");
    assert_eq!(out["request"]["body"]["ref"], "main");

    // Jenkins: the token query value and the Authorization header; the
    // API token, named like a secret, is also hidden wherever it occurs.
    let mut m = action_run(
        "r_j",
        "https://ci.example.com/job/deploy/buildWithParameters",
        "POST",
        false,
    );
    m["payload"]["properties"] = json!({"echo": "x-jenkins-api-secret-99 y"});
    let message = temp_file("jenkins.json", &signed(m, SECRET, now()).to_string());
    let o = binary(
        &[
            "render",
            "--mapping",
            "mappings/jenkins-build-with-parameters.json",
            "--message",
            arg(&message),
            "--env",
            "JENKINS_USER=bot",
            "--env",
            "JENKINS_API_TOKEN=jenkins-api-secret-99",
            "--env",
            "JENKINS_JOB_TOKEN=job/tok+en= 1",
            "--format",
            "json",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(0), "{}", all_output(&o));
    let text = all_output(&o);
    for secret in ["job/tok+en= 1", "job%2Ftok%2Ben%3D+1", "jenkins-api-secret-99"] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    let out: Value = serde_json::from_slice(&o.stdout).expect("render JSON");
    assert_eq!(out["request"]["query"]["token"], "<redacted>");
    assert_eq!(out["request"]["query"]["echo"], "x-<redacted> y");
    assert_eq!(out["request"]["headers"]["Authorization"], "<redacted>");
}

#[test]
fn decrypted_values_do_not_appear_in_jq_warnings_or_errors() {
    let secret_value = "dec/rypted+val=ue \"q\"";
    let mut m = action_run("r_dec", "http://t.example/x", "POST", false);
    m["payload"]["properties"]["token"] = json!(encrypt(secret_value));
    let message = temp_file("dec.json", &signed(m, SECRET, now()).to_string());
    let mapping = temp_file(
        "dec-mapping.json",
        &json!([{"fieldsToDecryptPaths": ["payload.properties.token"],
                 "body": {"parsed": ".payload.properties.token | fromjson", "n": ".payload.properties.token | tonumber"},
                 "url": "\"http://t.example/\" + .payload.properties.token + \"/x y\" | error"}])
        .to_string(),
    );
    for format in ["json", "text"] {
        let o = binary(
            &[
                "render",
                "--mapping",
                arg(&mapping),
                "--message",
                arg(&message),
                "--format",
                format,
            ],
            &[("PORT_CLIENT_SECRET", SECRET), ("LOG_LEVEL", "debug")],
        );
        assert_eq!(o.status.code(), Some(0), "{}", all_output(&o));
        let text = all_output(&o);
        assert!(text.contains("<redacted>"), "{text}");
        for form in ["dec/rypted", "rypted+val", "dec%2Frypted", r#"ue \"q\""#] {
            assert!(!text.contains(form), "{form} in {text}");
        }
    }
}

#[test]
fn the_agents_own_secrets_are_not_visible_to_mappings() {
    let message = temp_file(
        "env.json",
        &signed(
            action_run("r_env", "http://t.example/x", "POST", false),
            SECRET,
            now(),
        )
        .to_string(),
    );
    let mapping = temp_file(
        "env-mapping.json",
        &json!([{"body": {"s": "env.PORT_CLIENT_SECRET", "k": "$ENV.KAFKA_CONSUMER_PASSWORD",
                          "has": "env | has(\"PORT_CLIENT_SECRET\") or has(\"KAFKA_CONSUMER_PASSWORD\")",
                          "other": "env.REGION"}}])
        .to_string(),
    );
    let o = binary(
        &[
            "render",
            "--mapping",
            arg(&mapping),
            "--message",
            arg(&message),
            "--format",
            "json",
        ],
        &[
            ("PORT_CLIENT_SECRET", SECRET),
            ("KAFKA_CONSUMER_PASSWORD", "kafka-pass-0123"),
            ("REGION", "eu-west-1"),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", all_output(&o));
    let out: Value = serde_json::from_slice(&o.stdout).expect("render JSON");
    assert_eq!(
        out["request"]["body"],
        json!({"s": null, "k": null, "has": false, "other": "eu-west-1"})
    );
}

#[test]
fn check_reports_a_literal_url_outside_the_allow_list() {
    let mapping = temp_file(
        "allow.json",
        &json!([{"url": "\"https://ci.example.com/hooks/deploy\""},
                {"url": "\"https://evil.example/x\""},
                {"url": ".payload.action.invocationMethod.url"}])
        .to_string(),
    );
    let o = binary(
        &["check", "--mapping", arg(&mapping)],
        &[("AGENT_ALLOWED_TARGETS", "https://ci.example.com/hooks/")],
    );
    let out = all_output(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("  #1: error: url 'https://evil.example/x' is not allowed by AGENT_ALLOWED_TARGETS"),
        "{out}"
    );
    assert!(!out.contains("#0: error") && !out.contains("#2: error"), "{out}");

    let o = binary(&["check", "--mapping", arg(&mapping)], &[]);
    assert_eq!(o.status.code(), Some(0), "without the list, nothing is reported");
}

/// `check` reads the guard settings as `run` does: every documented
/// `AGENT_TARGET_REDIRECTS` value (any case) is taken and another is not;
/// an `AGENT_ALLOWED_TARGETS` entry that is neither a URL prefix, a host
/// pattern nor a network (a host with a port, a bare `*.`, user info, a
/// prefix length too long) stops it with exit 3, naming the entry.
#[test]
fn check_takes_the_documented_redirect_policies_and_names_a_malformed_allow_list_entry() {
    let mapping = temp_file("guard-settings.json", r#"[{"enabled": true}]"#);
    let check = |var: &str, value: &str| binary(&["check", "--mapping", arg(&mapping)], &[(var, value)]);
    for policy in ["none", "same-host", "any", "Any"] {
        let o = check("AGENT_TARGET_REDIRECTS", policy);
        assert_eq!(o.status.code(), Some(0), "{policy}: {}", all_output(&o));
    }
    let o = check("AGENT_TARGET_REDIRECTS", "always");
    assert_eq!(o.status.code(), Some(3), "{}", all_output(&o));
    assert!(
        all_output(&o).contains("AGENT_TARGET_REDIRECTS: "),
        "{}",
        all_output(&o)
    );
    for entry in [
        "ci.example.com:8443",
        "*.",
        "deployer@ci.example.com",
        "10.0.0.0/99",
    ] {
        let o = check("AGENT_ALLOWED_TARGETS", &format!("ci.example.com, {entry}"));
        assert_eq!(o.status.code(), Some(3), "{entry}: {}", all_output(&o));
        assert!(
            all_output(&o).contains(&format!("AGENT_ALLOWED_TARGETS: '{entry}'")),
            "{}",
            all_output(&o)
        );
    }
}
