//! Micro-benchmarks of the per-message work that does not touch the network
//! (criterion; `cargo bench --bench micro`, add `-- --quick` for a short run):
//!
//! * `mapping/select_and_build`: selection plus rendering of a typical
//!   7-expression mapping on a 1 KB action-run message, exactly as the
//!   pipeline calls them (goal: ≤ 40 µs); `mapping/select` and
//!   `mapping/build_request` split it;
//! * `signature/verify_incoming_2kb`: incoming signature check of a 2 KB message;
//! * `decrypt/one_field`: `fieldsToDecryptPaths` with one encrypted field;
//! * `watermarks/out_of_order`: the offset tracker with 64 messages in flight
//!   over 3 partitions completing in a scrambled order, committable offsets
//!   taken every 32 completions (per message);
//! * `context/*`: other per-message steps (parse, jq conversion, outgoing
//!   signature), to see where the rest of a run's CPU goes;
//! * `jq_bounds/gsub_2mb_field`: `gsub("\n"; " ")` over a 2 MB field of
//!   400,000 lines (quadratic before issue 23: 15-43 s; goal: a few hundred
//!   ms), and `jq_bounds/deep_tojson_bomb`: the time a nesting bomb takes to
//!   be stopped.
//!
//! The end-to-end benchmark is `benches/load` (see `scripts/bench.sh`).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use serde_json::{json, Value};

use port_agent::decrypt::decrypt_fields;
use port_agent::json_canon::to_raw_string;
use port_agent::mapping::{
    build_request, build_request_from, jq, Budget, Defaults, EvalCtx, JqEnv, MappingSet,
};
use port_agent::message::{Invocation, TopicKind};
use port_agent::signature::{sign, sign_outgoing, verify_incoming};
use port_agent::source::offsets::Watermarks;

/// The decryption key and a value encrypted with it (`../shared/vectors/decrypt.json`,
/// case "simple string").
const SECRET: &str = "0123456789abcdef0123456789abcdefTAIL-IGNORED";
const ENCRYPTED: &str = "AAECAwQFBgcICQoLDA0OD4Gu4v+8ErVwrtGa7NB7dYAe5BvLu7BJp0sM/pjrDXk=";

/// A typical mapping: `enabled`, `url`, one header from the environment, one
/// from the message, and a body of three fields: 7 jq expressions.
const MAPPING: &str = r#"[{
  "enabled": ".payload.action.invocationMethod.type == \"WEBHOOK\" and .payload.action.invocationMethod.agent",
  "url": "\"http://deployer.internal/\" + .context.blueprint + \"/\" + (.context.entity | @uri)",
  "headers": {
    "Authorization": "\"Bearer \" + env.DEPLOYER_TOKEN",
    "X-Port-Run-Id": ".context.runId"
  },
  "body": {
    "runId": ".context.runId",
    "entity": ".payload.entity.identifier",
    "inputs": ".payload.properties"
  }
}]"#;

/// A realistic action-run message whose compact form is `size` bytes (padded
/// in `payload.properties.notes`), signed as Port signs it.
fn action_run(size: usize) -> Value {
    let mut m = json!({
        "action": "deploy_service",
        "resourceType": "run",
        "status": "TRIGGERED",
        "trigger": {"by": {"orgId": "org_1", "userId": "u_1", "user": {"email": "dev@example.com"}},
                    "origin": "UI", "at": "2026-11-01T12:00:00.000Z"},
        "context": {"entity": "svc-a", "blueprint": "microservice", "runId": "r_0123456789abcdef"},
        "payload": {
            "entity": {"identifier": "svc-a", "title": "Service A", "blueprint": "microservice",
                       "properties": {"region": "eu-west-1", "tier": "gold", "owner": "team-platform"}},
            "action": {"identifier": "deploy_service", "invocationMethod": {"type": "WEBHOOK", "agent": true,
                       "synchronized": false, "method": "POST", "url": "http://deployer.internal/deploy"}},
            "properties": {"version": "1.2.3", "environment": "production", "replicas": 3,
                           "token": ENCRYPTED, "notes": ""}
        },
        "headers": {}
    });
    // Room for the signature headers `signed` adds (about 90 bytes).
    let missing = size.saturating_sub(to_raw_string(&m).len() + 90);
    m["payload"]["properties"]["notes"] = Value::String("n".repeat(missing));
    signed(m)
}

fn signed(mut m: Value) -> Value {
    let sig = sign(SECRET, "1713277889", &to_raw_string(&m));
    m["headers"]["X-Port-Signature"] = Value::String(sig);
    m["headers"]["X-Port-Timestamp"] = json!(1713277889);
    m
}

