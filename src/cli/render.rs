//! `port-agent render`: one message through the real pipeline with
//! recording edges: which mapping it selects (and why the ones before it
//! were passed over), the request it builds and the report that follows.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use serde_json::{json, Value};

use super::dry_run::{self, print_entry, Entry};
use super::{load_mappings, parse_env_pair, quiet_offline_settings, Assume, Exit, Format, Recording, Result};
use crate::delivery::Delivery;
use crate::delivery::Trust;
use crate::mapping::{JqEnv, PassedOver};

/// The arguments of `render`.
#[derive(Args)]
pub struct RenderArgs {
    /// Mapping file.
    #[arg(long, value_name = "FILE")]
    mapping: PathBuf,
    /// The message (one JSON object, as on the topic).
    #[arg(long, value_name = "FILE")]
    message: PathBuf,
    /// Topic the message came from (default: the runs topic).
    #[arg(long, value_name = "TOPIC")]
    topic: Option<String>,
    /// Extra environment for `env.X` in expressions (repeatable).
    #[arg(long = "env", value_name = "K=V", value_parser = parse_env_pair)]
    env: Vec<(String, String)>,
    #[command(flatten)]
    assume: Assume,
    /// Do not verify the message's signature, even with PORT_CLIENT_SECRET set.
    #[arg(long)]
    no_verify: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

/// Run `render`.
pub async fn command(args: RenderArgs) -> Result {
    let settings = quiet_offline_settings()?;
    let set = load_mappings(&args.mapping)?;
    let text = std::fs::read_to_string(&args.message)
        .with_context(|| format!("cannot read {}", args.message.display()))?;
    let env = JqEnv::new(crate::settings::process_env().chain(args.env));
    let run = Recording::new(
        &settings,
        set,
        args.topic.as_deref(),
        &args.assume,
        args.no_verify,
        env,
    );
    let verified = run.verified;
    let delivery = Delivery {
        topic: run.topic,
        partition: -1,
        offset: 0,
        key: None,
        payload: text.trim().as_bytes().to_vec(),
        trust: Trust::Signed,
    };
    let entry = dry_run::run_one(&run.pipeline, 1, delivery).await;
    let passed_over = &entry.outcome.passed_over;
    if args.format == Format::Json {
        print_json(&entry, passed_over, verified);
    } else {
        if args.no_verify {
            println!("note: --no-verify: the signature was not verified");
        } else if !verified {
            println!("note: PORT_CLIENT_SECRET is not set: the signature was not verified");
        }
        for p in passed_over {
            println!("mapping #{} passed over: {}", p.index, p.reason);
        }
        print_entry(&entry);
    }
    Ok(Exit::Success)
}

fn print_json(entry: &Entry, passed_over: &[PassedOver], verified: bool) {
    let j = entry.to_json();
    // The run report: the body of the status PATCH, if one follows.
    let report = entry
        .port_calls
        .iter()
        .rev()
        .find(|c| c.is_run_report())
        .map(|c| c.body.clone())
        .unwrap_or(Value::Null);
    let passed_over: Vec<Value> = passed_over
        .iter()
        .map(|p| json!({"index": p.index, "reason": p.reason}))
        .collect();
    let out = json!({
        "mapping_index": j["mapping_index"],
        "skipped": j["skipped"],
        "passed_over": passed_over,
        "request": j["request"],
        "report": report,
        "port_calls": j["port_calls"],
        "signatures_verified": verified,
    });
    println!("{out}");
}
