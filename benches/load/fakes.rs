//! The fake Port API and target, run in a process of their own
//! (`load serve-fakes`) so that their CPU is not the agent's nor the
//! harness's. They keep counters only (no per-request recording), so they stay
//! cheap next to the agent:
//!
//! * Port API (every path, after `--port-latency-ms`): a token for
//!   `POST /v1/auth/access_token`, `{"ok":true}` otherwise; counts calls by
//!   endpoint. With `record_latency`, the status PATCH of a run
//!   (`PATCH /v1/actions/runs/{id}`) records produce→status and
//!   target→status latencies (from the run's target arrival).
//! * When a run is *done*: when the fakes have seen its last expected call,
//!   whatever their order. `/reset` gives the number of calls a run makes
//!   (`expected_calls`, from the run kind and the agent's `AGENT_RUN_LOGS`,
//!   see `Session::expected_calls`): its target call, plus its run log
//!   lines (5 with `all`, 7 for a synchronized run, whose answer has a
//!   body; 1 with `minimal`, 0 with `off`), plus for a
//!   synchronized run `PATCH …/response` and the status PATCH. Each of these
//!   counts once for the run (by its `r<index>` id, not by text or order);
//!   the run is done when its count reaches `expected_calls`. So an async
//!   run with run logs off is done when the target is called, and the
//!   signal does not depend on which call comes last.
//! * Target (every path): records the arrival (first, last, which run, and the
//!   produce→arrival latency from `"producedAtNs"` in the body), waits
//!   `--target-latency-ms`, answers `200 {"ok":true,…}`.
//! * Control: `GET /stats` (JSON [`Stats`]), `POST /reset` (`{"n", "record_latency", "expected_calls"}`),
//!   `GET /arrivals` (first target arrival of each run, Unix ns, 0 = none;
//!   recorded with `record_latency`).
//!
//! Run ids are `r<decimal index>`, so "every run delivered and reported" is
//! checked per run (bitsets), not just by counts.
//! The process exits when its standard input closes (the harness died).

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context, Result};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::procfs;

/// Unix time in nanoseconds (comparable across processes on one machine).
pub fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// The run log lines the agent posts for a delivered asynchronous action
/// run with `AGENT_RUN_LOGS=all`: received, preparing the payload, sending
/// the request, the invocation's result, finished processing (the
/// reference client posts the same); a synchronous one with a body gets two
/// more, about its response.
pub const RUN_LOG_LINES: u8 = 5;

// ------------------------------------------------------------- child side

/// Options of `load serve-fakes`.
#[derive(Debug, Clone, clap::Args)]
pub struct FakesArgs {
    /// Delay of every Port API answer.
    #[arg(long, default_value_t = 0)]
    pub port_latency_ms: u64,
    /// Delay of every target answer.
    #[arg(long, default_value_t = 0)]
    pub target_latency_ms: u64,
    /// Runtime worker threads.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
}

/// A set of run indices, each counted once.
struct RunSet {
    bits: Vec<AtomicU64>,
    unique: AtomicU64,
    total: AtomicU64,
}

