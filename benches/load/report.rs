//! Results: one [`Sample`] per repeat, medians, targets, the printed tables
//! and the JSON file.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

/// One repeat of one scenario.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Sample {
    pub ok: bool,
    pub error: Option<String>,
    /// Named measurements (units in the name: `_s`, `_ms`, `_us_per_run`,
    /// `_mib`, `_pct` = % of one core).
    pub metrics: BTreeMap<String, f64>,
    pub notes: Vec<String>,
}

impl Sample {
    pub fn set(&mut self, key: impl Into<String>, value: f64) {
        if value.is_finite() {
            self.metrics.insert(key.into(), value);
        }
    }

    pub fn failed(error: String) -> Sample {
        Sample {
            ok: false,
            error: Some(error),
            ..Sample::default()
        }
    }
}

/// Direction of a target.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    AtLeast,
    AtMost,
}

/// A goal from the issue, on the median of a metric.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub metric: String,
    pub op: Op,
    pub limit: f64,
    pub label: String,
    /// An aim rather than a hard target.
    pub aim: bool,
}

impl Target {
    pub fn at_least(metric: &str, limit: f64, label: &str) -> Target {
        Target {
            metric: metric.into(),
            op: Op::AtLeast,
            limit,
            label: label.into(),
            aim: false,
        }
    }

    pub fn at_most(metric: &str, limit: f64, label: &str) -> Target {
        Target {
            metric: metric.into(),
            op: Op::AtMost,
            limit,
            label: label.into(),
            aim: false,
        }
    }

    pub fn aim(mut self) -> Target {
        self.aim = true;
        self
    }
}

/// A target against the achieved median.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    #[serde(flatten)]
    pub target: Target,
    pub achieved: Option<f64>,
    /// achieved / limit for "at least", limit / achieved for "at most":
    /// 1.0 or more meets the target.
    pub score: Option<f64>,
    pub pass: Option<bool>,
}

/// All repeats of one scenario.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    pub id: String,
    pub title: String,
    pub params: serde_json::Value,
    pub samples: Vec<Sample>,
    /// Median over the successful repeats, per metric.
    pub median: BTreeMap<String, f64>,
    pub verdicts: Vec<Verdict>,
}

pub fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    Some(if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    })
}

impl ScenarioResult {
    pub fn new(
        id: &str,
        title: &str,
        params: serde_json::Value,
        samples: Vec<Sample>,
        targets: Vec<Target>,
    ) -> Self {
        let mut by_key: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for s in samples.iter().filter(|s| s.ok) {
            for (k, v) in &s.metrics {
                by_key.entry(k.clone()).or_default().push(*v);
            }
        }
        let median: BTreeMap<String, f64> = by_key
            .into_iter()
            .filter_map(|(k, mut v)| median(&mut v).map(|m| (k, m)))
            .collect();
        let verdicts = targets
            .into_iter()
            .map(|t| {
                let achieved = median.get(&t.metric).copied();
                let score = achieved.map(|a| match t.op {
                    Op::AtLeast => a / t.limit,
                    Op::AtMost if a > 0.0 => t.limit / a,
                    Op::AtMost => f64::INFINITY,
                });
                let pass = achieved.map(|a| match t.op {
                    Op::AtLeast => a >= t.limit,
                    Op::AtMost => a <= t.limit,
                });
                Verdict {
                    target: t,
                    achieved,
                    score,
                    pass,
                }
            })
            .collect();
        ScenarioResult {
            id: id.into(),
            title: title.into(),
            params,
            samples,
            median,
            verdicts,
        }
    }

    fn get(&self, key: &str) -> Option<f64> {
        self.median.get(key).copied()
    }

    pub fn ok_count(&self) -> usize {
        self.samples.iter().filter(|s| s.ok).count()
    }
}

