//! S7: start-up, from process start to ready, the consumer-group join
//! excluded.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use serde_json::json;

use super::{Description, Run, Scenario};
use crate::fakes::Fakes;
use crate::report::{Sample, Target};
use crate::session::{ready, stop_agent, Session, StartLog};

/// The scenario.
pub struct Startup;

impl Scenario for Startup {
    fn describe(&self, _: &Session) -> Description {
        Description {
            title: "port-agent start to ready, group join excluded".to_string(),
            params: json!({}),
            targets: vec![Target::at_most("start_to_ready_ms", 100.0, "start to ready ms")],
        }
    }

    fn run<'a>(&'a self, s: &'a Session, tag: &'a str) -> Run<'a> {
        Box::pin(startup(s, tag))
    }
}

/// S7: process start to ready, the consumer-group join excluded.
async fn startup(s: &Session, tag: &str) -> Result<Sample> {
    let dir = s.run_dir(tag)?;
    let deadline = s.deadline();
    let broker = s.start_broker(&dir)?;
    broker.create_topics().await?;
    let fakes = Fakes::start(0, 0, &dir.join("fakes.log"))?;
    let mut agent = s.spawn_agent(&broker, &fakes, &dir, tag)?;
    let mut log = StartLog::default();
    let mut ready_at: Option<Duration> = None;
    let mut cpu_at_subscribed = None;
    loop {
        agent.check_alive()?;
        log.scan(&agent);
        if log.subscribed.is_some() && cpu_at_subscribed.is_none() {
            cpu_at_subscribed = Some(agent.cpu());
        }
        if ready_at.is_none() && ready(agent.http_port).await {
            ready_at = Some(agent.started.elapsed());
        }
        match (log.assigned, ready_at) {
            (Some(_), Some(_)) => break,
            // No readiness endpoint (or it never turns ready): log lines only.
            (Some(a), None) if agent.started.elapsed() > a + Duration::from_secs(3) => break,
            _ => {}
        }
        if Instant::now() > deadline {
            bail!(
                "the agent did not become ready in time (log: {})",
                agent.log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mut sample = Sample::default();
    let subscribed = log
        .subscribed
        .ok_or_else(|| anyhow!("no \"subscribed\" line in the agent log (LOG_LEVEL must be info)"))?;
    let assigned = log.assigned.unwrap_or(subscribed);
    let join = assigned.saturating_sub(subscribed);
    sample.set("subscribed_ms", ms(subscribed));
    sample.set("assigned_ms", ms(assigned));
    sample.set("group_join_ms", ms(join));
    match ready_at {
        Some(r) => {
            sample.set("readyz_ms", ms(r));
            sample.set("start_to_ready_ms", ms(r.saturating_sub(join)));
            sample
                .notes
                .push("ready = first /readyz 200 minus the group join".into());
        }
        None => {
            sample.set("start_to_ready_ms", ms(subscribed));
            sample
                .notes
                .push("no /readyz: ready = the \"subscribed\" log line".into());
        }
    }
    if let Some(c) = cpu_at_subscribed {
        sample.set("agent_cpu_ms_to_subscribed", c * 1e3);
    }
    sample.set("agent_peak_rss_mib", agent.peak_rss_kib() as f64 / 1024.0);
    stop_agent(&mut agent, &mut sample, "");
    sample.ok = true;
    Ok(sample)
}
