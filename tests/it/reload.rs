//! Mapping hot reload (issue 14) through the built binary, tansu and the
//! fake Port API and target. The mapping file lives in a directory laid out
//! as Kubernetes lays out a ConfigMap volume: the file is a symlink through
//! `..data`, and an update swaps `..data` (a new directory, a temporary
//! symlink renamed over the old one), never writing the file itself.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::agent::{polling_env, stop, wait_until};
use crate::support::broker::{agent_env, eventually, free_port, produce, AgentProcess, Tansu};
use crate::support::{action_run, http_get, signed, Answer, FakePort, FakeTarget, SECRET};
use serde_json::{json, Value};

const RUNS: &str = "org_1.runs";
const FILE: &str = "control_the_payload_config.json";

/// A ConfigMap-style volume: `FILE -> ..data/FILE`, `..data -> ..vN`.
struct ConfigMapDir {
    dir: PathBuf,
    version: usize,
}

impl ConfigMapDir {
    fn new(tag: &str, first: &str) -> ConfigMapDir {
        let dir = std::env::temp_dir().join(format!("configmap-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("volume dir");
        let mut volume = ConfigMapDir { dir, version: 0 };
        volume.update(first);
        std::os::unix::fs::symlink(format!("..data/{FILE}"), volume.file()).expect("file link");
        volume
    }

    fn file(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    /// Publish `text` as the kubelet does: a new version directory, then
    /// `..data` swapped to it by renaming a temporary symlink over it.
    fn update(&mut self, text: &str) {
        self.version += 1;
        let version = format!("..v{}", self.version);
        std::fs::create_dir_all(self.dir.join(&version)).expect("version dir");
        std::fs::write(self.dir.join(&version).join(FILE), text).expect("mapping");
        let tmp = self.dir.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&version, &tmp).expect("tmp link");
        std::fs::rename(&tmp, self.dir.join("..data")).expect("swap ..data");
    }
}

fn mapping(url: &str, link: &str) -> String {
    json!([{"enabled": true, "url": format!("{url:?}"), "report": {"link": format!("{link:?}")}}]).to_string()
}

/// The accepted status PATCH of `run`.
fn status_of(port: &FakePort, run: &str) -> Option<Value> {
    let path = format!("/v1/actions/runs/{run}");
    port.accepted()
        .into_iter()
        .find(|c| c.method == "PATCH" && c.path() == path)
        .map(|c| c.json())
}

fn metric(http: &str, series: &str) -> Option<f64> {
    let (_, text) = http_get(http, "/metrics")?;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn sha256_of(path: &Path) -> String {
    port_agent::mapping::reload::sha256_hex(&std::fs::read(path).expect("read"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_swap_is_reloaded_a_broken_file_is_refused_and_a_run_in_flight_keeps_its_mapping() {
    let tansu = Tansu::start();
    tansu.create_topic(RUNS, 1).await;
    tansu.create_topic("org_1.change.log", 1).await;
    let (port, target) = (FakePort::start().await, FakeTarget::start().await);
    target.answer_json(200, json!({"ok": true}));
    let (old, new) = (target.url("/old"), target.url("/new"));
    let mut volume = ConfigMapDir::new("reload", &mapping(&old, "old"));
    let first_sha = sha256_of(&volume.file());
    let http_port = free_port().to_string();
    let http = format!("127.0.0.1:{http_port}");
    let env = agent_env(
        &tansu.bootstrap,
        &port.base(),
        &volume.file(),
        "org_1.reload",
        &[
            ("AGENT_HTTP_PORT", &http_port),
            ("LOG_LEVEL", "info"),
            ("AGENT_RUN_LOGS", "false"),
        ],
    );
    let mut agent = AgentProcess::start(&env, "reload");
    let run = |id: &str| {
        vec![(
            0,
            signed(action_run(id, "http://unused.invalid/", "POST", true), SECRET, 1),
        )]
    };
    let paths = |t: &FakeTarget| {
        t.requests()
            .iter()
            .map(|r| r.path().to_string())
            .collect::<Vec<_>>()
    };

    // Before any change: the first version.
    produce(&tansu.bootstrap, RUNS, run("r_1")).await;
    eventually("r_1 reported", Duration::from_secs(60), || {
        status_of(&port, "r_1").is_some()
    })
    .await;
    assert_eq!(paths(&target), ["/old"]);
    let info = |sha: &str| format!("port_agent_mapping_info{{sha256=\"{sha}\"}}");
    assert_eq!(metric(&http, &info(&first_sha)), Some(1.0));

    // A run in flight during the swap finishes with the mapping it began
    // with: the target holds r_2 while ..data is swapped.
    target.state.script.lock().unwrap().push_back(Answer {
        status: 200,
        body: r#"{"ok":true}"#.into(),
        delay: Duration::from_secs(3),
        headers: vec![("content-type".into(), "application/json".into())],
    });
    produce(&tansu.bootstrap, RUNS, run("r_2")).await;
    eventually("r_2 at the target", Duration::from_secs(30), || {
        target.requests().len() == 2
    })
    .await;
    volume.update(&mapping(&new, "new"));
    let second_sha = sha256_of(&volume.file());
    eventually("the reload", Duration::from_secs(10), || {
        agent.log_text().contains("mappings reloaded")
    })
    .await;
    assert!(
        status_of(&port, "r_2").is_none(),
        "r_2 was still in flight during the swap"
    );
    eventually("r_2 reported", Duration::from_secs(30), || {
        status_of(&port, "r_2").is_some()
    })
    .await;
    assert_eq!(
        status_of(&port, "r_2"),
        Some(json!({"status": "SUCCESS", "link": "old"}))
    );

    // The next message uses the new version.
    produce(&tansu.bootstrap, RUNS, run("r_3")).await;
    eventually("r_3 reported", Duration::from_secs(30), || {
        status_of(&port, "r_3").is_some()
    })
    .await;
    assert_eq!(paths(&target), ["/old", "/old", "/new"]);
    assert_eq!(
        status_of(&port, "r_3"),
        Some(json!({"status": "SUCCESS", "link": "new"}))
    );
    assert_eq!(
        metric(&http, "port_agent_mapping_reloads_total{result=\"ok\"}"),
        Some(1.0)
    );
    assert_eq!(metric(&http, &info(&second_sha)), Some(1.0));
    assert_eq!(metric(&http, &info(&first_sha)), Some(0.0));
    let log = agent.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("mappings reloaded"))
        .unwrap_or_default();
    assert!(line.contains(&second_sha) && line.contains(&first_sha), "{line}");

    // A broken version is refused with the text `check` prints; the last
    // good version stays in force and the agent stays ready.
    let broken = r#"[{"enabled": true, "body": {"ref": ".a |"}}]"#;
    volume.update(broken);
    eventually("the refusal", Duration::from_secs(10), || {
        metric(&http, "port_agent_mapping_reloads_total{result=\"error\"}") == Some(1.0)
    })
    .await;
    let check = Command::new(env!("CARGO_BIN_EXE_port-agent"))
        .args(["check", "--mapping"])
        .arg(volume.file())
        .env_clear()
        .output()
        .expect("port-agent check");
    let check_out = String::from_utf8_lossy(&check.stdout);
    let check_error = check_out
        .lines()
        .find_map(|l| l.strip_prefix("error: "))
        .unwrap_or_else(|| panic!("check names the error: {check_out}"));
    assert!(
        check_error.contains("mapping #0, field 'body.ref'"),
        "{check_error}"
    );
    let refusal = agent
        .log_text()
        .lines()
        .find(|l| l.contains("mapping reload refused"))
        .map(str::to_string)
        .unwrap_or_default();
    let logged: Value = serde_json::from_str(&refusal).unwrap_or(Value::Null);
    assert_eq!(logged["error"].as_str(), Some(check_error), "{refusal}");
    let (status, _) = http_get(&http, "/readyz").expect("/readyz");
    assert_eq!(status, 200, "a refused reload does not make the agent unready");
    produce(&tansu.bootstrap, RUNS, run("r_4")).await;
    eventually("r_4 reported", Duration::from_secs(30), || {
        status_of(&port, "r_4").is_some()
    })
    .await;
    // r_4 ran on the version in force, not on what was refused: its own
    // request to /new and the new version's link.
    assert_eq!(paths(&target), ["/old", "/old", "/new", "/new"]);
    assert_eq!(
        status_of(&port, "r_4"),
        Some(json!({"status": "SUCCESS", "link": "new"}))
    );

    // SIGHUP reloads too (the file is still broken: refused again).
    agent.signal("-HUP");
    eventually("the SIGHUP reload", Duration::from_secs(10), || {
        metric(&http, "port_agent_mapping_reloads_total{result=\"error\"}") == Some(2.0)
    })
    .await;
    assert!(agent.log_text().contains("SIGHUP: reloading the mappings"));
    agent.signal("-TERM");
    assert_eq!(
        agent.wait(Duration::from_secs(30)),
        Some(0),
        "{}",
        agent.log_text()
    );
}

/// The agent in polling mode (no broker) reading the mapping of `volume`,
/// once its reloader has started (the watcher is on, or has said why not).
/// `from_its_directory`: the agent runs in the volume's directory and
/// `CONTROL_THE_PAYLOAD_CONFIG_PATH` is the bare file name.
fn start_reloading(
    port: &FakePort,
    volume: &ConfigMapDir,
    tag: &str,
    from_its_directory: bool,
) -> AgentProcess {
    let path = if from_its_directory {
        PathBuf::from(FILE)
    } else {
        volume.file()
    };
    let path = path.display().to_string();
    let env = polling_env(
        port,
        tag,
        &json!([{"enabled": true}]),
        &[("CONTROL_THE_PAYLOAD_CONFIG_PATH", &path)],
    );
    let agent = if from_its_directory {
        let dir = volume.dir.display().to_string();
        AgentProcess::start_wrapped(&["env", "-C", &dir], &testkit::agent::agent_binary(), &env, tag)
    } else {
        AgentProcess::start(&env, tag)
    };
    wait_until(Duration::from_secs(30), "the mapping watcher", &agent, || {
        let log = agent.log_text();
        log.contains("watching the mapping file's directory") || log.contains("cannot watch the mapping file")
    });
    agent
}

/// Wait until `n` lines of the agent's log contain `needle`.
fn wait_for_lines(agent: &AgentProcess, needle: &str, n: usize) {
    wait_until(
        Duration::from_secs(10),
        &format!("{n} × {needle:?}"),
        agent,
        || agent.log_text().lines().filter(|l| l.contains(needle)).count() >= n,
    );
}

/// The reloader's log lines: level, message, and the fields that say what
/// each reload did.
fn reload_log(agent: &AgentProcess) -> Vec<String> {
    agent
        .log_text()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["target"] == "port_agent::mapping::reload")
        .map(|l| {
            let mut line = format!(
                "{} {}",
                l["level"].as_str().unwrap_or_default(),
                l["message"].as_str().unwrap_or_default()
            );
            for field in ["trigger", "sha256", "mapping", "keys"] {
                if !l[field].is_null() {
                    line += &format!(" {field}={}", l[field]);
                }
            }
            line
        })
        .collect()
}

/// A mapping path with no directory part (`CONTROL_THE_PAYLOAD_CONFIG_PATH`
/// the bare file name, the agent started in the file's directory): the
/// working directory is watched and a change of the file is reloaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mapping_path_without_a_directory_is_reloaded_when_the_file_changes() {
    let port = FakePort::start().await;
    let mut volume = ConfigMapDir::new("reload-bare", &mapping("http://old.invalid/", "old"));
    let agent = start_reloading(&port, &volume, "reload-bare", true);
    volume.update(&mapping("http://new.invalid/", "new"));
    let sha = sha256_of(&volume.file());
    wait_until(
        Duration::from_secs(10),
        "the file change reloaded",
        &agent,
        || {
            agent
                .log_text()
                .lines()
                .any(|l| l.contains("mappings reloaded") && l.contains(&sha))
        },
    );
    stop(agent);
}

/// The log says what each reload did, and only that: a SIGHUP is
/// acknowledged, a SIGHUP on the version in force says "mappings
/// unchanged" (a refused or swapped one does not), and a reloaded version
/// warns about the keys it ignores, naming the mapping that has them (and
/// no other).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_says_what_each_reload_did() {
    let port = FakePort::start().await;
    let mut volume = ConfigMapDir::new("reload-log", &mapping("http://old.invalid/", "old"));
    let agent = start_reloading(&port, &volume, "reload-log", false);
    let refused = "mapping reload refused";

    // Seen by the watcher; once it is refused, the reload loop (and its
    // SIGHUP handler) runs.
    volume.update(r#"[{"enabled": true, "body": {"ref": ".a |"}}]"#);
    wait_for_lines(&agent, refused, 1);
    agent.signal("-HUP");
    wait_for_lines(&agent, refused, 2);

    let ignored_key = json!([
        {"enabled": true, "url": "\"http://new.invalid/\""},
        {"enabled": true, "url": "\"http://new.invalid/\"", "bdy": {"a": "1"}},
    ]);
    volume.update(&ignored_key.to_string());
    let sha = sha256_of(&volume.file());
    wait_for_lines(&agent, "mappings reloaded", 1);
    agent.signal("-HUP");
    wait_for_lines(&agent, "mappings unchanged", 1);

    let refusal = |trigger: &str| format!("ERROR {refused}: the mappings in force stay trigger={trigger:?}");
    assert_eq!(
        reload_log(&agent),
        [
            "INFO watching the mapping file's directory for changes".to_string(),
            refusal("file change"),
            "INFO SIGHUP: reloading the mappings".to_string(),
            refusal("SIGHUP"),
            r#"WARN unknown mapping keys are ignored mapping=1 keys="[\"bdy\"]""#.to_string(),
            format!(
                "INFO mappings reloaded: the new version is in force for the next message trigger=\"file change\" sha256={sha:?}"
            ),
            "INFO SIGHUP: reloading the mappings".to_string(),
            format!("INFO mappings unchanged sha256={sha:?}"),
        ]
    );
    stop(agent);
}
