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

/// [`run_cli`], and the command's peak resident set size in KiB (its
/// `ru_maxrss`, read by `wait4` as it is reaped).
pub fn run_cli_measured(args: &[&str], env: &[(&str, &str)]) -> (Output, u64) {
    use std::io::Read;
    // Reaped by wait4 below (std's wait would not give the rusage).
    #[allow(clippy::zombie_processes)]
    let mut child = Command::new(env!("CARGO_BIN_EXE_port-agent"))
        .args(args)
        .current_dir(root())
        .env_clear()
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run port-agent");
    // Read both pipes on threads so that a full pipe cannot stall the child.
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut v = Vec::new();
        out.read_to_end(&mut v).map(|_| v)
    });
    let err = std::thread::spawn(move || {
        let mut v = Vec::new();
        err.read_to_end(&mut v).map(|_| v)
    });
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid value for wait4 to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our unreaped child; both pointers are valid for the call.
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(reaped, pid, "wait4 on port-agent");
    let code = if libc::WIFEXITED(status) {
        Some(libc::WEXITSTATUS(status))
    } else {
        None
    };
    let signal = libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status));
    let output = Output {
        status: std::os::unix::process::ExitStatusExt::from_raw(status),
        stdout: out.join().expect("stdout reader").expect("read stdout"),
        stderr: err.join().expect("stderr reader").expect("read stderr"),
    };
    assert!(
        code.is_some(),
        "port-agent ended by signal {signal:?}: {}",
        all_output(&output)
    );
    (output, usage.ru_maxrss as u64)
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
