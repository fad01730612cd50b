//! Settings that change behaviour, through the built binary (polling mode
//! against the fake Port API, so no broker is needed), the failure kinds a
//! target request can end in, and every default of the README's settings
//! table.

use std::time::Duration;

use crate::support::agent::*;
use crate::support::broker::{free_port, AgentProcess};
use crate::support::proxy::Proxy;
use crate::support::tls::{TlsTarget, TLS_ANSWER};
use crate::support::{closed_port, FakePort, FakeTarget};
use port_agent::guard::RedirectPolicy;
use port_agent::retry::{Backoff, Policy};
use port_agent::settings::RunLogs;
use port_agent::settings::{Requirement, Settings, Streamer};
use serde_json::{json, Value};

/// Fast target retries: two attempts, 10–20 ms apart.
const QUICK_RETRIES: [(&str, &str); 3] = [
    ("AGENT_RETRY_MAX_ATTEMPTS", "2"),
    ("AGENT_RETRY_INITIAL_BACKOFF_MS", "10"),
    ("AGENT_RETRY_MAX_BACKOFF_MS", "20"),
];

/// The one status PATCH of `run`, or a panic naming what was reported.
fn only_patch(port: &FakePort, run: &str) -> Value {
    let p = patches_of(port, run);
    assert_eq!(p.len(), 1, "{run}: {p:?}");
    p[0].clone()
}

fn failure_summary(port: &FakePort, run: &str) -> String {
    let patch = only_patch(port, run);
    assert_eq!(patch["status"], "FAILURE", "{run}: {patch}");
    patch["summary"].as_str().expect("a summary").to_string()
}

#[test]
fn every_default_in_the_settings_table() {
    let required = [
        ("PORT_ORG_ID", "org_9"),
        ("PORT_CLIENT_ID", "cid"),
        ("PORT_CLIENT_SECRET", "a-client-secret"),
        ("KAFKA_CONSUMER_GROUP_ID", "org_9.agent"),
    ];
    let s = Settings::from_iter(
        required.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        Requirement::Run,
    )
    .expect("settings");
    // In the order of the README's table.
    assert_eq!(s.port.api_base_url, "https://api.getport.io");
    assert_eq!(s.streamer, Streamer::Kafka);
    assert_eq!(s.kafka.security_protocol.as_str(), "plaintext");
    assert_eq!(s.kafka.sasl_mechanism, None);
    assert_eq!(s.kafka.session_timeout_ms, 45_000);
    assert_eq!(s.kafka.max_poll_interval_ms, 300_000);
    assert_eq!(s.kafka.auto_offset_reset.as_str(), "earliest");
    assert_eq!(s.kafka.runs_topic, "org_9.runs");
    assert_eq!(s.kafka.change_log_topic, "org_9.change.log");
    assert!(!s.kafka.using_local_port_instance);
    assert_eq!(s.kafka.bootstrap_servers, "");
    assert_eq!(
        (&s.kafka.brokers, &s.kafka.username, s.kafka.password.is_none()),
        (&None, &None, true)
    );
    assert_eq!(s.mapping.path, "./control_the_payload_config.json");
    assert_eq!(s.target.timeout, Duration::from_secs(30));
    assert!(s.target.verify_ssl);
    assert!(s.report.detailed_logging);
    assert_eq!(s.telemetry.log_filter, "info");
    assert_eq!(s.ca_bundle, None);
    assert_eq!(s.polling.interval, Duration::from_secs(10));
    assert_eq!(s.polling.batch_size, 100);
    assert_eq!(s.polling.initial_backoff, Duration::from_secs(1));
    assert_eq!(s.polling.max_backoff, Duration::from_secs(300));
    assert_eq!(s.polling.backoff_factor, 2.0);
    assert_eq!(s.polling.backoff_jitter, 0.1);
    assert_eq!(s.polling.max_failure, Duration::from_secs(3600));
    assert_eq!(s.limits.max_in_flight, 64);
    assert_eq!(s.telemetry.http_port, 8080);
    assert_eq!(
        s.target.retry,
        Policy {
            backoff: Backoff {
                max_attempts: 5,
                max_elapsed: Duration::from_secs(60),
                initial: Duration::from_millis(200),
                max: Duration::from_millis(10_000),
            },
            statuses: vec![429, 502, 503, 504],
        }
    );
    assert_eq!(s.port.timeout, Duration::from_secs(15));
    assert_eq!(s.port.max_attempts, 5);
    assert_eq!(s.report.run_logs, RunLogs::All);
    assert!(s.target.idempotency_headers);
    assert!(s.report.wf_unmatched_fail);
    assert_eq!(s.kafka.dlq_topic, None);
    assert_eq!(s.limits.drain_timeout, Duration::from_secs(20));
    assert_eq!(s.telemetry.log_format, None, "json unless stdout is a terminal");
    assert_eq!(s.limits.jq_timeout, Duration::from_millis(1000));
    assert_eq!(s.target.allowed_targets, None);
    assert_eq!(s.target.redirects, RedirectPolicy::SameHost);
    assert_eq!(s.target.max_response_bytes, 1_048_576);
    assert_eq!(s.limits.max_message_age, None);
    assert_eq!(s.limits.max_clock_skew, Duration::from_secs(300));
    assert_eq!(s.proxies, port_agent::proxy::Proxies::default());
}

