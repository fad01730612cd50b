//! S5: peak RSS while the agent works through backlogs of different sizes
//! against a slow target: memory must not grow with the backlog.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::json;

use super::{Description, Run, Scenario};
use crate::fakes::Fakes;
use crate::infra;
use crate::messages;
use crate::report::{Sample, Target};
use crate::session::{stop_agent, unix_s, Cpu, Session};

/// The scenario.
pub struct Backlog;

impl Scenario for Backlog {
    fn describe(&self, s: &Session) -> Description {
        let o = &s.opts;
        let mut targets: Vec<Target> = o
            .s5_backlogs
            .iter()
            .map(|b| {
                Target::at_most(
                    &format!("agent_peak_rss_mib_{b}"),
                    40.0,
                    &format!("peak RSS MiB, backlog {b}"),
                )
            })
            .collect();
        if o.s5_backlogs.len() > 1 {
            targets.push(
                Target::at_most(
                    "rss_growth_largest_vs_smallest",
                    1.10,
                    "flat: peak RSS largest ÷ smallest backlog",
                )
                .aim(),
            );
        }
        Description {
            title: format!(
                "backlogs {:?}, target answering in {} ms, RSS sampled over {} s",
                o.s5_backlogs, o.s5_target_latency_ms, o.s5_window_s
            ),
            params: json!({"backlogs": o.s5_backlogs, "target_latency_ms": o.s5_target_latency_ms,
                           "window_s": o.s5_window_s}),
            targets,
        }
    }

    fn run<'a>(&'a self, s: &'a Session, tag: &'a str) -> Run<'a> {
        Box::pin(backlog(s, tag))
    }
}

/// S5: peak RSS while working through each backlog against a slow target.
async fn backlog(s: &Session, tag: &str) -> Result<Sample> {
    let mut sample = Sample::default();
    let mut peaks = Vec::new();
    for &size in &s.opts.s5_backlogs {
        let dir = s.run_dir(&format!("{tag}-{size}"))?;
        let deadline = s.deadline();
        let broker = s.start_broker(&dir)?;
        broker.create_topics().await?;
        let fakes = Fakes::start(0, s.opts.s5_target_latency_ms, &dir.join("fakes.log"))?;
        fakes.reset(size, false, s.expected_calls(false)).await?;
        broker.check_capacity(size)?;
        let url = fakes.target_url();
        let ts = unix_s();
        let produce = Instant::now();
        {
            let producer = broker.producer(true)?;
            infra::produce_all(&producer, size, |i| {
                messages::signed_bytes(messages::action_run(i, &url, false, None), ts)
            })
            .await?;
        }
        sample.set(format!("produce_s_{size}"), produce.elapsed().as_secs_f64());
        let mut agent = s.spawn_agent(&broker, &fakes, &dir, &format!("{tag}-{size}"))?;
        // Wait for the first target request, then sample for the window.
        loop {
            agent.check_alive()?;
            if fakes.stats().await?.target_total > 0 {
                break;
            }
            if Instant::now() > deadline {
                bail!("timed out waiting for the first target request (backlog {size})");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let start = Cpu::now(&agent, &fakes, &broker);
        let window = Duration::from_secs(s.opts.s5_window_s);
        let mut series = Vec::new();
        while start.at.elapsed() < window {
            agent.check_alive()?;
            series.push(agent.rss_kib());
            let stats = fakes.stats().await?;
            if stats.done_unique as usize >= size {
                sample
                    .notes
                    .push(format!("backlog {size} drained within the window"));
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let end = Cpu::now(&agent, &fakes, &broker);
        let stats = fakes.stats().await?;
        let peak = agent.peak_rss_kib() as f64 / 1024.0;
        peaks.push(peak);
        let mib = |kib: u64| kib as f64 / 1024.0;
        let quarter = series.get(series.len() / 4).copied().unwrap_or(0);
        let last = series.last().copied().unwrap_or(0);
        sample.set(format!("agent_peak_rss_mib_{size}"), peak);
        sample.set(format!("agent_rss_end_mib_{size}"), mib(last));
        sample.set(
            format!("agent_rss_growth_last_3q_mib_{size}"),
            mib(last) - mib(quarter),
        );
        sample.set(
            format!("processed_per_s_{size}"),
            stats.done_unique as f64 / end.at.duration_since(start.at).as_secs_f64(),
        );
        sample.set(
            format!("agent_cpu_window_us_per_run_{size}"),
            (end.agent - start.agent) / (stats.done_unique.max(1) as f64) * 1e6,
        );
        sample.set(
            format!("fakes_cpu_pct_{size}"),
            (end.fakes - start.fakes) / end.at.duration_since(start.at).as_secs_f64() * 100.0,
        );
        stop_agent(&mut agent, &mut sample, &format!(" (backlog {size})"));
    }
    if let (Some(first), Some(last)) = (peaks.first(), peaks.last()) {
        if peaks.len() > 1 && *first > 0.0 {
            sample.set("rss_growth_largest_vs_smallest", last / first);
        }
    }
    sample.ok = true;
    Ok(sample)
}
