//! The integration tests, one module per area, in one test binary (one link
//! instead of 24). `support` holds what the modules share.
//!
//! Process-wide state shared by the modules: the metrics recorder is
//! installed only by `kafka_mock::a_panic_fails_only_its_run_and_stalls_nothing`
//! (and the only in-process panics are in `kafka_mock`, serialized by its
//! `PANIC_TESTS` lock); the global tracing subscriber is set only by
//! `kafka_mock` (`try_init`), and the test that reads logs
//! (`pipeline::s12_…`) uses a thread-local subscriber. No test sets
//! environment variables of this process.

mod support;

mod binary_pipeline;
mod bounds;
mod claims_cli;
mod claims_polling;
mod cli;
mod cli_problems;
mod cli_usage;
mod crash_loop;
mod failure;
mod fuzz;
mod jq_differential;
mod kafka_claims;
mod kafka_mock;
mod kafka_source_noop;
mod kafka_tansu;
mod layout;
mod logs;
mod mappings;
mod metrics_scrape;
mod observability;
mod pipeline;
mod polling;
mod rate_limits;
mod reload;
mod report_path;
mod retries;
mod run_logs;
mod security;
mod security_edges;
mod settings_behaviour;
mod shutdown;
mod trust_store;
mod vectors;