impl RunSet {
    fn new(n: usize) -> RunSet {
        RunSet {
            bits: (0..n.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
            unique: AtomicU64::new(0),
            total: AtomicU64::new(0),
        }
    }

    fn mark(&self, index: Option<usize>) {
        self.total.fetch_add(1, Ordering::Relaxed);
        let Some(i) = index else { return };
        let Some(word) = self.bits.get(i / 64) else { return };
        let bit = 1u64 << (i % 64);
        if word.fetch_or(bit, Ordering::Relaxed) & bit == 0 {
            self.unique.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Counters of one measurement (replaced by `/reset`).
struct Run {
    n: usize,
    record_latency: bool,
    delivered: RunSet,
    done: RunSet,
    tokens: AtomicU64,
    organization: AtomicU64,
    logs: AtomicU64,
    responses: AtomicU64,
    patches: AtomicU64,
    failures: AtomicU64,
    other: AtomicU64,
    first_target_ns: AtomicU64,
    last_target_ns: AtomicU64,
    last_done_ns: AtomicU64,
    latencies_us: Mutex<Vec<u32>>,
    arrivals_ns: Vec<AtomicU64>,
    /// Produce time (Unix ns, from the target's body), by run index.
    produced_ns: Vec<AtomicU64>,
    /// Produce→status PATCH, µs.
    status_latencies_us: Mutex<Vec<u32>>,
    /// Target arrival→status PATCH, µs.
    target_to_status_us: Mutex<Vec<u32>>,
    /// Calls a run makes (see the module's doc).
    expected_calls: u8,
    /// Calls seen, by run index.
    calls: Vec<AtomicU8>,
}

impl Run {
    fn new(n: usize, record_latency: bool, expected_calls: u8) -> Run {
        let per_run = |on: bool| (0..if on { n } else { 0 }).map(|_| AtomicU64::new(0)).collect();
        Run {
            n,
            record_latency,
            delivered: RunSet::new(n),
            done: RunSet::new(n),
            tokens: AtomicU64::new(0),
            organization: AtomicU64::new(0),
            logs: AtomicU64::new(0),
            responses: AtomicU64::new(0),
            patches: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            other: AtomicU64::new(0),
            first_target_ns: AtomicU64::new(0),
            last_target_ns: AtomicU64::new(0),
            last_done_ns: AtomicU64::new(0),
            latencies_us: Mutex::new(Vec::with_capacity(if record_latency { n } else { 0 })),
            arrivals_ns: per_run(record_latency),
            produced_ns: per_run(record_latency),
            status_latencies_us: Mutex::new(Vec::new()),
            target_to_status_us: Mutex::new(Vec::new()),
            expected_calls: expected_calls.max(1),
            calls: (0..n).map(|_| AtomicU8::new(0)).collect(),
        }
    }

    /// Count a call of run `index`; the run is done when it was its last
    /// expected one.
    fn count_call(&self, index: Option<usize>) {
        let Some(count) = index.and_then(|i| self.calls.get(i)) else {
            return;
        };
        if count.fetch_add(1, Ordering::Relaxed).saturating_add(1) == self.expected_calls {
            self.done.mark(index);
            self.last_done_ns.fetch_max(unix_ns(), Ordering::Relaxed);
        }
    }

    /// The status PATCH of run `index` arrived at `now`.
    fn status_reported(&self, index: Option<usize>, now: u64) {
        let Some(i) = index else { return };
        let since = |slot: Option<&AtomicU64>| {
            let t = slot.map_or(0, |a| a.load(Ordering::Relaxed));
            (t > 0).then(|| (now.saturating_sub(t) / 1000).min(u32::MAX as u64) as u32)
        };
        if let Some(us) = since(self.produced_ns.get(i)) {
            lock(&self.status_latencies_us).push(us);
        }
        if let Some(us) = since(self.arrivals_ns.get(i)) {
            lock(&self.target_to_status_us).push(us);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct Shared {
    run: RwLock<Arc<Run>>,
    port_latency: Duration,
    target_latency: Duration,
}

impl Shared {
    fn run(&self) -> Arc<Run> {
        self.run.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Latency {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

/// What `/stats` answers.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Stats {
    pub n: u64,
    pub target_total: u64,
    pub target_unique: u64,
    pub done_total: u64,
    pub done_unique: u64,
    pub tokens: u64,
    pub organization: u64,
    pub logs: u64,
    pub responses: u64,
    pub patches: u64,
    /// Status PATCHes reporting FAILURE (the target always answers 200: a
    /// non-zero value means the agent failed requests).
    pub failures: u64,
    pub other: u64,
    pub first_target_ns: u64,
    pub last_target_ns: u64,
    pub last_done_ns: u64,
    /// Produce→target arrival (with `record_latency`).
    pub latency: Option<Latency>,
    /// Produce→status PATCH (with `record_latency`, synchronized runs).
    pub status_latency: Option<Latency>,
    /// Target arrival→status PATCH (with `record_latency`, synchronized runs).
    pub target_to_status: Option<Latency>,
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The decimal number right after `key` in `body`.
pub fn number_after(body: &[u8], key: &[u8]) -> Option<u64> {
    let start = find(body, key)? + key.len();
    let digits = body[start..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&body[start..start + digits])
        .ok()?
        .parse()
        .ok()
}

/// `r123` → 123.
fn run_index(id: &str) -> Option<usize> {
    id.strip_prefix('r')?.parse().ok()
}

fn json_ok(body: &'static str) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn port_api(State(s): State<Arc<Shared>>, method: Method, uri: Uri, body: Bytes) -> Response {
    if !s.port_latency.is_zero() {
        tokio::time::sleep(s.port_latency).await;
    }
    let run = s.run();
    let path = uri.path();
    if path == "/v1/auth/access_token" {
        run.tokens.fetch_add(1, Ordering::Relaxed);
        return json_ok(r#"{"accessToken":"bench-token","expiresIn":3600,"tokenType":"Bearer"}"#);
    }
    if path == "/v1/organization" {
        run.organization.fetch_add(1, Ordering::Relaxed);
        return json_ok(r#"{"ok":true}"#);
    }
    let rest = path.strip_prefix("/v1/actions/runs/").unwrap_or("");
    let mut parts = rest.split('/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(id), Some("logs"), None) if !id.is_empty() => {
            run.logs.fetch_add(1, Ordering::Relaxed);
            run.count_call(run_index(id));
        }
        (Some(id), Some("response"), None) if !id.is_empty() => {
            run.responses.fetch_add(1, Ordering::Relaxed);
            run.count_call(run_index(id));
        }
        (Some(id), None, None) if !id.is_empty() && method == Method::PATCH => {
            run.patches.fetch_add(1, Ordering::Relaxed);
            if find(&body, b"FAILURE").is_some() {
                run.failures.fetch_add(1, Ordering::Relaxed);
            }
            run.status_reported(run_index(id), unix_ns());
            run.count_call(run_index(id));
        }
        _ => {
            run.other.fetch_add(1, Ordering::Relaxed);
        }
    }
    json_ok(r#"{"ok":true}"#)
}

async fn target(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    let now = unix_ns();
    let run = s.run();
    let _ = run
        .first_target_ns
        .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
    run.last_target_ns.fetch_max(now, Ordering::Relaxed);
    let index = number_after(&body, br#""runId":"r"#).map(|i| i as usize);
    run.delivered.mark(index);
    if run.record_latency {
        if let Some(slot) = index.and_then(|i| run.arrivals_ns.get(i)) {
            let _ = slot.compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
        }
        if let Some(produced) = number_after(&body, br#""producedAtNs":"#) {
            if let Some(slot) = index.and_then(|i| run.produced_ns.get(i)) {
                slot.store(produced, Ordering::Relaxed);
            }
            let us = now.saturating_sub(produced) / 1000;
            lock(&run.latencies_us).push(us.min(u32::MAX as u64) as u32);
        }
    }
    run.count_call(index);
    drop(run);
    if !s.target_latency.is_zero() {
        tokio::time::sleep(s.target_latency).await;
    }
    json_ok(r#"{"ok":true,"id":"ext-1"}"#)
}

pub fn percentile(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64 / 1000.0
}

/// Percentiles of latencies in µs.
fn latency_of(list: &Mutex<Vec<u32>>) -> Latency {
    let mut v = lock(list).clone();
    v.sort_unstable();
    Latency {
        count: v.len() as u64,
        p50_ms: percentile(&v, 0.50),
        p90_ms: percentile(&v, 0.90),
        p99_ms: percentile(&v, 0.99),
        max_ms: percentile(&v, 1.0),
        mean_ms: if v.is_empty() {
            0.0
        } else {
            v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64 / 1000.0
        },
    }
}

async fn stats(State(s): State<Arc<Shared>>) -> Json<Stats> {
    let run = s.run();
    let latency = run.record_latency.then(|| latency_of(&run.latencies_us));
    let status_latency = run.record_latency.then(|| latency_of(&run.status_latencies_us));
    let target_to_status = run.record_latency.then(|| latency_of(&run.target_to_status_us));
    let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
    Json(Stats {
        n: run.n as u64,
        target_total: g(&run.delivered.total),
        target_unique: g(&run.delivered.unique),
        done_total: g(&run.done.total),
        done_unique: g(&run.done.unique),
        tokens: g(&run.tokens),
        organization: g(&run.organization),
        logs: g(&run.logs),
        responses: g(&run.responses),
        patches: g(&run.patches),
        failures: g(&run.failures),
        other: g(&run.other),
        first_target_ns: g(&run.first_target_ns),
        last_target_ns: g(&run.last_target_ns),
        last_done_ns: g(&run.last_done_ns),
        latency,
        status_latency,
        target_to_status,
    })
}

async fn arrivals(State(s): State<Arc<Shared>>) -> Json<Vec<u64>> {
    let run = s.run();
    Json(
        run.arrivals_ns
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .collect(),
    )
}

#[derive(Debug, Serialize, Deserialize)]
struct ResetBody {
    n: usize,
    record_latency: bool,
    expected_calls: u8,
}

async fn reset(State(s): State<Arc<Shared>>, Json(body): Json<ResetBody>) -> StatusCode {
    *s.run.write().unwrap_or_else(|e| e.into_inner()) =
        Arc::new(Run::new(body.n, body.record_latency, body.expected_calls));
    StatusCode::NO_CONTENT
}

/// The three listening ports, printed as one JSON line when the fakes are up.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Ports {
    pub port_api: u16,
    pub target: u16,
    pub control: u16,
}

/// Exit when standard input closes: the harness is gone.
pub fn exit_with_parent() {
    std::thread::spawn(|| {
        let mut sink = [0u8; 64];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
        std::process::exit(0);
    });
}

/// `load serve-fakes`: serve until standard input closes.
pub fn serve(args: FakesArgs) -> Result<()> {
    exit_with_parent();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let shared = Arc::new(Shared {
            run: RwLock::new(Arc::new(Run::new(0, false, 1))),
            port_latency: Duration::from_millis(args.port_latency_ms),
            target_latency: Duration::from_millis(args.target_latency_ms),
        });
        let port_api = Router::new().fallback(port_api).with_state(shared.clone());
        let target = Router::new().fallback(target).with_state(shared.clone());
        let control = Router::new()
            .route("/stats", get(stats))
            .route("/reset", post(reset))
            .route("/arrivals", get(arrivals))
            .with_state(shared);
        let ports = Ports {
            port_api: spawn_server(port_api).await?.port(),
            target: spawn_server(target).await?.port(),
            control: spawn_server(control).await?.port(),
        };
        println!("{}", serde_json::to_string(&ports)?);
        std::future::pending::<()>().await;
        Ok(())
    })
}

async fn spawn_server(router: Router) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok(addr)
}

// ------------------------------------------------------------ parent side

/// The fakes process, killed on drop.
pub struct Fakes {
    child: Child,
    /// Held open: the child exits when it closes.
    _stdin: ChildStdin,
    pub ports: Ports,
    http: reqwest::Client,
}

impl Fakes {
    /// Start `serve-fakes` (this same executable) with the given latencies.
    pub fn start(port_latency_ms: u64, target_latency_ms: u64, log: &std::path::Path) -> Result<Fakes> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .args([
                "serve-fakes",
                "--port-latency-ms",
                &port_latency_ms.to_string(),
                "--target-latency-ms",
                &target_latency_ms.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(log)?))
            .spawn()
            .context("start the fakes process")?;
        let stdin = child.stdin.take().ok_or_else(|| anyhow!("no stdin"))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let ports: Ports = serde_json::from_str(line.trim()).with_context(|| {
            format!(
                "fakes did not report their ports (got {line:?}); see {}",
                log.display()
            )
        })?;
        let http = port_agent::http::build_client(&port_agent::http::ClientOptions {
            timeout: Duration::from_secs(30),
            verify_tls: true,
            ca_bundle: None,
            pool_idle_per_host: 2,
            proxies: Default::default(),
        })?;
        Ok(Fakes {
            child,
            _stdin: stdin,
            ports,
            http,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn port_base(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.port_api)
    }

    pub fn target_url(&self) -> String {
        format!("http://127.0.0.1:{}/deploy", self.ports.target)
    }

    fn control(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ports.control)
    }

    /// Start a new measurement of `n` runs, each done after
    /// `expected_calls` calls (see the module's doc).
    pub async fn reset(&self, n: usize, record_latency: bool, expected_calls: u8) -> Result<()> {
        let body = serde_json::to_vec(&ResetBody {
            n,
            record_latency,
            expected_calls,
        })?;
        let resp = self
            .http
            .post(self.control("/reset"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        anyhow::ensure!(resp.status().is_success(), "reset: {}", resp.status());
        Ok(())
    }

    pub async fn stats(&self) -> Result<Stats> {
        let bytes = self
            .http
            .get(self.control("/stats"))
            .send()
            .await?
            .bytes()
            .await?;
        Ok(serde_json::from_slice(&bytes)?)
    }

    /// Each run's first target arrival (Unix ns, 0 = none).
    pub async fn arrivals(&self) -> Result<Vec<u64>> {
        let bytes = self
            .http
            .get(self.control("/arrivals"))
            .send()
            .await?
            .bytes()
            .await?;
        Ok(serde_json::from_slice(&bytes)?)
    }

    pub fn cpu(&self) -> f64 {
        procfs::cpu_of(self.pid()).unwrap_or(0.0)
    }
}

impl Drop for Fakes {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
