//! Issue 24, "secrets and edges": each attack of the issue, re-run as a
//! test against local servers on 127.0.0.1 or through the built binary.
//!
//! 1, 2. Known secrets in every encoding a mapping or the URL parser makes
//!    of them, through every destination other than the target request:
//!    status summary, run log, `/response`, error text, warnings, the
//!    agent's log lines, `render` and `dry-run` (a table: secrets ×
//!    encodings × destinations).
//! 3. The replay window fails closed (future, malformed timestamps).
//! 5. `AGENT_TARGET_REDIRECTS=any` never takes a secret to another host.
//! 6. `CONNECT` and `TRACE` are refused.
//!
//! (4, `NO_PROXY`, is in `settings_behaviour.rs` and `src/proxy.rs`.)

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use port_agent::delivery::Delivery;
use port_agent::guard::RedirectPolicy;
use port_agent::http::ClientOptions;
use port_agent::invoke::HttpInvoker;
use port_agent::mapping::{JqEnv, MappingSet};
use port_agent::outcome::{Disposition, Outcome, Skip};
use port_agent::pipeline::{Guardrails, Pipeline};
use port_agent::port::PortClient;
use port_agent::retry::{Backoff, Policy};
use port_agent::secret::Secret;
use serde_json::{json, Value};

use crate::support::cli::{all_output, arg, run_cli as binary};
use crate::support::*;

const RUNS: &str = "org_1.runs";

/// The secrets: three secret-named environment variables and a decrypted
/// field, with the characters the URL parser keeps, encodes or rewrites.
const GH_TOKEN: &str = "ghp-a/b c-SECRET1+=:@;,!'";
const TAB_TOKEN: &str = "tok%41#frag\\back\tTAB-SECRET2";
const DOT_SECRET: &str = "x/../DOTS-SECRET3/./y";
const DECRYPTED: &str = "dec/ryp+ted SECRET4==";
const SECRETS: [&str; 4] = [GH_TOKEN, TAB_TOKEN, DOT_SECRET, DECRYPTED];

/// What must never be seen, in any decoding of an output: the unique part
/// of each secret, and the piece of `TAB_TOKEN` a URL keeps before its `#`.
const MARKERS: [&str; 6] = ["SECRET1", "SECRET2", "SECRET3", "SECRET4", "tok%41", "tokA"];

/// The jq expression of each secret.
const EXPRESSIONS: [&str; 4] = [
    "env.GH_TOKEN",
    "env.TAB_TOKEN",
    "env.DOT_SECRET",
    ".payload.properties.token",
];

/// The encodings a mapping makes (appended to an expression).
const ENCODINGS: [&str; 8] = [
    "",
    " | @uri",
    " | @uri | @uri",
    " | @json",
    " | @base64",
    " | @base64 | gsub(\"\\\\+\"; \"-\") | gsub(\"/\"; \"_\") | rtrimstr(\"=\") | rtrimstr(\"=\")",
    " | (\"user:\" + .) | @base64 | \"Basic \" + .",
    " | @base64 | @uri",
];

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

