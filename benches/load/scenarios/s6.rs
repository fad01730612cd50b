//! S6: live traffic, messages produced at a steady rate while the agent
//! runs: produce→target latency, and what the broker alone adds. The same
//! live run ([`live`], with a [`LiveSpec`]) measures S8's produce→status.

use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use serde_json::json;

use super::{Description, Run, Scenario};
use crate::fakes::{self, Fakes};
use crate::infra;
use crate::messages;
use crate::report::{Sample, Target};
use crate::session::{record_stats, stop_agent, unix_s, wait_assigned, wait_for_runs, Cpu, Session};

/// The scenario.
pub struct Live;

impl Scenario for Live {
    fn describe(&self, s: &Session) -> Description {
        let o = &s.opts;
        Description {
            title: format!("live: {} runs/s produced for {} s", o.s6_rate, o.s6_seconds),
            params: json!({"rate": o.s6_rate, "seconds": o.s6_seconds}),
            targets: vec![Target::at_most("latency_p99_ms", 20.0, "p99 produce→target ms")],
        }
    }

    fn run<'a>(&'a self, s: &'a Session, tag: &'a str) -> Run<'a> {
        let spec = LiveSpec {
            rate: s.opts.s6_rate,
            seconds: s.opts.s6_seconds,
            synchronized: false,
            port_latency_ms: 0,
            baselines: true,
        };
        Box::pin(live(s, tag, spec))
    }
}

/// A live run: what is produced, how fast, and what is measured.
pub struct LiveSpec {
    /// Messages produced per second.
    pub rate: u64,
    /// Seconds of production.
    pub seconds: u64,
    /// Synchronized runs (`/response` and a status PATCH each; the fakes
    /// then record produce→status).
    pub synchronized: bool,
    /// Delay of every fake Port API answer.
    pub port_latency_ms: u64,
    /// Also run the two baseline consumers (what the broker alone adds).
    pub baselines: bool,
}

