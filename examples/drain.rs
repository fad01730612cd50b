//! Drain measurement: N signed async runs queued in tansu, then the release
//! `port-agent` binary started as its own process against the fake Port API
//! and target; prints runs/s over the drain and the agent's peak RSS.
//!
//!     cargo build --release && cargo run --release --example drain -- 10000
//!
//! Needs `tansu` on PATH (scripts/test.sh installs it).

use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use testkit::agent::{agent_env, AgentProcess};
use testkit::fakes::{FakePort, FakeTarget};
use testkit::message::{action_run, signed, SECRET};
use testkit::tansu::Tansu;

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    let tansu = Tansu::start();
    tansu.create_topic("org_1.runs", 3).await;
    tansu.create_topic("org_1.change.log", 1).await;
    let (port, target) = (FakePort::start().await, FakeTarget::start().await);
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &tansu.bootstrap)
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let url = target.url("/run");
    let mut pending = Vec::new();
    for i in 0..n {
        let msg = signed(action_run(&format!("r_{i:06}"), &url, "POST", false), SECRET, 1).to_string();
        let p = producer.clone();
        pending.push(tokio::spawn(async move {
            let rec = FutureRecord::<(), _>::to("org_1.runs")
                .partition((i % 3) as i32)
                .payload(&msg);
            p.send(rec, Duration::from_secs(60))
                .await
                .map(|_| ())
                .map_err(|(e, _)| e)
        }));
    }
    for p in pending {
        p.await.unwrap().unwrap();
    }
    let mapping = std::env::temp_dir().join("drain-mapping.json");
    std::fs::write(&mapping, r#"[{"enabled": true}]"#).unwrap();
    let bin = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("port-agent");
    let env = agent_env(&tansu.bootstrap, &port.base(), &mapping, "org_1.bench", &[]);
    let started = Instant::now();
    let mut agent = AgentProcess::start_binary(&bin, &env, "drain");
    let pid = agent.child.id();
    let mut first: Option<Instant> = None;
    let mut peak = 0;
    loop {
        let done = target.requests().len();
        if done > 0 && first.is_none() {
            first = Some(Instant::now());
        }
        peak = peak.max(peak_rss_kib(pid).unwrap_or(0));
        if done >= n {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "drain did not finish: {done}/{n}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let drain = first.map(|f| f.elapsed()).unwrap_or_default();
    let ticks = cpu_ticks(pid).unwrap_or(0);
    agent.signal("-TERM");
    let code = agent.wait(Duration::from_secs(60));
    let hz = 100.0;
    println!("runs: {n}");
    println!(
        "drain (first to last target request): {:.3} s",
        drain.as_secs_f64()
    );
    println!("runs/s: {:.0}", n as f64 / drain.as_secs_f64());
    println!("start to drained: {:.3} s", started.elapsed().as_secs_f64());
    println!(
        "agent CPU: {:.0} µs per run (user+sys, {} ticks)",
        ticks as f64 / hz * 1e6 / n as f64,
        ticks
    );
    println!("agent peak RSS: {:.1} MiB", peak as f64 / 1024.0);
    println!("Port API calls: {}", port.all_calls().len());
    println!("exit code: {code:?}");
}