/// A timeout, a refused connection, a name that does not resolve and a
/// certificate nobody vouches for: each run is reported FAILURE with a
/// summary naming the cause, after `AGENT_RETRY_MAX_ATTEMPTS` attempts
/// where the request cannot have arrived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_kinds_each_report_failure_naming_the_cause() {
    let (port, slow) = (FakePort::start().await, FakeTarget::start().await);
    let tls = TlsTarget::start().await;
    slow.answer_after(200, Duration::from_secs(5));
    offer(
        &port,
        [
            claimable("r_timeout", &slow.url("/slow"), true, json!({})),
            claimable(
                "r_refused",
                &format!("http://127.0.0.1:{}/x", closed_port()),
                true,
                json!({}),
            ),
            // `.invalid` never resolves (RFC 2606).
            claimable("r_dns", "http://no-such-host.invalid/hook", true, json!({})),
            claimable("r_tls", &tls.url("/hook"), true, json!({})),
        ],
    );
    let mut extra = QUICK_RETRIES.to_vec();
    extra.push(("WEBHOOK_INVOKER_TIMEOUT", "1"));
    let agent = start_polling(&port, "failure-kinds", &json!([{"enabled": true}]), &extra);
    wait_until(Duration::from_secs(30), "four reports", &agent, || {
        ["r_timeout", "r_refused", "r_dns", "r_tls"]
            .iter()
            .all(|r| !patches_of(&port, r).is_empty())
    });
    stop(agent);

    let timeout = failure_summary(&port, "r_timeout");
    assert!(
        timeout.starts_with("Failed to invoke the webhook: timed out"),
        "{timeout}"
    );
    let refused = failure_summary(&port, "r_refused");
    assert!(
        refused.starts_with("Failed to invoke the webhook: connection failed")
            && refused.to_lowercase().contains("refused"),
        "{refused}"
    );
    let dns = failure_summary(&port, "r_dns");
    assert!(
        dns.starts_with("Failed to invoke the webhook: connection failed")
            && dns.contains("no-such-host.invalid")
            && dns.to_lowercase().contains("dns error"),
        "{dns}"
    );
    let tls_summary = failure_summary(&port, "r_tls");
    assert!(
        tls_summary.starts_with("Failed to invoke the webhook: connection failed")
            && tls_summary.contains("invalid peer certificate: UnknownIssuer"),
        "{tls_summary}"
    );
    // The timed-out request may have arrived: not sent again. The refused
    // handshakes could not have: sent twice (AGENT_RETRY_MAX_ATTEMPTS=2).
    assert_eq!(slow.requests().len(), 1);
    assert!(tls.requests().is_empty());
    let handshakes = || tls.failed_handshakes.load(std::sync::atomic::Ordering::SeqCst);
    eventually_sync(Duration::from_secs(5), || handshakes() == 2);
    assert_eq!(handshakes(), 2);
}

