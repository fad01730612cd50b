//! port-agent: Port's execution agent, in Rust.
//!
//! The agent reads invocation events (action runs, workflow node runs,
//! change-log events), builds an HTTP request for each with a jq mapping,
//! signs and sends it to the organisation's internal service, and reports the
//! run's result back to Port. The README's "Architecture" section maps the
//! modules (the behaviour contract and the design notes the project follows
//! are kept outside this repository):
//!
//! ```text
//!  Source ──Delivery──▶ source::run ──▶ Process (the pipeline) ──▶ Outcome ──▶ Ack::done
//!                                          │        └──▶ Reporter (Port API | recorder)
//!                                          └──▶ Invoker (HTTP target | recorder)
//! ```
//!
//! Modules are layered: each uses only modules below it (`tests/it/layout.rs`
//! keeps the order): `secret`, `json_canon`, `proxy`, `shutdown`,
//! `signature`, `redact`, `retry`, `tls`, `guard`, `settings`, `message`,
//! `telemetry`, `http`, `decrypt`, `mapping`, `port`, `report`, `outcome`,
//! `delivery`, `invoke`, `source`, `pipeline`, `cli`.

// Input from outside never meets an unwrap or expect: every exception in
// non-test code is allowed where it stands, with the reason it cannot fail.
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]
// Every public item says what it is for.
#![warn(missing_docs)]

pub mod cli;
pub mod decrypt;
pub mod delivery;
pub mod guard;
pub mod http;
pub mod invoke;
pub mod json_canon;
pub mod mapping;
pub mod message;
pub mod outcome;
pub mod pipeline;
pub mod port;
pub mod proxy;
pub mod redact;
pub mod report;
pub mod retry;
pub mod secret;
pub mod settings;
pub mod shutdown;
pub mod signature;
pub mod source;
pub mod telemetry;
pub mod tls;

/// The system allocator, counting the bytes each jq evaluation holds so
/// that its memory budget holds (see `mapping::jq`).
#[global_allocator]
static ALLOCATOR: mapping::jq::MeteredAlloc = mapping::jq::MeteredAlloc;
