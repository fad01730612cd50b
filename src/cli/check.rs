//! `port-agent check`: validate the settings that are present, compile every
//! mapping, and with `--messages` show how the mappings cover a recorded
//! topic ([`super::coverage`]).

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;

use super::{describe_mapping_error, mapping_path, offline_settings, pipeline_config, Exit, Result};
use crate::mapping::{JqEnv, Mapping, MappingError, MappingSet};
use crate::settings::Settings;

/// The arguments of `check`.
#[derive(Args)]
pub struct CheckArgs {
    /// Mapping file (default: CONTROL_THE_PAYLOAD_CONFIG_PATH).
    #[arg(long, value_name = "FILE")]
    mapping: Option<PathBuf>,
    /// Recorded topic (JSON lines, as for dry-run) to evaluate the mappings over.
    #[arg(long, value_name = "FILE")]
    messages: Option<PathBuf>,
    /// Topic for bare message lines in --messages (default: the runs topic).
    #[arg(long, value_name = "TOPIC", requires = "messages")]
    topic: Option<String>,
}

/// Run `check`: exit 1 when a mapping fails to compile, a URL or method
/// is known to be of the wrong type, a literal URL is not allowed, or a
/// field fails over `--messages`; every error of the file is listed. Exit 3
/// when the mapping file cannot be read, as in every command.
pub fn command(args: CheckArgs) -> Result {
    let settings = offline_settings()?;
    let path = mapping_path(args.mapping, &settings);
    print_setting_notes(&settings);
    let (set, mut errors) = match MappingSet::load_all(&path) {
        Ok(loaded) => loaded,
        Err(e @ MappingError::Read { .. }) => {
            return Err(anyhow::anyhow!("{}", describe_mapping_error(&path, &e)).into())
        }
        Err(e) => {
            println!("error: {}", describe_mapping_error(&path, &e));
            return Ok(Exit::Problems);
        }
    };
    let compiled = errors.is_empty();
    errors.extend(set.mappings.iter().flat_map(Mapping::literal_errors));
    // By mapping, then in the order found (the sort is stable).
    errors.sort_by_key(|e| match e {
        MappingError::Field { index, .. } => *index,
        _ => usize::MAX,
    });
    if compiled {
        println!("{}: {} mapping(s) compiled", path.display(), set.mappings.len());
    }
    if !errors.is_empty() {
        println!("{}: {} error(s)", path.display(), errors.len());
        for e in &errors {
            println!("error: {}", describe_mapping_error(&path, e));
        }
    }
    let mut not_allowed = 0;
    // A mapping in error is shown by its errors only.
    for m in set.mappings.iter().filter(|_| compiled) {
        if !describe_mapping(m, &settings) {
            not_allowed += 1;
        }
    }
    let mut failed = false;
    if let (Some(file), true) = (&args.messages, errors.is_empty()) {
        failed = check_messages(&set, file, args.topic.as_deref(), &settings)?;
    }
    Ok(if errors.is_empty() && not_allowed == 0 && !failed {
        Exit::Success
    } else {
        Exit::Problems
    })
}

/// Warnings about the settings, and what `run` will need that is missing.
fn print_setting_notes(settings: &Settings) {
    let mut notes = Vec::new();
    if settings.port.client_id.is_empty() || settings.port.client_secret.is_empty() {
        notes.push("PORT_CLIENT_ID/PORT_CLIENT_SECRET are not set: `run` will need them");
    }
    if settings.port.org_id.is_empty() {
        notes.push("PORT_ORG_ID is not set: `run` will need it");
    }
    for w in settings.warnings() {
        println!("warning: {w}");
    }
    for n in notes {
        println!("note: {n}");
    }
}

/// Print what one mapping sets; false when its literal URL is not allowed.
fn describe_mapping(m: &Mapping, settings: &Settings) -> bool {
    let fields = m.fields_set();
    println!(
        "  #{}: enabled: {}; sets: {}",
        m.index,
        m.enabled_text(),
        if fields.is_empty() {
            "nothing (defaults)".to_string()
        } else {
            fields.join(", ")
        }
    );
    if !m.unknown_keys.is_empty() {
        println!(
            "  #{}: warning: unknown keys ignored: {}",
            m.index,
            m.unknown_keys.join(", ")
        );
    }
    if let (Some(list), Some(url)) = (&settings.target.allowed_targets, m.literal_url()) {
        if !url::Url::parse(&url).is_ok_and(|u| list.allows(&u)) {
            println!(
                "  #{}: error: url '{url}' is not allowed by AGENT_ALLOWED_TARGETS: its runs would be reported as failed",
                m.index
            );
            return false;
        }
    }
    true
}

/// `check --messages`: print the coverage of `file`; true when a field failed
/// or a line was malformed.
fn check_messages(set: &MappingSet, file: &Path, topic: Option<&str>, settings: &Settings) -> Result<bool> {
    let text = std::fs::read(file).with_context(|| {
        format!(
            "--messages: cannot read {}: give a recorded-topic file (JSON lines)",
            file.display()
        )
    })?;
    let (mut config, default_topic) = pipeline_config(settings, topic);
    // Signatures are stripped, not checked: the file may come from anywhere.
    config.skip_signature_check = true;
    let env = JqEnv::new(crate::settings::process_env());
    let pipeline = super::dry_run::pipeline(config, set.clone(), env, 200, "");
    let cov = super::coverage::coverage(&pipeline, &text, &default_topic);
    println!(
        "{}: {} message(s), {} evaluated, {} malformed line(s)",
        file.display(),
        cov.messages,
        cov.evaluated,
        cov.bad_lines.len()
    );
    print_coverage(&cov);
    Ok(cov.has_failures() || !cov.bad_lines.is_empty())
}

fn print_coverage(cov: &super::coverage::Coverage) {
    for (i, m) in cov.mappings.iter().enumerate() {
        println!("  #{i}: selected by {} message(s)", m.selected);
        for (field, f) in &m.failures {
            println!(
                "  #{i}: field '{field}': {} evaluation(s) failed; first (line {}): {}",
                f.count, f.first_line, f.first_error
            );
        }
    }
    if cov.unmatched.is_empty() {
        println!("  every evaluated message selects a mapping");
    } else {
        println!("  selected by no mapping: {} message(s)", cov.unmatched.len());
        for u in &cov.unmatched {
            println!(
                "    line {}: run {} action {}",
                u.line,
                u.run_id.as_deref().unwrap_or("-"),
                u.action.as_deref().unwrap_or("-")
            );
        }
    }
    for (line, why) in &cov.not_evaluated {
        println!("  line {line}: not evaluated: {why}");
    }
    for b in &cov.bad_lines {
        println!("  line {}: malformed, skipped: {}", b.line, b.reason);
    }
}