/// Poll a condition every 20 ms for at most `within` (no panic: the caller
/// asserts what it needs).
fn eventually_sync(within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + within;
    while !cond() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `WEBHOOK_INVOKER_TIMEOUT=1` against a target that answers after 5 s:
/// the report comes about a second after the request arrived, not after
/// the answer (the default, 30 s, would wait for it and report SUCCESS).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_invoker_timeout_ends_a_slow_request_and_reports_it() {
    let (port, slow) = (FakePort::start().await, FakeTarget::start().await);
    slow.answer_after(200, Duration::from_secs(5));
    offer(&port, [claimable("r_slow", &slow.url("/slow"), true, json!({}))]);
    let agent = start_polling(
        &port,
        "invoker-timeout",
        &json!([{"enabled": true}]),
        &[("WEBHOOK_INVOKER_TIMEOUT", "1")],
    );
    wait_until(Duration::from_secs(30), "the report", &agent, || {
        !patches_of(&port, "r_slow").is_empty()
    });
    stop(agent);
    let summary = failure_summary(&port, "r_slow");
    assert!(summary.contains("timed out"), "{summary}");
    let sent = slow.requests()[0].at;
    let reported = port
        .accepted()
        .into_iter()
        .find(|c| c.method == "PATCH" && c.path() == "/v1/actions/runs/r_slow")
        .expect("the report")
        .at;
    let after = reported.duration_since(sent);
    // 1 s, plus at most 1 s for the Port calls around it.
    assert!(
        after >= Duration::from_millis(900) && after < Duration::from_secs(2),
        "reported {after:?} after the request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_verify_ssl_false_reaches_a_self_signed_target() {
    let port = FakePort::start().await;
    let tls = TlsTarget::start().await;
    offer(&port, [claimable("r_ssl", &tls.url("/hook"), true, json!({}))]);
    let agent = start_polling(
        &port,
        "verify-ssl-false",
        &json!([{"enabled": true}]),
        &[("WEBHOOK_VERIFY_SSL", "false")],
    );
    wait_until(Duration::from_secs(30), "the report", &agent, || {
        !patches_of(&port, "r_ssl").is_empty()
    });
    stop(agent);
    assert_eq!(only_patch(&port, "r_ssl"), json!({"status": "SUCCESS"}));
    let requests = tls.requests();
    assert_eq!(requests.len(), 1);
    assert!(
        requests[0].starts_with("POST /hook HTTP/1.1\r\n"),
        "{}",
        requests[0]
    );
    assert!(requests[0].contains("\"runId\":\"r_ssl\""), "{}", requests[0]);
    let response = port
        .accepted()
        .into_iter()
        .find(|c| c.path() == "/v1/actions/runs/r_ssl/response")
        .expect("the response");
    assert_eq!(
        response.json(),
        json!({"response": serde_json::from_str::<Value>(TLS_ANSWER).unwrap()})
    );
}

/// `HTTP_PROXY` alone: the target request and every Port call go through
/// the proxy. The target's name cannot resolve, so only the proxy (which
/// routes it to the fake target) can deliver it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_proxy_carries_target_and_port_calls() {
    let (port, target) = (FakePort::start().await, FakeTarget::start().await);
    target.answer_json(200, json!({"proxied": true}));
    let proxy = Proxy::start().await;
    proxy.route("target.invalid:80", target.addr);
    offer(
        &port,
        [claimable("r_px", "http://target.invalid/hook", true, json!({}))],
    );
    let agent = start_polling(
        &port,
        "http-proxy",
        &json!([{"enabled": true}]),
        &[("HTTP_PROXY", &proxy.url())],
    );
    wait_until(Duration::from_secs(30), "the report", &agent, || {
        !patches_of(&port, "r_px").is_empty()
    });
    stop(agent);
    assert_eq!(only_patch(&port, "r_px"), json!({"status": "SUCCESS"}));
    assert_eq!(target.requests().len(), 1);
    assert_eq!(run_of(&target.requests()[0]), "r_px");
    let seen = proxy.seen();
    let base = port.base();
    for line in [
        format!("POST {base}/v1/auth/access_token HTTP/1.1"),
        format!("PATCH {base}/v1/organization HTTP/1.1"),
        format!("POST {base}{CLAIM_RUNS} HTTP/1.1"),
        format!("PATCH {base}{ACK_RUN} HTTP/1.1"),
        "POST http://target.invalid/hook HTTP/1.1".to_string(),
        format!("PATCH {base}/v1/actions/runs/r_px HTTP/1.1"),
    ] {
        assert!(seen.contains(&line), "{line} not in {seen:#?}");
    }
    // Nothing reached the fake Port without the proxy.
    assert_eq!(
        seen.iter().filter(|l| l.contains(&base)).count(),
        port.all_calls().len()
    );
}