/// Steady production at `spec.rate`: produce→target latency, and for
/// synchronized runs produce→status.
pub async fn live(s: &Session, tag: &str, spec: LiveSpec) -> Result<Sample> {
    let dir = s.run_dir(tag)?;
    let deadline = s.deadline();
    let broker = s.start_broker(&dir)?;
    broker.create_topics().await?;
    let fakes = Fakes::start(spec.port_latency_ms, 0, &dir.join("fakes.log"))?;
    let runs = (spec.rate * spec.seconds) as usize;
    broker.check_capacity(runs)?;
    fakes
        .reset(runs, true, s.expected_calls(spec.synchronized))
        .await?;
    let mut agent = s.spawn_agent(&broker, &fakes, &dir, tag)?;
    wait_assigned(&mut agent, deadline).await?;
    // Let the consumer settle into its fetch loop.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let baselines = if spec.baselines {
        vec![
            (
                infra::BaselineConsumer::start(&broker, runs, None, deadline)?,
                "broker",
            ),
            (
                infra::BaselineConsumer::start(&broker, runs, Some(10), deadline)?,
                "broker_fetch_wait_10ms",
            ),
        ]
    } else {
        Vec::new()
    };
    let producer = broker.producer(false)?;
    let url = fakes.target_url();
    let interval = Duration::from_secs_f64(1.0 / spec.rate as f64);
    let start = Cpu::now(&agent, &fakes, &broker);
    let t0 = tokio::time::Instant::now();
    let mut pending = Vec::with_capacity(runs);
    for i in 0..runs {
        tokio::time::sleep_until(t0 + interval * i as u32).await;
        let bytes = messages::signed_bytes(
            messages::action_run(i, &url, spec.synchronized, Some(fakes::unix_ns())),
            unix_s(),
        );
        let record = rdkafka::producer::FutureRecord::<(), _>::to(infra::RUNS_TOPIC)
            .partition((i % infra::RUNS_PARTITIONS as usize) as i32)
            .payload(&bytes);
        let sent = Instant::now();
        let delivery = producer
            .send_result(record)
            .map_err(|(e, _)| anyhow!("produce: {e}"))?;
        // Time to the broker's acknowledgement.
        pending.push(tokio::spawn(async move {
            delivery
                .await
                .map_err(|_| anyhow!("delivery report lost"))?
                .map_err(|(e, _)| anyhow!("delivery failed: {e}"))?;
            anyhow::Ok(sent.elapsed().as_micros().min(u32::MAX as u128) as u32)
        }));
        if i % 1000 == 0 {
            agent.check_alive()?;
        }
    }
    let produced_in = t0.elapsed().as_secs_f64();
    let mut acks = Vec::with_capacity(runs);
    for p in pending {
        acks.push(p.await??);
    }
    acks.sort_unstable();
    let (stats, _, end) = wait_for_runs(runs, &mut agent, &fakes, &broker, deadline).await?;
    let mut sample = Sample::default();
    sample.set("produce_ack_p50_ms", fakes::percentile(&acks, 0.50));
    sample.set("produce_ack_p99_ms", fakes::percentile(&acks, 0.99));
    // What the broker alone adds, with the agent's fetch settings and with a
    // 10 ms fetch wait; and what the agent adds once a message can be read:
    // its target arrival minus the 10 ms-wait consumer's receipt.
    let mut readable = Vec::new();
    for (consumer, key) in baselines {
        let mut seen = tokio::task::spawn_blocking(move || consumer.join()).await??;
        seen.latencies_us.sort_unstable();
        let l = &seen.latencies_us;
        sample.set(format!("{key}_latency_p50_ms"), fakes::percentile(l, 0.50));
        sample.set(format!("{key}_latency_p99_ms"), fakes::percentile(l, 0.99));
        readable = seen.received_ns;
    }
    if spec.baselines {
        let arrivals = fakes.arrivals().await?;
        let mut added: Vec<u32> = arrivals
            .iter()
            .zip(&readable)
            .filter(|(a, r)| **a > 0 && **r > 0)
            .map(|(a, r)| (a.saturating_sub(*r) / 1000).min(u32::MAX as u64) as u32)
            .collect();
        added.sort_unstable();
        sample.set("readable_to_target_p50_ms", fakes::percentile(&added, 0.50));
        sample.set("readable_to_target_p99_ms", fakes::percentile(&added, 0.99));
    }
    sample.set("produce_rate_per_s", runs as f64 / produced_in);
    sample.set(
        "runs_per_s",
        runs as f64 / (stats.last_done_ns.saturating_sub(stats.first_target_ns) as f64 / 1e9).max(1e-9),
    );
    if let Some(l) = &stats.latency {
        sample.set("latency_p50_ms", l.p50_ms);
        sample.set("latency_p90_ms", l.p90_ms);
        sample.set("latency_p99_ms", l.p99_ms);
        sample.set("latency_max_ms", l.max_ms);
        sample.set("latency_mean_ms", l.mean_ms);
        if (l.count as usize) < runs {
            sample
                .notes
                .push(format!("latency measured on {} of {runs} runs", l.count));
        }
    }
    if spec.synchronized {
        for (key, l) in [
            ("status_latency", &stats.status_latency),
            ("target_to_status", &stats.target_to_status),
        ] {
            let Some(l) = l else { continue };
            sample.set(format!("{key}_p50_ms"), l.p50_ms);
            sample.set(format!("{key}_p99_ms"), l.p99_ms);
            sample.set(format!("{key}_max_ms"), l.max_ms);
            if (l.count as usize) < runs {
                sample
                    .notes
                    .push(format!("{key} measured on {} of {runs} runs", l.count));
            }
        }
    }
    sample.set(
        "agent_cpu_us_per_run",
        (end.agent - start.agent) / runs as f64 * 1e6,
    );
    sample.set("agent_peak_rss_mib", agent.peak_rss_kib() as f64 / 1024.0);
    start.record(&end, runs, &mut sample);
    record_stats(&stats, runs, &mut sample);
    stop_agent(&mut agent, &mut sample, "");
    sample.ok = true;
    Ok(sample)
}
