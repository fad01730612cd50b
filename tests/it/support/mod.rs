//! Test support: the shared pieces come from the `testkit` crate (the fake
//! Port API and target, signed messages, tansu, the agent process); the
//! modules here hold what only these tests use.
#![allow(dead_code)]

pub mod agent;
pub mod broker;
pub mod cli;
pub mod pipeline;
pub mod proxy;
pub mod tls;

pub use testkit::fakes::{Answer, FakePort, FakeTarget, Recorded};
pub use testkit::message::{action_run, encrypt, signed, SECRET};
pub use testkit::net::{closed_port, http_get};