/// `12345.6` → `12,346`; small values keep decimals.
pub fn num(v: f64) -> String {
    if !v.is_finite() {
        return "∞".into();
    }
    if v.abs() >= 1000.0 {
        let s = format!("{:.0}", v.abs());
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        if v < 0.0 {
            out.insert(0, '-');
        }
        out
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn opt(v: Option<f64>) -> String {
    v.map(num).unwrap_or_else(|| "-".into())
}

fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([header[i].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<String>| {
        let mut s = String::from("|");
        for (i, c) in cells.iter().enumerate() {
            let pad = widths[i] - c.chars().count();
            // Text left, numbers right.
            if i == 0 || c.chars().next().is_some_and(|ch| ch.is_alphabetic()) {
                let _ = write!(s, " {c}{} |", " ".repeat(pad));
            } else {
                let _ = write!(s, " {}{c} |", " ".repeat(pad));
            }
        }
        s
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    out.push('\n');
    out.push('|');
    for w in &widths {
        let _ = write!(out, "{}|", "-".repeat(w + 2));
    }
    for r in rows {
        out.push('\n');
        out.push_str(&line(r.clone()));
    }
    out
}

/// The measurements table (medians of the successful repeats).
pub fn measurements(results: &[ScenarioResult]) -> String {
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|r| {
            let peak = r
                .median
                .iter()
                .filter(|(k, _)| k.starts_with("agent_peak_rss_mib"))
                .map(|(_, v)| *v)
                .fold(None, |a: Option<f64>, v| Some(a.map_or(v, |a| a.max(v))));
            vec![
                r.id.clone(),
                format!("{}/{}", r.ok_count(), r.samples.len()),
                opt(r.get("runs_per_s")),
                opt(r.get("latency_p50_ms")),
                opt(r.get("latency_p99_ms")),
                opt(r.get("status_latency_p50_ms")),
                opt(r.get("status_latency_p99_ms")),
                opt(r.get("agent_cpu_pct")),
                opt(r.get("agent_cpu_us_per_run")),
                opt(r.get("ref_cpu_us_per_run")),
                opt(r.get("cpu_ratio_vs_ref")),
                opt(peak),
                opt(r.get("fakes_cpu_pct")),
                opt(r.get("broker_cpu_pct")),
                opt(r.get("harness_cpu_pct")),
                opt(r.get("other_cpu_pct")),
                extra(r),
            ]
        })
        .collect();
    table(
        &[
            "scenario",
            "ok",
            "runs/s",
            "p50 ms",
            "p99 ms",
            "status p50 ms",
            "status p99 ms",
            "agent CPU%",
            "agent µs/run",
            "ref µs/run",
            "agent/ref",
            "peak RSS MiB",
            "fakes CPU%",
            "broker CPU%",
            "harness CPU%",
            "other CPU%",
            "notes",
        ],
        &rows,
    )
}

fn extra(r: &ScenarioResult) -> String {
    let mut parts = Vec::new();
    if let Some(v) = r.get("start_to_ready_ms") {
        parts.push(format!("ready {} ms", num(v)));
    }
    if let Some(v) = r.get("group_join_ms") {
        parts.push(format!("join {} ms (excluded)", num(v)));
    }
    if let Some(v) = r.get("ref_runs_per_s") {
        parts.push(format!("ref {} runs/s", num(v)));
    }
    let bare: Vec<String> = r
        .median
        .iter()
        .filter_map(|(k, v)| {
            let ms = k
                .strip_prefix("bare_consumer_msgs_per_s_backoff_")?
                .strip_suffix("ms")?;
            Some((ms.parse::<u64>().ok()?, *v))
        })
        .collect::<BTreeMap<u64, f64>>()
        .into_iter()
        .rev()
        .map(|(ms, v)| format!("{} msg/s at backoff {ms} ms", num(v)))
        .collect();
    if !bare.is_empty() {
        parts.push(format!("bare consumer {}", bare.join(", ")));
    }
    if let (Some(p50), Some(p99)) = (r.get("target_to_status_p50_ms"), r.get("target_to_status_p99_ms")) {
        parts.push(format!("target→status p50 {} / p99 {} ms", num(p50), num(p99)));
    }
    let backlogs: Vec<String> = r
        .median
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("agent_peak_rss_mib_")
                .map(|b| format!("{b}: {} MiB", num(*v)))
        })
        .collect();
    if !backlogs.is_empty() {
        parts.push(format!("peak by backlog {}", backlogs.join(", ")));
    }
    if let (Some(p50), Some(p99)) = (r.get("broker_latency_p50_ms"), r.get("broker_latency_p99_ms")) {
        parts.push(format!("broker alone p50 {} / p99 {} ms", num(p50), num(p99)));
    }
    if let Some(p99) = r.get("broker_fetch_wait_10ms_latency_p99_ms") {
        parts.push(format!("with fetch.wait.max.ms=10 p99 {} ms", num(p99)));
    }
    if let Some(p99) = r.get("produce_ack_p99_ms") {
        parts.push(format!("produce ack p99 {} ms", num(p99)));
    }
    if let (Some(p50), Some(p99)) = (
        r.get("readable_to_target_p50_ms"),
        r.get("readable_to_target_p99_ms"),
    ) {
        parts.push(format!("readable→target p50 {} / p99 {} ms", num(p50), num(p99)));
    }
    if let Some(v) = r.get("produce_rate_per_s") {
        parts.push(format!("produced {}/s", num(v)));
    }
    for s in r.samples.iter().filter(|s| !s.ok) {
        let e = s.error.as_deref().unwrap_or("failed");
        parts.push(format!("FAILED: {}", e.lines().next().unwrap_or(e)));
    }
    parts.join("; ")
}

/// The targets table.
pub fn verdicts(results: &[ScenarioResult]) -> String {
    let mut rows = Vec::new();
    for r in results {
        for v in &r.verdicts {
            let op = match v.target.op {
                Op::AtLeast => "≥",
                Op::AtMost => "≤",
            };
            rows.push(vec![
                r.id.clone(),
                format!("{}{}", v.target.label, if v.target.aim { " (aim)" } else { "" }),
                format!("{op} {}", num(v.target.limit)),
                opt(v.achieved),
                v.score.map(|s| format!("{s:.2}×")).unwrap_or_else(|| "-".into()),
                match v.pass {
                    Some(true) => "met".into(),
                    Some(false) => "MISSED".into(),
                    None => "no data".into(),
                },
            ]);
        }
    }
    table(
        &["scenario", "target", "limit", "achieved", "score", "result"],
        &rows,
    )
}
