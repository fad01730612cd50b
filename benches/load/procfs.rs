//! CPU time and memory of a process, from `/proc` (Linux).

use std::sync::OnceLock;

/// Clock ticks per second of `/proc/*/stat` times (`getconf CLK_TCK`, 100
/// on every Linux we know of).
pub fn clock_ticks_per_s() -> f64 {
    static HZ: OnceLock<f64> = OnceLock::new();
    *HZ.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// User + system CPU seconds of `pid` (`"self"` for this process), all
/// threads, including exited ones.
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / clock_ticks_per_s())
}

/// CPU seconds of a child by id.
pub fn cpu_of(pid: u32) -> Option<f64> {
    cpu_seconds(&pid.to_string())
}

/// This process's CPU seconds.
pub fn own_cpu() -> f64 {
    cpu_seconds("self").unwrap_or(0.0)
}

/// CPU seconds the whole machine spent busy (all cores, `/proc/stat`), to
/// tell how much of a window went to processes outside the benchmark.
pub fn machine_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0.0;
    };
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is in user).
    let busy: u64 = f
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum();
    busy as f64 / clock_ticks_per_s()
}

fn status_kib(pid: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Peak resident set size (`VmHWM`) in KiB.
pub fn peak_rss_kib(pid: &str) -> Option<u64> {
    status_kib(pid, "VmHWM:")
}

/// Current resident set size (`VmRSS`) in KiB.
pub fn rss_kib(pid: &str) -> Option<u64> {
    status_kib(pid, "VmRSS:")
}

/// CPU and peak memory of a process at the end of its work, as a child
/// reports them about itself.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct SelfReport {
    /// User + system CPU seconds.
    pub cpu_s: f64,
    /// Peak RSS in KiB.
    pub peak_rss_kib: u64,
}

impl SelfReport {
    /// This process, now.
    pub fn now() -> SelfReport {
        SelfReport {
            cpu_s: own_cpu(),
            peak_rss_kib: peak_rss_kib("self").unwrap_or(0),
        }
    }
}