/// `HTTPS_PROXY` tunnels an https target (`CONNECT`), `NO_PROXY` sends the
/// hosts it lists direct: here 127.0.0.1, so the Port calls and the plain
/// target on 127.0.0.1 never touch the proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_proxy_tunnels_https_targets_and_no_proxy_goes_direct() {
    let (port, target) = (FakePort::start().await, FakeTarget::start().await);
    let tls = TlsTarget::start().await;
    let proxy = Proxy::start().await;
    proxy.route("tls-target.invalid:8443", tls.addr);
    offer(
        &port,
        [
            claimable("r_direct", &target.url("/direct"), true, json!({})),
            claimable(
                "r_tunnel",
                "https://tls-target.invalid:8443/hook",
                true,
                json!({}),
            ),
        ],
    );
    let agent = start_polling(
        &port,
        "https-proxy",
        &json!([{"enabled": true}]),
        &[
            ("HTTP_PROXY", &proxy.url()),
            ("HTTPS_PROXY", &proxy.url()),
            ("NO_PROXY", "127.0.0.1"),
            // The certificate names 127.0.0.1, not tls-target.invalid.
            ("WEBHOOK_VERIFY_SSL", "false"),
        ],
    );
    wait_until(Duration::from_secs(30), "both reports", &agent, || {
        !patches_of(&port, "r_direct").is_empty() && !patches_of(&port, "r_tunnel").is_empty()
    });
    stop(agent);
    assert_eq!(only_patch(&port, "r_direct"), json!({"status": "SUCCESS"}));
    assert_eq!(only_patch(&port, "r_tunnel"), json!({"status": "SUCCESS"}));
    assert_eq!(proxy.seen(), ["CONNECT tls-target.invalid:8443 HTTP/1.1"]);
    assert_eq!(tls.requests().len(), 1);
    assert!(tls.requests()[0].contains("\"runId\":\"r_tunnel\""));
    assert_eq!(target.requests().len(), 1);
    assert_eq!(run_of(&target.requests()[0]), "r_direct");
}

/// `AGENT_JQ_TIMEOUT_MS` bounds one evaluation: 100,000 steps (well within
/// the 250,000-step budget) take longer than 1 ms, so with 1 ms the field
/// is null with a warning, and with the default (1 s) it has its value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_jq_timeout_ms_bounds_an_evaluation() {
    let mapping = json!([{"enabled": true,
        "body": {"n": "[range(100000)] | length", "id": ".context.runId"}}]);
    let mut bodies = Vec::new();
    for (tag, extra) in [
        ("jq-1ms", vec![("AGENT_JQ_TIMEOUT_MS", "1")]),
        ("jq-default", vec![]),
    ] {
        let (port, target) = (FakePort::start().await, FakeTarget::start().await);
        offer(&port, [claimable("r_jq", &target.url("/jq"), true, json!({}))]);
        let agent = start_polling(&port, tag, &mapping, &extra);
        wait_until(Duration::from_secs(30), "the report", &agent, || {
            !patches_of(&port, "r_jq").is_empty()
        });
        let log = agent.log_text();
        stop(agent);
        bodies.push((target.requests()[0].json(), log));
    }
    // Only `n` is sure to overrun 1 ms: on a loaded machine a thread
    // preempted while evaluating `.context.runId` overruns it too.
    assert_eq!(bodies[0].0["n"], Value::Null, "{}", bodies[0].0);
    assert!(
        bodies[0].1.contains("time limit exceeded"),
        "the warning names the limit: {}",
        bodies[0].1
    );
    assert_eq!(bodies[1].0, json!({"n": 100000, "id": "r_jq"}));
    assert!(!bodies[1].1.contains("time limit exceeded"));
}

/// TCP ports the process `pid` listens on, with their local address, from
/// its socket descriptors and the kernel's socket tables.
fn listening(pid: u32) -> Vec<String> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fd list")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().to_string();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect();
    let mut out = Vec::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address, state (0A = LISTEN), inode.
            if f.len() > 9 && f[3] == "0A" && inodes.iter().any(|i| i == f[9]) {
                let (ip, port) = f[1].split_once(':').expect("address");
                let port = u16::from_str_radix(port, 16).expect("port");
                out.push(format!("{ip}:{port}"));
            }
        }
    }
    out
}