fn mapping(c: &mut Criterion) {
    let set = MappingSet::parse(MAPPING).expect("mapping compiles");
    let env = JqEnv::new([("DEPLOYER_TOKEN".to_string(), "tok-0123456789".to_string())]);
    let ctx = EvalCtx {
        env: &env,
        budget: Budget::default(),
    };
    let mut message = action_run(1024);
    verify_incoming(&mut message, SECRET, false).expect("signed");
    let defaults = Defaults {
        method: Some("POST"),
        url: Some("http://deployer.internal/deploy"),
    };
    // Check once that the benchmark measures a successful path.
    let mut warnings = Vec::new();
    let index = set.select(&jq::to_val(&message), &ctx, &mut warnings).index;
    let built = build_request(&set.mappings[0], &message, &defaults, &ctx, &mut warnings);
    assert_eq!(index, Some(0));
    assert!(built.is_ok() && warnings.is_empty(), "{built:?} {warnings:?}");

    let mut g = c.benchmark_group("mapping");
    g.bench_function("select_and_build", |b| {
        b.iter(|| {
            // As the pipeline does it: one conversion serves both.
            let mut warnings = Vec::new();
            let input = jq::to_val(black_box(&message));
            let sel = set.select(&input, &ctx, &mut warnings);
            let m = set.get(sel.index.expect("selected")).expect("mapping");
            build_request_from(m, &message, &input, &defaults, &ctx, &mut warnings)
        })
    });
    g.bench_function("select", |b| {
        b.iter(|| {
            let mut warnings = Vec::new();
            set.select(&jq::to_val(black_box(&message)), &ctx, &mut warnings)
        })
    });
    g.bench_function("build_request", |b| {
        b.iter(|| {
            let mut warnings = Vec::new();
            build_request(
                &set.mappings[0],
                black_box(&message),
                &defaults,
                &ctx,
                &mut warnings,
            )
        })
    });
    g.finish();
}

fn signature(c: &mut Criterion) {
    let message = action_run(2048);
    assert!((2000..2100).contains(&to_raw_string(&message).len()));
    let mut g = c.benchmark_group("signature");
    g.throughput(Throughput::Bytes(2048));
    g.bench_function("verify_incoming_2kb", |b| {
        b.iter_batched_ref(
            || message.clone(),
            |m| verify_incoming(m, SECRET, false).expect("valid signature"),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn decrypt(c: &mut Criterion) {
    let message = action_run(1024);
    let paths = vec!["payload.properties.token".to_string()];
    let mut probe = message.clone();
    let d = decrypt_fields(&mut probe, &paths, SECRET);
    assert!(d.failures.is_empty() && d.plaintexts.len() == 1);
    let mut g = c.benchmark_group("decrypt");
    g.bench_function("one_field", |b| {
        b.iter_batched_ref(
            || message.clone(),
            |m| decrypt_fields(m, &paths, SECRET),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// The agent's pattern: up to 64 messages in flight over 3 partitions, each
/// finishing at a pseudo-random moment, committable offsets taken every 32
/// completions (the agent takes them every second).
fn watermark_run(total: i64) -> usize {
    const IN_FLIGHT: usize = 64;
    let topic = "org_1.runs";
    let mut marks = Watermarks::new();
    for p in 0..3 {
        marks.assign(topic, p);
    }
    let mut next = [0i64; 3];
    let mut started = 0i64;
    let mut running = Vec::with_capacity(IN_FLIGHT);
    let mut rng: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut commits = 0;
    let mut completed = 0u32;
    while started < total || !running.is_empty() {
        while running.len() < IN_FLIGHT && started < total {
            let p = (started % 3) as usize;
            running.push(marks.start(topic, p as i32, next[p]).expect("assigned"));
            next[p] += 1;
            started += 1;
        }
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let ticket = running.swap_remove((rng % running.len() as u64) as usize);
        marks.done(&ticket);
        completed += 1;
        if completed % 32 == 0 {
            commits += marks.take_committable().len();
        }
    }
    commits + marks.take_committable().len()
}

fn watermarks(c: &mut Criterion) {
    const MESSAGES: i64 = 3_000;
    let mut g = c.benchmark_group("watermarks");
    g.throughput(Throughput::Elements(MESSAGES as u64));
    g.bench_function("out_of_order", |b| b.iter(|| watermark_run(black_box(MESSAGES))));
    g.finish();
}

fn context(c: &mut Criterion) {
    let message = action_run(1024);
    let bytes = serde_json::to_vec(&message).expect("serialise");
    let mut stripped = message.clone();
    verify_incoming(&mut stripped, SECRET, false).expect("signed");
    let mut g = c.benchmark_group("context");
    g.bench_function("parse_1kb", |b| {
        b.iter(|| Invocation::parse(black_box(&bytes), TopicKind::Runs).expect("parses"))
    });
    g.bench_function("to_jq_value_1kb", |b| b.iter(|| jq::to_val(black_box(&stripped))));
    g.bench_function("sign_outgoing_1kb", |b| {
        b.iter(|| sign_outgoing(SECRET, 1713277889, black_box(&stripped)))
    });
    g.finish();
}

fn jq_bounds(c: &mut Criterion) {
    let mut g = c.benchmark_group("jq_bounds");
    g.sample_size(10);
    let field = jq::to_val(&json!("line\n".repeat(400_000)));
    let budget = Budget {
        time: Duration::from_secs(30),
        ..Budget::default()
    };
    let env = JqEnv::default();
    let gsub = jq::JqProgram::compile(r#"gsub("\n"; " ") | length"#).expect("compiles");
    g.bench_function("gsub_2mb_field", |b| {
        b.iter(|| {
            let out = gsub.first(black_box(&field), &env, budget).expect("no error");
            assert!(out.is_some_and(|v| jq::from_val(&v).ok() == Some(json!(2_000_000))));
        })
    });
    let bomb =
        jq::JqProgram::compile("reduce range(100000) as $i (null; [.]) | tojson | length").expect("compiles");
    g.bench_function("deep_tojson_bomb", |b| {
        b.iter(|| assert!(bomb.first(&jq::to_val(&json!(null)), &env, budget).is_err()))
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = mapping, signature, decrypt, watermarks, context, jq_bounds
}
criterion_main!(benches);
