//! The `port-agent` binary as a child process: its output in a log file,
//! killed on drop; the environment it runs with against tansu and the fakes.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The `port-agent` binary cargo built beside the running test or bench:
/// `CARGO_BIN_EXE_port-agent` when cargo sets it at run time, otherwise
/// `target/<profile>/port-agent` next to `target/<profile>/deps/<this executable>`.
pub fn agent_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("CARGO_BIN_EXE_port-agent") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("the path of the running test executable");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test executable lives in target/<profile>/deps");
    profile_dir.join("port-agent")
}

/// The agent as a child process (`… port-agent run`), with only `PATH` and
/// the given environment; stdout and stderr go to [`AgentProcess::log`].
/// Killed on drop.
pub struct AgentProcess {
    /// The process.
    pub child: Child,
    /// Its log file (stdout and stderr).
    pub log: PathBuf,
}

impl AgentProcess {
    /// Start the binary cargo built for this test ([`agent_binary`]),
    /// logging to a temporary file named after `tag`.
    pub fn start<K: AsRef<OsStr>, V: AsRef<OsStr>>(env: &[(K, V)], tag: &str) -> AgentProcess {
        Self::start_binary(&agent_binary(), env, tag)
    }

    /// Start a given `port-agent` binary.
    pub fn start_binary<K: AsRef<OsStr>, V: AsRef<OsStr>>(
        bin: &Path,
        env: &[(K, V)],
        tag: &str,
    ) -> AgentProcess {
        Self::start_wrapped(&[], bin, env, tag)
    }

    /// Start `wrapper… <bin> run`: the wrapper (e.g. `unshare`) runs the
    /// agent with `bin` and `run` as its last two arguments.
    pub fn start_wrapped<K: AsRef<OsStr>, V: AsRef<OsStr>>(
        wrapper: &[&str],
        bin: &Path,
        env: &[(K, V)],
        tag: &str,
    ) -> AgentProcess {
        let log = std::env::temp_dir().join(format!("port-agent-{tag}-{}.log", std::process::id()));
        Self::spawn(wrapper, bin, env, &log).expect("start port-agent")
    }

    /// Start `wrapper… <bin> run` logging to `log`; the error of the spawn
    /// (or of creating the log file).
    pub fn spawn<K: AsRef<OsStr>, V: AsRef<OsStr>>(
        wrapper: &[&str],
        bin: &Path,
        env: &[(K, V)],
        log: &Path,
    ) -> std::io::Result<AgentProcess> {
        let file = std::fs::File::create(log)?;
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        cmd.arg("run")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(file.try_clone()?))
            .stderr(Stdio::from(file))
            .spawn()?;
        Ok(AgentProcess {
            child,
            log: log.to_path_buf(),
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send `sig` (as `kill` takes it, e.g. `-TERM`); panics when `kill` fails.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(ok.success(), "kill {sig} failed");
    }

    /// Wait for the process to exit; its exit code. Panics with the log
    /// after `within`.
    pub fn wait(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            if Instant::now() > deadline {
                panic!(
                    "port-agent did not exit within {within:?}; log: {}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Its exit status if it has exited.
    pub fn exited(&mut self) -> std::io::Result<Option<ExitStatus>> {
        self.child.try_wait()
    }

    /// SIGTERM and wait up to `within`; the exit code (None: killed after
    /// `within`, or ended by a signal).
    pub fn stop(&mut self, within: Duration) -> Option<i32> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }

    /// Everything it has logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = self.log_text();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Environment for the agent in local mode against `bootstrap`, the fake
/// Port API at `port_base`, with `mapping`, plus `extra` settings.
pub fn agent_env(
    bootstrap: &str,
    port_base: &str,
    mapping: &std::path::Path,
    group: &str,
    extra: &[(&'static str, &str)],
) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("PORT_ORG_ID", "org_1".to_string()),
        ("PORT_CLIENT_ID", "client-id".to_string()),
        ("PORT_CLIENT_SECRET", crate::message::SECRET.to_string()),
        ("PORT_API_BASE_URL", port_base.to_string()),
        ("USING_LOCAL_PORT_INSTANCE", "true".to_string()),
        ("KAFKA_CONSUMER_BOOTSTRAP_SERVERS", bootstrap.to_string()),
        ("KAFKA_CONSUMER_GROUP_ID", group.to_string()),
        ("KAFKA_CONSUMER_SESSION_TIMEOUT_MS", "10000".to_string()),
        ("CONTROL_THE_PAYLOAD_CONFIG_PATH", mapping.display().to_string()),
        ("AGENT_HTTP_PORT", "0".to_string()),
        ("AGENT_LOG_FORMAT", "json".to_string()),
        ("LOG_LEVEL", "warn".to_string()),
    ];
    env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    env
}