/// `AGENT_HTTP_PORT=0` turns the server off: the process listens on no
/// port at all. With a port, it listens there on all interfaces (and only
/// there), which shows the probe sees the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_http_port_zero_turns_the_server_off() {
    let free = free_port();
    let mut seen = Vec::new();
    for http_port in ["0".to_string(), free.to_string()] {
        let port = FakePort::start().await;
        let agent = start_polling(
            &port,
            &format!("http-port-{http_port}"),
            &json!([{"enabled": true}]),
            &[("AGENT_HTTP_PORT", &http_port)],
        );
        // Started: the server (when on) is bound before the first claim.
        wait_until(Duration::from_secs(30), "a claim", &agent, || {
            !calls_to(&port, CLAIM_RUNS).is_empty()
        });
        seen.push(listening(agent.child.id()));
        stop(agent);
    }
    assert_eq!(seen[0], Vec::<String>::new(), "AGENT_HTTP_PORT=0");
    assert_eq!(seen[1], [format!("00000000:{free}")], "AGENT_HTTP_PORT={free}");
}

/// `NO_PROXY` as curl and Python `requests` read it: each form, for a
/// target named by an IP literal (`127.0.0.1`) and by a name
/// (`localhost`), and for Port's API (an IP literal here). reqwest alone
/// sent IP-literal hosts through the proxy for `*` and `host:port`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_proxy_forms_for_ip_literals_and_names() {
    let target = FakeTarget::start().await;
    let proxy = Proxy::start().await;
    let tport = target.addr.port();
    let ip_url = format!("http://127.0.0.1:{tport}/ip");
    let named_url = format!("http://localhost:{tport}/named");
    // (NO_PROXY, the IP-literal target direct, the named one direct, Port direct)
    let forms = [
        ("*".to_string(), true, true, true),
        ("127.0.0.1".to_string(), true, false, true),
        (format!("127.0.0.1:{tport}"), true, false, false),
        ("127.0.0.0/8".to_string(), true, false, true),
        ("10.0.0.0/8".to_string(), false, false, false),
        ("localhost".to_string(), false, true, false),
        (".localhost".to_string(), false, true, false),
        (format!("localhost:{tport}"), false, true, false),
        ("other.example, 127.0.0.2".to_string(), false, false, false),
    ];
    for (i, (no_proxy, ip_direct, named_direct, port_direct)) in forms.iter().enumerate() {
        let port = FakePort::start().await;
        let (ip_run, named_run) = (format!("r_ip{i}"), format!("r_named{i}"));
        offer(
            &port,
            [
                claimable(&ip_run, &ip_url, true, json!({})),
                claimable(&named_run, &named_url, true, json!({})),
            ],
        );
        let before = proxy.seen().len();
        let agent = start_polling(
            &port,
            "no-proxy-forms",
            &json!([{"enabled": true}]),
            &[("HTTP_PROXY", &proxy.url()), ("NO_PROXY", no_proxy)],
        );
        wait_until(Duration::from_secs(30), "both reports", &agent, || {
            !patches_of(&port, &ip_run).is_empty() && !patches_of(&port, &named_run).is_empty()
        });
        stop(agent);
        let seen: Vec<String> = proxy.seen().split_off(before);
        let proxied = |needle: &str| seen.iter().any(|l| l.contains(needle));
        assert_eq!(
            !proxied(&ip_url),
            *ip_direct,
            "NO_PROXY={no_proxy}: {ip_url} in {seen:#?}"
        );
        assert_eq!(
            !proxied(&named_url),
            *named_direct,
            "NO_PROXY={no_proxy}: {named_url} in {seen:#?}"
        );
        assert_eq!(
            !proxied(&port.base()),
            *port_direct,
            "NO_PROXY={no_proxy}: Port in {seen:#?}"
        );
        assert_eq!(
            only_patch(&port, &ip_run),
            json!({"status": "SUCCESS"}),
            "{no_proxy}"
        );
        assert_eq!(
            only_patch(&port, &named_run),
            json!({"status": "SUCCESS"}),
            "{no_proxy}"
        );
    }
}

/// The agent `run` with `env` only: its exit code and output, within 10 s.
fn run_briefly(env: &[(&str, String)], tag: &str) -> (Option<i32>, String) {
    let mut agent = AgentProcess::start(env, tag);
    let code = agent.wait(Duration::from_secs(10));
    (code, agent.log_text())
}

