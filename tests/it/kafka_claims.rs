//! The README's Kafka claims on the built binary against tansu, the fake
//! Port API and a fake target: the in-flight bound (never above, and
//! reached), no fetching while every slot is held, the warm standby, a
//! broker that goes away and comes back, brokers and SASL credentials from
//! `/v1/kafka-credentials` or from `KAFKA_CONSUMER_BROKERS/USERNAME/PASSWORD`,
//! a refused organization PATCH, and the commit on revoke as a second
//! consumer of the group sees it.

use std::time::{Duration, Instant};

use crate::support::broker::{
    eventually, eventually_some, free_port, produce, run_ids, signed_runs, write_mapping, AgentProcess, Tansu,
};
use crate::support::{action_run, http_get, signed, FakePort, FakeTarget, SECRET};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::Message;
use serde_json::{json, Value};

const RUNS: &str = "org_1.runs";
const CHANGES: &str = "org_1.change.log";
const GROUP: &str = "org_1.claims";

fn env(
    tansu: &Tansu,
    port: &FakePort,
    tag: &str,
    extra: &[(&'static str, &str)],
) -> Vec<(&'static str, String)> {
    let mut all = vec![
        ("KAFKA_CONSUMER_SESSION_TIMEOUT_MS", "6000"),
        ("LOG_LEVEL", "info"),
    ];
    all.extend_from_slice(extra);
    crate::support::broker::agent_env(&tansu.bootstrap, &port.base(), &write_mapping(tag), GROUP, &all)
}

/// Settings without a local broker: brokers come from elsewhere.
fn without_local_brokers(env: Vec<(&'static str, String)>) -> Vec<(&'static str, String)> {
    env.into_iter()
        .filter(|(k, _)| {
            !matches!(
                *k,
                "USING_LOCAL_PORT_INSTANCE" | "KAFKA_CONSUMER_BOOTSTRAP_SERVERS"
            )
        })
        .collect()
}

fn log_lines(agent: &AgentProcess) -> Vec<Value> {
    agent
        .log_text()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn said(agent: &AgentProcess, message: &str) -> usize {
    log_lines(agent)
        .iter()
        .filter(|l| l["message"] == message)
        .count()
}

/// A metric's value in a `/metrics` text.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

async fn topics(tansu: &Tansu, runs_partitions: i32) {
    tansu.create_topic(RUNS, runs_partitions).await;
    tansu.create_topic(CHANGES, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_agent_max_in_flight_runs_are_at_the_target_at_once_and_the_bound_is_reached() {
    let tansu = Tansu::start();
    topics(&tansu, 3).await;
    let (port, target) = (FakePort::start().await, FakeTarget::start().await);
    target.answer_after(200, Duration::from_millis(400));
    produce(
        &tansu.bootstrap,
        RUNS,
        signed_runs(30, &target.url("/run"), false),
    )
    .await;
    let mut agent = AgentProcess::start(
        &env(&tansu, &port, "bound", &[("AGENT_MAX_IN_FLIGHT", "4")]),
        "bound",
    );
    eventually("30 runs delivered", Duration::from_secs(90), || {
        run_ids(&target).len() == 30
    })
    .await;
    assert_eq!(target.max_concurrency(), 4, "never above 4, and 4 reached");
    agent.signal("-TERM");
    assert_eq!(agent.wait(Duration::from_secs(30)), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_every_slot_is_held_nothing_more_is_consumed_and_the_partitions_are_paused() {
    let tansu = Tansu::start();
    topics(&tansu, 3).await;
    let (port, target) = (FakePort::start().await, FakeTarget::start().await);
    target.answer_after(200, Duration::from_secs(5));
    let ends = produce(
        &tansu.bootstrap,
        RUNS,
        signed_runs(12, &target.url("/run"), false),
    )
    .await;
    let http_port = free_port().to_string();
    let http = format!("127.0.0.1:{http_port}");
    let mut agent = AgentProcess::start(
        &env(
            &tansu,
            &port,
            "full",
            &[("AGENT_MAX_IN_FLIGHT", "3"), ("AGENT_HTTP_PORT", &http_port)],
        ),
        "full",
    );
    eventually("3 runs held at the target", Duration::from_secs(60), || {
        target.requests().len() == 3
    })
    .await;
    // Answers from now on are immediate; the three held ones end after 5 s.
    target.answer(200, "");
    eventually("partitions paused", Duration::from_secs(4), || {
        agent.log_text().contains("partitions paused")
    })
    .await;
    let (_, metrics) = http_get(&http, "/metrics").expect("/metrics");
    assert_eq!(
        sample(
            &metrics,
            &format!("port_agent_messages_consumed_total{{topic=\"{RUNS}\"}}")
        ),
        Some(3.0),
        "{metrics}"
    );
    assert_eq!(sample(&metrics, "port_agent_messages_in_flight"), Some(3.0));
    assert_eq!(target.requests().len(), 3, "no fourth run started");

    eventually("12 runs delivered", Duration::from_secs(60), || {
        run_ids(&target).len() == 12
    })
    .await;
    assert!(agent.log_text().contains("partitions resumed"));
    eventually("everything committed", Duration::from_secs(10), || {
        tansu.committed(GROUP, RUNS, 3) == (0..3).map(|p| ends[&p]).collect::<Vec<_>>()
    })
    .await;
    agent.signal("-TERM");
    assert_eq!(agent.wait(Duration::from_secs(30)), Some(0));
}

/// The partitions of the agent's last assignment ("" for a standby).
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_without_partitions_is_a_ready_warm_standby_and_takes_over() {
    let tansu = Tansu::start();
    // Two partitions in all: the range assignor gives both to one of two
    // members.
    topics(&tansu, 1).await;
    let (port, target) = (FakePort::start().await, FakeTarget::start().await);
    let start = |tag: &str| {
        let http_port = free_port().to_string();
        let env = env(&tansu, &port, tag, &[("AGENT_HTTP_PORT", &http_port)]);
        (AgentProcess::start(&env, tag), format!("127.0.0.1:{http_port}"))
    };
    let (first, first_http) = start("standby-1");
    eventually("the first agent assigned", Duration::from_secs(60), || {
        last_assignment(&first).is_some_and(|p| !p.is_empty())
    })
    .await;
    let (second, second_http) = start("standby-2");
    let standby_is_first = eventually_some(
        "one agent with both partitions, one standby",
        Duration::from_secs(60),
        || match (
            last_assignment(&first)?.as_str(),
            last_assignment(&second)?.as_str(),
        ) {
            ("", p) if p.contains(RUNS) && p.contains(CHANGES) => Some(true),
            (p, "") if p.contains(RUNS) && p.contains(CHANGES) => Some(false),
            _ => None,
        },
    )
    .await;
    let (standby, standby_http, mut active, active_http) = if standby_is_first {
        (first, first_http, second, second_http)
    } else {
        (second, second_http, first, first_http)
    };
    // port_agent_partitions_assigned: 0 on the standby, both partitions on
    // the active replica.
    let assigned = |http: &str| {
        let (_, text) = http_get(http, "/metrics")?;
        text.lines().find_map(|l| {
            l.strip_prefix("port_agent_partitions_assigned ")?
                .parse::<f64>()
                .ok()
        })
    };
    eventually("the gauges", Duration::from_secs(10), || {
        assigned(&standby_http) == Some(0.0) && assigned(&active_http) == Some(2.0)
    })
    .await;
    let announced = "no partitions assigned: staying up as a warm standby (more replicas than partitions)";
    assert_eq!(said(&standby, announced), 1, "said once: {}", standby.log_text());
    let ready = eventually_some("the standby is ready", Duration::from_secs(10), || {
        http_get(&standby_http, "/readyz").filter(|(s, _)| *s == 200)
    })
    .await;
    assert_eq!(ready.1, json!({"status": "ok"}).to_string());

    // The active replica goes; the standby takes its partitions and works.
    active.signal("-TERM");
    assert_eq!(active.wait(Duration::from_secs(30)), Some(0));
    eventually("the standby assigned", Duration::from_secs(20), || {
        last_assignment(&standby).is_some_and(|p| p.contains(RUNS))
    })
    .await;
    eventually("the former standby's gauge", Duration::from_secs(10), || {
        assigned(&standby_http) == Some(2.0)
    })
    .await;
    produce(
        &tansu.bootstrap,
        RUNS,
        vec![(
            0,
            signed(action_run("r_after", &target.url("/x"), "POST", false), SECRET, 1),
        )],
    )
    .await;
    eventually(
        "the run delivered by the former standby",
        Duration::from_secs(30),
        || run_ids(&target).contains_key("r_after"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_rides_out_a_broker_that_goes_away_and_comes_back() {
    // The broker vanishes for the agent (every connection cut, nothing
    // listening) and comes back on the same address with its data, as a
    // restarted broker does. (Killing tansu itself loses its in-memory
    // topics; the re-created topics get new ids, and librdkafka 2.12.1 then
    // crashes in its metadata cache: see the closing note of issue 17.)
    let (tansu, mut relay) = Tansu::start_behind_relay().await;
    topics(&tansu, 2).await;
    let (port, target) = (FakePort::start().await, FakeTarget::start().await);
    let run = |id: &str| signed(action_run(id, &target.url("/x"), "POST", false), SECRET, 1);
    produce(&tansu.bootstrap, RUNS, vec![(0, run("r_before"))]).await;
    let http_port = free_port().to_string();
    let http = format!("127.0.0.1:{http_port}");
    let mut agent = AgentProcess::start(
        &env(&tansu, &port, "restart", &[("AGENT_HTTP_PORT", &http_port)]),
        "restart",
    );
    eventually("the first run delivered", Duration::from_secs(60), || {
        run_ids(&target).contains_key("r_before")
    })
    .await;
    eventually("the first run committed", Duration::from_secs(10), || {
        tansu.committed(GROUP, RUNS, 2)[0] == 1
    })
    .await;

    relay.stop();
    let gone = Instant::now();
    let (status, body) = eventually_some("/readyz says the broker is gone", Duration::from_secs(30), || {
        http_get(&http, "/readyz").filter(|(_, b)| b.contains("no Kafka broker is reachable"))
    })
    .await;
    assert_eq!(status, 503, "/readyz fails while no broker is reachable: {body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"status": "unavailable", "reason": "no Kafka broker is reachable"})
    );
    assert!(agent.log_text().contains("Kafka client error (retrying)"));
    // Away for 8 s, longer than the 6 s session.
    tokio::time::sleep_until((gone + Duration::from_secs(8)).into()).await;
    assert!(
        agent.child.try_wait().expect("try_wait").is_none(),
        "the agent does not exit: {}",
        agent.log_text()
    );

    relay.restart().await;
    produce(&tansu.bootstrap, RUNS, vec![(1, run("r_after"))]).await;
    eventually(
        "the run produced after the return delivered",
        Duration::from_secs(60),
        || run_ids(&target).contains_key("r_after"),
    )
    .await;
    eventually("ready again", Duration::from_secs(30), || {
        http_get(&http, "/readyz").is_some_and(|(s, _)| s == 200)
    })
    .await;
    assert_eq!(
        run_ids(&target)["r_before"],
        1,
        "the committed run is not run again"
    );
    agent.signal("-TERM");
    assert_eq!(
        agent.wait(Duration::from_secs(30)),
        Some(0),
        "{}",
        agent.log_text()
    );
}

/// Port's answer to `GET /v1/kafka-credentials` naming `brokers`.
fn credentials(port: &FakePort, brokers: &str) {
    port.state.answers.lock().unwrap().insert(
        "/v1/kafka-credentials".into(),
        (
            200,
            json!({"ok": true, "credentials": {"brokers": brokers.split(',').collect::<Vec<_>>(),
                   "username": "user-from-port", "password": "password-from-port-0123456789"}}),
        ),
    );
}

fn credential_calls(port: &FakePort) -> usize {
    port.all_calls()
        .iter()
        .filter(|c| c.method == "GET" && c.path() == "/v1/kafka-credentials")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_local_or_explicit_brokers_the_agent_consumes_from_the_brokers_port_names() {
    let tansu = Tansu::start();
    topics(&tansu, 1).await;
    let (port, target) = (FakePort::start().await, FakeTarget::start().await);
    credentials(&port, &tansu.bootstrap);
    let msg = signed(action_run("r_creds", &target.url("/x"), "POST", false), SECRET, 1);
    produce(&tansu.bootstrap, RUNS, vec![(0, msg)]).await;
    let env = without_local_brokers(env(&tansu, &port, "creds", &[]));
    let mut agent = AgentProcess::start(&env, "creds");
    eventually("the run delivered", Duration::from_secs(60), || {
        run_ids(&target).contains_key("r_creds")
    })
    .await;
    assert_eq!(credential_calls(&port), 1, "the credentials are asked for once");
    agent.signal("-TERM");
    assert_eq!(agent.wait(Duration::from_secs(30)), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_kafka_consumer_brokers_are_used_and_port_is_not_asked() {
    let tansu = Tansu::start();
    topics(&tansu, 1).await;
    let (port, target) = (FakePort::start().await, FakeTarget::start().await);
    // Were Port asked, it would name a broker where nothing listens.
    credentials(&port, &format!("127.0.0.1:{}", crate::support::closed_port()));
    let msg = signed(
        action_run("r_explicit", &target.url("/x"), "POST", false),
        SECRET,
        1,
    );
    produce(&tansu.bootstrap, RUNS, vec![(0, msg)]).await;
    let env = without_local_brokers(env(
        &tansu,
        &port,
        "explicit",
        &[("KAFKA_CONSUMER_BROKERS", tansu.bootstrap.as_str())],
    ));
    let mut agent = AgentProcess::start(&env, "explicit");
    eventually("the run delivered", Duration::from_secs(60), || {
        run_ids(&target).contains_key("r_explicit")
    })
    .await;
    assert_eq!(
        credential_calls(&port),
        0,
        "explicit brokers skip /v1/kafka-credentials"
    );
    agent.signal("-TERM");
    assert_eq!(agent.wait(Duration::from_secs(30)), Some(0));
}

/// SASL against tansu cannot succeed (see
/// [`Tansu::start_with_authentication`]), so this shows what the agent does
/// with the credentials: it authenticates with SCRAM-SHA-512, Port's
/// mechanism, as the user Port named, or as `KAFKA_CONSUMER_USERNAME` when
/// that is set; the broker's log names the user. SCRAM never sends the
/// password, so that it is used is not observable here; that it is never
/// logged is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_users_from_port_or_from_the_settings_reach_the_broker_over_scram_sha_512() {
    let tansu = Tansu::start_with_authentication();
    let port = FakePort::start().await;
    credentials(&port, &tansu.bootstrap);
    let sasl = [
        ("KAFKA_CONSUMER_SECURITY_PROTOCOL", "SASL_PLAINTEXT"),
        ("KAFKA_CONSUMER_AUTHENTICATION_MECHANISM", "SCRAM-SHA-512"),
        ("LOG_LEVEL", "debug"),
    ];
    let env_from_port = without_local_brokers(env(&tansu, &port, "scram-port", &sasl));
    let mut agent = AgentProcess::start(&env_from_port, "scram-port");
    eventually(
        "the broker saw the user Port named",
        Duration::from_secs(30),
        || tansu.log_text().contains("\"user-from-port\""),
    )
    .await;
    assert_eq!(credential_calls(&port), 1);
    assert!(
        agent.child.try_wait().expect("try_wait").is_none(),
        "a refused login is retried, not fatal"
    );
    drop(agent);

    let mut explicit = sasl.to_vec();
    explicit.extend([
        ("KAFKA_CONSUMER_BROKERS", tansu.bootstrap.as_str()),
        ("KAFKA_CONSUMER_USERNAME", "explicit-user"),
        ("KAFKA_CONSUMER_PASSWORD", "explicit-password-0123456789"),
    ]);
    let env_explicit = without_local_brokers(env(&tansu, &port, "scram-explicit", &explicit));
    let agent = AgentProcess::start(&env_explicit, "scram-explicit");
    eventually(
        "the broker saw the explicit user",
        Duration::from_secs(30),
        || tansu.log_text().contains("\"explicit-user\""),
    )
    .await;
    assert_eq!(credential_calls(&port), 1, "explicit credentials skip Port");
    eventually("the refused login logged", Duration::from_secs(30), || {
        agent.log_text().contains("Kafka client error (retrying)")
    })
    .await;
    let log = agent.log_text();
    for secret in ["explicit-password-0123456789", "password-from-port-0123456789"] {
        assert!(!log.contains(secret), "{secret} in the log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_organization_patch_is_only_a_warning() {
    let tansu = Tansu::start();
    topics(&tansu, 1).await;
    let (port, target) = (FakePort::start().await, FakeTarget::start().await);
    port.state.answers.lock().unwrap().insert(
        "/v1/organization".into(),
        (403, json!({"ok": false, "error": "forbidden"})),
    );
    produce(
        &tansu.bootstrap,
        RUNS,
        vec![(
            0,
            signed(action_run("r_org", &target.url("/x"), "POST", false), SECRET, 1),
        )],
    )
    .await;
    let mut agent = AgentProcess::start(&env(&tansu, &port, "org", &[]), "org");
    eventually("the run delivered", Duration::from_secs(60), || {
        run_ids(&target).contains_key("r_org")
    })
    .await;
    let patches: Vec<u16> = port
        .all_calls()
        .iter()
        .filter(|c| c.method == "PATCH" && c.path() == "/v1/organization")
        .map(|c| c.status)
        .collect();
    assert_eq!(patches, [403]);
    let warning = log_lines(&agent)
        .into_iter()
        .find(|l| l["message"] == "could not record the streamer name on the organization; continuing")
        .unwrap_or_else(|| panic!("no warning: {}", agent.log_text()));
    assert_eq!(warning["level"], "WARN");
    agent.signal("-TERM");
    assert_eq!(agent.wait(Duration::from_secs(30)), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_revoke_a_second_consumer_starts_at_the_unfinished_run_and_the_late_completion_commits_nothing() {
    let tansu = Tansu::start();
    topics(&tansu, 1).await;
    let (port, target) = (FakePort::start().await, FakeTarget::start().await);
    let run = |id: &str| {
        (
            0,
            signed(action_run(id, &target.url("/x"), "POST", false), SECRET, 1),
        )
    };
    produce(
        &tansu.bootstrap,
        RUNS,
        (0..5).map(|i| run(&format!("r_{i}"))).collect(),
    )
    .await;
    let mut agent = AgentProcess::start(&env(&tansu, &port, "revoke", &[("LOG_LEVEL", "debug")]), "revoke");
    eventually("5 runs committed", Duration::from_secs(60), || {
        tansu.committed(GROUP, RUNS, 1) == [5]
    })
    .await;
    // The sixth run (offset 5) is held at the target for 8 s.
    target.answer_after(200, Duration::from_secs(8));
    produce(&tansu.bootstrap, RUNS, vec![run("r_slow")]).await;
    eventually("the slow run at the target", Duration::from_secs(30), || {
        run_ids(&target).contains_key("r_slow")
    })
    .await;

    // A second consumer joins the group for the runs topic only. The range
    // assignor orders members by id, `<client.id>-<uuid>`: "a-second…"
    // comes before "port-agent-…", so it gets the partition.
    let bootstrap = tansu.bootstrap.clone();
    let (second, first) = crate::support::broker::blocking(move || {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", GROUP)
            .set("client.id", "a-second-consumer")
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "latest")
            .set("session.timeout.ms", "6000")
            .create()
            .expect("consumer");
        c.subscribe(&[RUNS]).expect("subscribe");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            assert!(Instant::now() < deadline, "the second consumer got no message");
            if let Some(m) = c.poll(Duration::from_millis(200)) {
                let m = m.expect("message");
                let value: Value = serde_json::from_slice(m.payload().unwrap_or_default()).unwrap();
                let seen = (
                    m.offset(),
                    value["context"]["runId"].as_str().unwrap_or("?").to_string(),
                );
                drop(m);
                return (c, seen);
            }
        }
    })
    .await;
    assert_eq!(
        first,
        (5, "r_slow".to_string()),
        "it starts at the unfinished run"
    );
    assert!(agent.log_text().contains("partitions revoked"));
    // The agent's late completion of the slow run is dropped, not committed.
    eventually("the late completion dropped", Duration::from_secs(20), || {
        agent
            .log_text()
            .contains("completion for a revoked partition dropped")
    })
    .await;
    assert_eq!(tansu.committed(GROUP, RUNS, 1), [5]);
    // The second consumer stays in the group until here.
    crate::support::broker::blocking(move || drop(second)).await;
    agent.signal("-TERM");
    assert_eq!(agent.wait(Duration::from_secs(30)), Some(0));
}