fn env_pairs() -> Vec<(String, String)> {
    [
        ("GH_TOKEN", GH_TOKEN),
        ("TAB_TOKEN", TAB_TOKEN),
        ("DOT_SECRET", DOT_SECRET),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// A mapping that puts every secret, in every encoding, into the URL path,
/// the query, headers and the body.
fn leaky_mapping() -> Value {
    let mut headers = serde_json::Map::new();
    let mut body = serde_json::Map::new();
    for (i, expr) in EXPRESSIONS.iter().enumerate() {
        for (e, enc) in ENCODINGS.iter().enumerate() {
            let jq = format!("({expr}){enc}");
            headers.insert(format!("X-S{i}-E{e}"), json!(jq));
            body.insert(format!("s{i}_e{e}"), json!(jq));
        }
    }
    // The #-holding secret last: the URL's path ends at its `#`.
    let url = ".payload.action.invocationMethod.url + \"/\" + env.GH_TOKEN + \"/\" + env.DOT_SECRET + \"/\" \
               + .payload.properties.token + \"/\" + env.TAB_TOKEN + \"/x\"";
    json!([{"enabled": true, "fieldsToDecryptPaths": ["payload.properties.token"],
            "url": url,
            "query": {"a": "env.GH_TOKEN", "k": "env.DOT_SECRET", "d": ".payload.properties.token", "t": "env.TAB_TOKEN"},
            "headers": headers, "body": body}])
}

fn message(run_id: &str, url: &str, synchronized: bool) -> Value {
    let mut m = action_run(run_id, url, "POST", synchronized);
    m["payload"]["properties"]["token"] = json!(encrypt(DECRYPTED));
    m
}

/// Every view of `text` a reader could decode (JSON escapes, percent
/// encoding once or twice, `+` as a space), searched for the markers and
/// for the base64 of each secret; what is found, named.
fn leaks(text: &str) -> Vec<String> {
    let json_unescape = |t: &str| {
        t.replace("\\\\", "\u{1}")
            .replace("\\/", "/")
            .replace("\\\"", "\"")
            .replace("\\t", "\t")
            .replace("\\u0009", "\t")
            .replace('\u{1}', "\\")
    };
    let pct = |t: &str, plus: bool| {
        let t = if plus { t.replace('+', " ") } else { t.to_string() };
        String::from_utf8_lossy(&percent_decode(t.as_bytes())).into_owned()
    };
    let mut views = vec![text.to_string()];
    for _ in 0..2 {
        let mut more = Vec::new();
        for v in &views {
            more.push(json_unescape(v));
            more.push(pct(v, false));
            more.push(pct(v, true));
        }
        views.extend(more);
    }
    let mut found = Vec::new();
    for v in &views {
        for m in MARKERS {
            if v.contains(m) {
                found.push(format!("{m} in …{}…", around(v, m)));
            }
        }
        for s in SECRETS {
            let b64 = STANDARD.encode(s);
            let basic = STANDARD.encode(format!("user:{s}"));
            let url_safe = URL_SAFE_NO_PAD.encode(s);
            for (name, form) in [
                ("base64", &b64[..b64.len() - 4]),
                ("basic", &basic[8..basic.len() - 4]),
                ("base64url", &url_safe[..url_safe.len() - 4]),
            ] {
                if v.contains(form) {
                    found.push(format!("{name} of {s:?}"));
                }
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

fn around<'a>(text: &'a str, m: &str) -> &'a str {
    let at = text.find(m).unwrap_or(0);
    let start = (0..=at.saturating_sub(60))
        .rev()
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(0);
    let end = (at + m.len() + 40).min(text.len());
    let end = (end..=text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(text.len());
    &text[start..end]
}

fn percent_decode(b: &[u8]) -> Vec<u8> {
    let hex = |c: u8| (c as char).to_digit(16);
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fn assert_no_leak(destination: &str, text: &str) {
    let found = leaks(text);
    assert!(found.is_empty(), "{destination} leaks: {found:#?}\n{text}");
}

type Agent = Pipeline<HttpInvoker, PortClient>;

fn opts() -> ClientOptions {
    ClientOptions {
        timeout: Duration::from_secs(10),
        verify_tls: true,
        ca_bundle: None,
        pool_idle_per_host: 8,
        proxies: Default::default(),
    }
}

fn agent_with(port: &FakePort, mapping: Value, redirects: RedirectPolicy, guard: Guardrails) -> Agent {
    let mut retry = Policy::default();
    retry.backoff.max_attempts = 1;
    let invoker = HttpInvoker::new(&opts(), retry)
        .unwrap()
        .with_limits(redirects, 1 << 20, None);
    let reporter = PortClient::new(&port.base(), "client-id", Secret::new(SECRET), &opts(), 2)
        .unwrap()
        .with_backoff(Backoff {
            max_attempts: 2,
            max_elapsed: Duration::from_secs(2),
            initial: Duration::from_millis(10),
            max: Duration::from_millis(20),
        });
    Pipeline::new(
        crate::support::pipeline::config(),
        Arc::new(MappingSet::from_value(&mapping).unwrap()),
        JqEnv::new(env_pairs()),
        invoker,
        reporter,
    )
    .with_guardrails(guard)
}

fn delivery(message: &Value) -> Delivery {
    crate::support::pipeline::delivery(RUNS, message.to_string(), 1)
}

async fn run_signed(agent: &Agent, message: Value) -> Outcome {
    agent.process(&delivery(&signed(message, SECRET, now()))).await
}

/// A target that answers every request with `status` and the request it
/// got, echoed as JSON (method, request target, headers, body).
async fn echo_target(status: u16) -> String {
    let router = axum::Router::new().fallback(move |req: axum::extract::Request| async move {
        let (parts, body) = req.into_parts();
        let body = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default();
        let headers: serde_json::Map<String, Value> = parts
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), json!(String::from_utf8_lossy(v.as_bytes()))))
            .collect();
        let echo = json!({"method": parts.method.as_str(), "uri": parts.uri.to_string(),
                          "headers": headers, "body": String::from_utf8_lossy(&body)});
        (
            axum::http::StatusCode::from_u16(status).unwrap(),
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            echo.to_string(),
        )
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    format!("http://{addr}/hook")
}

/// Attacks 1 and 2, through the built binary (`run`, polling, at `debug`):
/// a target that echoes the request (500 and, for a synchronized run, 200),
/// and one that refuses the connection. Nothing that goes to Port (status
/// summary, run logs, `/response`) or to the agent's log holds a secret in
/// any form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_any_encoding_reaches_port_or_the_log() {
    use crate::support::agent::{offer, patches_of, start_polling, stop, wait_until};
    let port = FakePort::start().await;
    let (fails, answers) = (echo_target(500).await, echo_target(200).await);
    let refused = format!("http://127.0.0.1:{}/hook", closed_port());
    let properties = json!({"token": encrypt(DECRYPTED)});
    offer(
        &port,
        [
            crate::support::agent::claimable("r_echo500", &fails, false, properties.clone()),
            crate::support::agent::claimable("r_echo200", &answers, true, properties.clone()),
            crate::support::agent::claimable("r_refused", &refused, false, properties),
        ],
    );
    let agent = start_polling(
        &port,
        "security-edges-leaks",
        &leaky_mapping(),
        &[
            ("GH_TOKEN", GH_TOKEN),
            ("TAB_TOKEN", TAB_TOKEN),
            ("DOT_SECRET", DOT_SECRET),
            ("LOG_LEVEL", "debug"),
            ("AGENT_RETRY_MAX_ATTEMPTS", "1"),
        ],
    );
    wait_until(Duration::from_secs(30), "three reports", &agent, || {
        ["r_echo500", "r_echo200", "r_refused"]
            .iter()
            .all(|r| !patches_of(&port, r).is_empty())
    });
    let logs = agent.log_text();
    stop(agent);

    // The target got the secrets (the request itself is not redacted) and
    // echoed them: the summary, the run log and /response had them to leak.
    let summary = |run: &str| {
        patches_of(&port, run)[0]["summary"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let echoed = summary("r_echo500");
    assert!(
        echoed.contains("Response: {") && echoed.contains("<redacted>"),
        "{echoed}"
    );
    assert!(
        summary("r_refused").contains("connection failed"),
        "{}",
        summary("r_refused")
    );
    let calls = port.accepted();
    let response = calls
        .iter()
        .find(|c| c.path() == "/v1/actions/runs/r_echo200/response")
        .map(|c| c.json())
        .expect("a /response");
    assert!(response.to_string().contains("<redacted>"), "{response}");
    for c in &calls {
        assert_no_leak(
            &format!("{} {}", c.method, c.uri),
            &String::from_utf8_lossy(&c.body),
        );
    }
    assert!(logs.contains("target request failed"), "{logs}");
    assert_no_leak("the agent's log", &logs);
}

/// Attack 1: `render --assume-status 500` shows exactly the report `run`
/// sends for the same answer, redacted the same way; `render` and `dry-run`
/// show no secret in any form (request, report, Port calls, errors, logs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn render_and_dry_run_show_what_run_sends_and_no_secret() {
    // An answer that quotes every secret in several forms.
    let mut echoed = String::new();
    for s in SECRETS {
        let in_path = url::Url::parse(&format!("http://t.example/hook/{s}/x")).unwrap();
        echoed.push_str(&format!(
            "{s} {in_path} {} {} {} ",
            serde_json::to_string(s).unwrap(),
            STANDARD.encode(s),
            STANDARD.encode(format!("user:{s}"))
        ));
    }
    let (port, target) = (FakePort::start().await, FakeTarget::start().await);
    target.answer(500, &echoed);
    let agent = agent_with(
        &port,
        leaky_mapping(),
        RedirectPolicy::SameHost,
        Guardrails::default(),
    );
    let m = message("r_same", &target.url("/hook"), false);
    let ran = run_signed(&agent, m.clone()).await;
    assert_eq!(ran.result, Disposition::Delivered(500));
    let sent = port
        .accepted()
        .iter()
        .find(|c| c.path() == "/v1/actions/runs/r_same")
        .map(|c| c.json())
        .expect("the status PATCH");

    let mapping =
        crate::support::cli::temp_file("security_edges", "mapping.json", &leaky_mapping().to_string());
    let msg = crate::support::cli::temp_file(
        "security_edges",
        "message.json",
        &signed(m.clone(), SECRET, now()).to_string(),
    );
    let env = [
        ("GH_TOKEN", GH_TOKEN),
        ("TAB_TOKEN", TAB_TOKEN),
        ("DOT_SECRET", DOT_SECRET),
        ("PORT_CLIENT_SECRET", SECRET),
        ("LOG_LEVEL", "debug"),
    ];
    let o = binary(
        &[
            "render",
            "--mapping",
            arg(&mapping),
            "--message",
            arg(&msg),
            "--assume-status",
            "500",
            "--assume-body",
            &echoed,
            "--format",
            "json",
        ],
        &env,
    );
    assert_eq!(o.status.code(), Some(0), "{}", all_output(&o));
    assert_no_leak("render", &all_output(&o));
    let out: Value = serde_json::from_slice(&o.stdout).expect("render JSON");
    assert_eq!(out["report"], sent, "render shows the report run sends");

    let line = json!({"topic": RUNS, "partition": 0, "offset": 0, "value": signed(m, SECRET, now())});
    let input = crate::support::cli::temp_file("security_edges", "topic.jsonl", &format!("{line}\n"));
    for format in ["json", "text"] {
        let o = binary(
            &[
                "dry-run",
                "--input",
                arg(&input),
                "--mapping",
                arg(&mapping),
                "--assume-status",
                "500",
                "--assume-body",
                &echoed,
                "--format",
                format,
            ],
            &env,
        );
        assert_eq!(o.status.code(), Some(0), "{}", all_output(&o));
        assert_no_leak("dry-run", &all_output(&o));
    }
}

/// Attack 3: with the replay window on, future timestamps past the clock
/// skew are stale, and timestamps that are not a non-negative whole number
/// of seconds are refused as invalid; each is reported FAILURE.
#[tokio::test]
async fn the_replay_window_fails_closed() {
    let (port, target) = (FakePort::start().await, FakeTarget::start().await);
    let guard = Guardrails {
        max_message_age: Some(Duration::from_secs(60)),
        ..Guardrails::default()
    };
    let agent = agent_with(&port, json!([{"enabled": true}]), RedirectPolicy::SameHost, guard);
    let sign_with = |run: &str, ts: Value| {
        let mut m = action_run(run, &target.url("/d"), "POST", false);
        let text = match &ts {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let sig = port_agent::signature::sign(SECRET, &text, &port_agent::json_canon::to_raw_string(&m));
        m["headers"] = json!({"X-Port-Signature": sig, "X-Port-Timestamp": ts});
        m
    };
    let n = now();
    let future = [
        ("r_plus1h", json!(n + 3600)),
        ("r_plus10y", json!(n + 10 * 365 * 86400)),
        ("r_millis", json!(n * 1000)),
    ];
    for (run, ts) in future {
        let o = agent.process(&delivery(&sign_with(run, ts))).await;
        assert_eq!(o.name(), "stale", "{run}: {:?}", o.result);
        assert!(o.needs_dead_letter());
    }
    let invalid: Vec<(&str, Value)> = vec![
        ("r_neg", json!(-5)),
        ("r_text", json!("soon")),
        ("r_exp", serde_json::from_str("1.7e9").unwrap()),
        ("r_1e30", serde_json::from_str("1e30").unwrap()),
        ("r_frac", serde_json::from_str(&format!("{n}.5")).unwrap()),
        ("r_space", json!(format!(" {n}"))),
        ("r_empty", json!("")),
        ("r_huge", json!("99999999999999999999")),
    ];
    for (run, ts) in invalid {
        let o = agent.process(&delivery(&sign_with(run, ts.clone()))).await;
        assert!(
            matches!(&o.result, Disposition::Skipped(Skip::InvalidTimestamp(_))),
            "{run} ({ts}): {:?}",
            o.result
        );
        assert_eq!(o.name(), "invalid_timestamp");
        assert!(o.needs_dead_letter());
    }
    assert!(target.requests().is_empty(), "no replayed run reached the target");
    let patches: Vec<Value> = port
        .accepted()
        .iter()
        .filter(|c| c.method == "PATCH")
        .map(|c| c.json())
        .collect();
    assert_eq!(patches.len(), 11, "{patches:#?}");
    assert!(patches.iter().all(|p| p["status"] == "FAILURE"));
    let say = |run: &str| {
        port.accepted()
            .iter()
            .find(|c| c.path() == format!("/v1/actions/runs/{run}"))
            .map(|c| c.json()["summary"].as_str().unwrap_or_default().to_string())
            .unwrap_or_default()
    };
    assert!(say("r_plus1h").contains("in the future, more than AGENT_MAX_CLOCK_SKEW_SECONDS (300 s)"));
    assert!(say("r_text").contains("X-Port-Timestamp 'soon' is not a whole number of seconds"));

    // Within the skew (+30 s) and within the window: run.
    let ok = agent
        .process(&delivery(&sign_with("r_skew", json!(n + 30))))
        .await;
    assert_eq!(ok.result, Disposition::Delivered(200));
    let ok = agent
        .process(&delivery(&sign_with("r_str", json!((n - 10).to_string()))))
        .await;
    assert_eq!(ok.result, Disposition::Delivered(200));
    // A smaller skew makes +30 s stale.
    let strict = agent_with(
        &port,
        json!([{"enabled": true}]),
        RedirectPolicy::SameHost,
        Guardrails {
            max_message_age: Some(Duration::from_secs(60)),
            max_clock_skew: Duration::from_secs(5),
            ..Guardrails::default()
        },
    );
    let o = strict
        .process(&delivery(&sign_with("r_skew5", json!(n + 30))))
        .await;
    assert!(
        matches!(o.result, Disposition::Skipped(Skip::Ahead(a)) if (25..=30).contains(&a)),
        "{:?}",
        o.result
    );
}

/// Attack 5: with `any`, a request that carries a known secret value
/// (under any header name, in the URL or in the body) does not follow a
/// redirect to another host: the 3xx is the answer, reported with its
/// `Location`. Without a secret it follows, and the other host gets none
/// of the mapping's headers.
#[tokio::test]
async fn redirects_with_any_never_take_a_secret_to_another_host() {
    let port = FakePort::start().await;
    let (first, second) = (FakeTarget::start().await, FakeTarget::start().await);
    let elsewhere = second.url("/collect");
    let redirect = |status: u16| {
        first.state.script.lock().unwrap().push_back(Answer {
            status,
            body: String::new(),
            delay: Duration::ZERO,
            headers: vec![("location".into(), elsewhere.clone())],
        });
    };
    let carriers = [
        json!({"headers": {"X-Auth": "env.GH_TOKEN"}}),
        json!({"headers": {"X-Access-Key": "env.DOT_SECRET | @base64"}}),
        json!({"headers": {"Authentication": "\"Bearer \" + env.TAB_TOKEN"}}),
        json!({"body": {"data": ".payload.properties.token"}, "fieldsToDecryptPaths": ["payload.properties.token"]}),
        json!({"url": ".payload.action.invocationMethod.url + \"/\" + (env.GH_TOKEN | @uri)"}),
    ];
    for (i, extra) in carriers.iter().enumerate() {
        let mut mapping = json!({"enabled": true});
        for (k, v) in extra.as_object().unwrap() {
            mapping[k] = v.clone();
        }
        let agent = agent_with(
            &port,
            json!([mapping]),
            RedirectPolicy::Any,
            Guardrails::default(),
        );
        redirect(307);
        let id = format!("r_carrier{i}");
        let o = run_signed(&agent, message(&id, &first.url("/deploy"), false)).await;
        assert_eq!(o.result, Disposition::Delivered(307), "{extra}");
        let summary = port
            .accepted()
            .iter()
            .find(|c| c.path() == format!("/v1/actions/runs/{id}"))
            .map(|c| c.json()["summary"].as_str().unwrap_or_default().to_string())
            .unwrap_or_default();
        assert!(summary.contains(&format!("Location: {elsewhere}")), "{summary}");
    }
    assert!(second.requests().is_empty(), "no secret-carrying request crossed");

    // No secret: followed, without the mapping's headers or the signature.
    let agent = agent_with(
        &port,
        json!([{"enabled": true, "headers": {"X-Trace": "\"t-1\"", "X-Custom": "\"c\""}}]),
        RedirectPolicy::Any,
        Guardrails::default(),
    );
    redirect(307);
    let o = run_signed(&agent, message("r_clean", &first.url("/deploy"), false)).await;
    assert_eq!(o.result, Disposition::Delivered(200));
    let got = second.requests();
    assert_eq!(got.len(), 1);
    let names: Vec<String> = got[0]
        .headers
        .iter()
        .map(|(k, _)| k.to_ascii_lowercase())
        .collect();
    for gone in ["x-trace", "x-custom", "x-port-signature", "x-port-timestamp"] {
        assert!(!names.contains(&gone.to_string()), "{gone} crossed: {names:?}");
    }
    assert_eq!(
        got[0].body,
        first.requests().last().unwrap().body,
        "307 keeps the body"
    );
}

/// Attack 6: `CONNECT` and `TRACE` are refused like invalid methods, by
/// `run` (nothing reaches the target) and by `render` (no request shown).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_and_trace_are_refused() {
    let (port, target) = (FakePort::start().await, FakeTarget::start().await);
    let agent = agent_with(
        &port,
        json!([{"enabled": true}]),
        RedirectPolicy::SameHost,
        Guardrails::default(),
    );
    for method in ["CONNECT", "TRACE", "connect", "trace"] {
        let id = format!("r_{method}");
        let o = run_signed(&agent, action_run(&id, &target.url("/d"), method, false)).await;
        let want = format!(
            "Failed to invoke the webhook: invalid HTTP method '{}'",
            method.to_ascii_uppercase()
        );
        assert!(
            matches!(&o.result, Disposition::RequestFailed(s) if s.to_string() == want),
            "{method}: {:?}",
            o.result
        );
    }
    assert!(target.requests().is_empty());

    let mapping = crate::support::cli::temp_file("security_edges", "plain.json", r#"[{"enabled": true}]"#);
    let m = signed(
        action_run("r_c", "http://t.example:8443/a/b?q=1", "CONNECT", false),
        SECRET,
        now(),
    );
    let msg = crate::support::cli::temp_file("security_edges", "connect.json", &m.to_string());
    let o = binary(
        &[
            "render",
            "--mapping",
            arg(&mapping),
            "--message",
            arg(&msg),
            "--format",
            "json",
        ],
        &[("PORT_CLIENT_SECRET", SECRET)],
    );
    assert_eq!(o.status.code(), Some(0), "{}", all_output(&o));
    let out: Value = serde_json::from_slice(&o.stdout).expect("render JSON");
    assert_eq!(out["request"], Value::Null, "{out}");
    assert_eq!(
        out["report"]["summary"],
        "Failed to invoke the webhook: invalid HTTP method 'CONNECT'"
    );

    // The URL shown is the one requested: a fragment never goes on the wire.
    let m = signed(
        action_run("r_f", "http://t.example/a#frag", "POST", false),
        SECRET,
        now(),
    );
    let msg = crate::support::cli::temp_file("security_edges", "fragment.json", &m.to_string());
    let o = binary(
        &[
            "render",
            "--mapping",
            arg(&mapping),
            "--message",
            arg(&msg),
            "--format",
            "json",
        ],
        &[("PORT_CLIENT_SECRET", SECRET)],
    );
    let out: Value = serde_json::from_slice(&o.stdout).expect("render JSON");
    assert_eq!(out["request"]["url"], "http://t.example/a");
}
