//! The built binary run as a command (`check`, `render`, `dry-run`) from the
//! repository root, and the files such a run reads.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Longest a command may run: a hung one is killed and fails its test.
const COMMAND_LIMIT: Duration = Duration::from_secs(180);

/// The repository root (where `tests/fixtures` and `examples` are).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Run `port-agent ARGS…` in the repository root with only `env`; its
/// output. A command still running after [`COMMAND_LIMIT`] is killed and
/// the test fails, saying so.
pub fn run_cli(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_port-agent"))
        .args(args)
        .current_dir(root())
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run port-agent");
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for port-agent") {
            break status;
        }
        if started.elapsed() > COMMAND_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("port-agent {args:?} still ran after {COMMAND_LIMIT:?}: killed");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

/// Its standard output.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Its standard output, then its standard error.
pub fn all_output(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Write `text` to a temporary file named after the test module and `name`.
pub fn temp_file(module: &str, name: &str, text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("port-agent-{module}-{}-{name}", std::process::id()));
    std::fs::write(&path, text).expect("write temp file");
    path
}

/// A path as a command-line argument.
pub fn arg(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// `port-agent dry-run --format json` over the recorded topic `input` with
/// the mapping file `mapping` (and `extra` arguments); it must succeed. Its
/// output objects, one per line, and the run itself (for its stderr).
pub fn dry_run_json(
    input: &Path,
    mapping: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> (Vec<Value>, Output) {
    let mut args = vec![
        "dry-run",
        "--input",
        arg(input),
        "--mapping",
        arg(mapping),
        "--format",
        "json",
    ];
    args.extend_from_slice(extra);
    let o = run_cli(&args, env);
    assert_eq!(o.status.code(), Some(0), "{}", all_output(&o));
    let objects = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    (objects, o)
}
