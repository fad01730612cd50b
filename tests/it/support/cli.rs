//! The built binary run as a command (`check`, `render`, `dry-run`) from the
//! repository root, and the files such a run reads.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root (where `tests/fixtures` and `examples` are).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Run `port-agent ARGS…` in the repository root with only `env`; its output.
pub fn run_cli(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_port-agent"))
        .args(args)
        .current_dir(root())
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("run port-agent")
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
