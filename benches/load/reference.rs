//! The bare reference (`load reference`): a minimal reqwest client making the
//! same HTTP calls per run as the agent, against the same fakes, with no
//! Kafka, mapping or signing. Its CPU per run is the floor the agent's is
//! compared with.
//!
//! It uses the agent's own client construction (`port_agent::http::build_client`:
//! rustls, keep-alive pool, `TCP_NODELAY`), one client for Port and one for the
//! target, the same concurrency, and per run, in the pipeline's order:
//! 3 log POSTs, the target POST (the mapped body, about 1 KB), 1 log POST,
//! for synchronized runs `PATCH …/response` and `PATCH` status, and the final
//! log POST ([`crate::fakes::RUN_LOG_LINES`] in all, as the agent); the
//! token is fetched once. It prints one JSON line
//! ([`RefReport`]) about itself before exiting.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::fakes::exit_with_parent;
use crate::messages;
use crate::procfs::SelfReport;

/// Options of `load reference`.
#[derive(Debug, Clone, clap::Args)]
pub struct RefArgs {
    #[arg(long)]
    pub port_base: String,
    #[arg(long)]
    pub target_url: String,
    #[arg(long)]
    pub runs: usize,
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Synchronized runs: `/response` and status PATCH too.
    #[arg(long)]
    pub synchronized: bool,
    /// Run-log POSTs per run: 5 (`AGENT_RUN_LOGS=all`), 1 (`minimal`: the
    /// final line only) or 0 (`off`).
    #[arg(long, default_value_t = crate::fakes::RUN_LOG_LINES)]
    pub run_log_lines: u8,
}

/// What the reference prints about itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefReport {
    pub runs: usize,
    pub errors: usize,
    pub http_calls: usize,
    pub wall_s: f64,
    pub own: SelfReport,
}

struct Worker {
    port: reqwest::Client,
    target: reqwest::Client,
    base: String,
    target_url: String,
    auth: String,
    args: RefArgs,
}

impl Worker {
    async fn port_call(&self, method: reqwest::Method, path: String, body: serde_json::Value) -> bool {
        let resp = self
            .port
            .request(method, format!("{}{path}", self.base))
            .header("authorization", &self.auth)
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&body).unwrap_or_default())
            .send()
            .await;
        match resp {
            Ok(r) => {
                let ok = r.status().is_success();
                r.bytes().await.is_ok() && ok
            }
            Err(_) => false,
        }
    }

    /// Post a run log line; `last`: the run's final line (the only one
    /// with `--run-log-lines 1`).
    async fn log(&self, run_id: &str, message: String, last: bool) -> (usize, usize) {
        let post = match self.args.run_log_lines {
            0 => false,
            1 => last,
            _ => true,
        };
        if !post {
            return (0, 0);
        }
        let ok = self
            .port_call(
                reqwest::Method::POST,
                format!("/v1/actions/runs/{run_id}/logs"),
                json!({ "message": message }),
            )
            .await;
        (1, usize::from(!ok))
    }

    /// One run's calls; (calls, errors).
    async fn run(&self, index: usize) -> (usize, usize) {
        let run_id = format!("r{index}");
        let mut calls = (0, 0);
        let mut add = |c: (usize, usize)| {
            calls.0 += c.0;
            calls.1 += c.1;
        };
        add(self
            .log(&run_id, "An action message has been received".into(), false)
            .await);
        add(self
            .log(&run_id, "Preparing the payload for the request".into(), false)
            .await);
        add(self.log(&run_id, "Sending the request".into(), false).await);
        let body = messages::mapped_body(&run_id, None);
        let resp = self
            .target
            .post(&self.target_url)
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&body).unwrap_or_default())
            .send()
            .await;
        let (status, text) = match resp {
            Ok(r) => {
                let status = r.status().as_u16();
                (status, r.text().await.unwrap_or_default())
            }
            Err(_) => (0, String::new()),
        };
        add((1, usize::from(!(200..300).contains(&status))));
        add(self
            .log(
                &run_id,
                format!("Action invocation has completed successfully with status code: {status}"),
                false,
            )
            .await);
        if self.args.synchronized {
            let response = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
            let ok = self
                .port_call(
                    reqwest::Method::PATCH,
                    format!("/v1/actions/runs/{run_id}/response"),
                    json!({ "response": response }),
                )
                .await;
            add((1, usize::from(!ok)));
            let ok = self
                .port_call(
                    reqwest::Method::PATCH,
                    format!("/v1/actions/runs/{run_id}"),
                    json!({ "status": "SUCCESS" }),
                )
                .await;
            add((1, usize::from(!ok)));
        }
        add(self
            .log(
                &run_id,
                "Port agent finished processing the action run".into(),
                true,
            )
            .await);
        calls
    }
}

/// `load reference`: make the calls, print a [`RefReport`], exit.
pub fn run(args: RefArgs) -> Result<()> {
    exit_with_parent();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = rt.block_on(async move {
        let opts = |pool: usize| port_agent::http::ClientOptions {
            timeout: Duration::from_secs(30),
            verify_tls: true,
            ca_bundle: None,
            pool_idle_per_host: pool,
            proxies: Default::default(),
        };
        let port = port_agent::http::build_client(&opts(args.concurrency))?;
        let target = port_agent::http::build_client(&opts(args.concurrency))?;
        let base = args.port_base.trim_end_matches('/').to_string();
        let started = Instant::now();
        let body = json!({"clientId": "bench-client", "clientSecret": messages::SECRET});
        let answer = port
            .post(format!("{base}/v1/auth/access_token"))
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&body)?)
            .send()
            .await
            .context("token")?
            .bytes()
            .await?;
        let token: serde_json::Value = serde_json::from_slice(&answer)?;
        let auth = format!("Bearer {}", token["accessToken"].as_str().unwrap_or(""));
        let worker = Arc::new(Worker {
            port,
            target,
            base,
            target_url: args.target_url.clone(),
            auth,
            args: args.clone(),
        });
        let next = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..args.concurrency.max(1))
            .map(|_| {
                let (worker, next) = (worker.clone(), next.clone());
                tokio::spawn(async move {
                    let mut total = (0, 0);
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= worker.args.runs {
                            return total;
                        }
                        let c = worker.run(i).await;
                        total.0 += c.0;
                        total.1 += c.1;
                    }
                })
            })
            .collect();
        let (mut calls, mut errors) = (1, 0);
        for t in tasks {
            let (c, e) = t.await?;
            calls += c;
            errors += e;
        }
        anyhow::Ok(RefReport {
            runs: args.runs,
            errors,
            http_calls: calls,
            wall_s: started.elapsed().as_secs_f64(),
            own: SelfReport::now(),
        })
    })?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