/// Issue 28: `POLLING_INTERVAL_SECONDS` below 1 is refused at start-up
/// (exit 3) with the accepted range, before any call to Port; 1 is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_polling_interval_below_one_second_is_refused_at_start_up() {
    let port = FakePort::start().await;
    for value in ["0", "0.5"] {
        let env = polling_env(
            &port,
            "interval-0",
            &json!([]),
            &[("POLLING_INTERVAL_SECONDS", value)],
        );
        let (code, log) = run_briefly(&env, "interval-0");
        assert_eq!(code, Some(3), "{value}: {log}");
        let line = log
            .lines()
            .find(|l| l.starts_with("error: ") && l.contains("POLLING_INTERVAL_SECONDS"))
            .unwrap_or_else(|| panic!("{value}: no error line naming the setting in {log}"));
        assert!(
            line.contains("expected at least 1 second (accepted: 1 and up"),
            "{line}"
        );
        assert!(
            line.contains(&format!("got {}", value.parse::<f64>().unwrap())),
            "{line}"
        );
    }
    assert!(
        port.all_calls().is_empty(),
        "no call to Port: {:?}",
        port.all_calls()
    );
    let agent = start_polling(
        &port,
        "interval-1",
        &json!([]),
        &[("POLLING_INTERVAL_SECONDS", "1")],
    );
    wait_until(Duration::from_secs(10), "a claim", &agent, || {
        !calls_to(&port, CLAIM_RUNS).is_empty()
    });
    stop(agent);
}

/// Issue 28: `STREAMER_NAME` is `KAFKA` or `POLLING` in upper case, as Port's
/// Python agent reads it (and as the README says); another case is refused
/// at start-up with the spelling to use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamer_name_in_another_case_is_refused_with_the_spelling_to_use() {
    let port = FakePort::start().await;
    for (value, spelled) in [("kafka", "KAFKA"), ("Polling", "POLLING")] {
        let env = polling_env(&port, "streamer-case", &json!([]), &[("STREAMER_NAME", value)]);
        let (code, log) = run_briefly(&env, "streamer-case");
        assert_eq!(code, Some(3), "{value}: {log}");
        assert!(
            log.contains("STREAMER_NAME: expected KAFKA or POLLING in upper case")
                && log.contains(&format!("got '{value}': write '{spelled}'")),
            "{value}: {log}"
        );
    }
    assert!(port.all_calls().is_empty());
}

/// Issue 28: credentials Port refuses on the token call at start-up (401,
/// or 403) stop the agent in both transports with exit 3 and one line that
/// names `PORT_API_BASE_URL`, quotes Port's error and names the US region;
/// nothing else is called.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_refused_at_start_up_stop_either_transport_with_exit_3() {
    let kafka: [(&str, &str); 2] = [
        ("STREAMER_NAME", "KAFKA"),
        ("KAFKA_CONSUMER_GROUP_ID", "org_1.creds"),
    ];
    for (transport, status) in [("POLLING", 401), ("KAFKA", 401), ("POLLING", 403)] {
        let port = FakePort::start().await;
        port.refuse_credentials(status, "invalid_credentials");
        let extra: &[(&str, &str)] = if transport == "KAFKA" { &kafka } else { &[] };
        let env = polling_env(&port, "creds", &json!([]), extra);
        let started = std::time::Instant::now();
        let (code, log) = run_briefly(&env, "creds");
        assert_eq!(code, Some(3), "{transport} {status}: {log}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("Port refused the credentials"))
            .collect();
        assert_eq!(lines.len(), 1, "{transport} {status}: one line in {log}");
        let line = lines[0];
        assert!(line.starts_with("error: "), "{line}");
        for part in [
            format!("PORT_API_BASE_URL={}", port.base()),
            format!("answered {status} \"invalid_credentials: The provided client id or secret is invalid\""),
            "US organisations use https://api.us.getport.io".to_string(),
            "PORT_CLIENT_ID and PORT_CLIENT_SECRET".to_string(),
        ] {
            assert!(line.contains(&part), "{transport} {status}: '{part}' in {line}");
        }
        assert!(
            !log.contains(crate::support::SECRET),
            "the secret is never logged"
        );
        let paths: Vec<String> = port.all_calls().iter().map(|c| c.path().to_string()).collect();
        assert_eq!(
            paths,
            vec!["/v1/auth/access_token"],
            "{transport} {status}: only the token call"
        );
    }
}
