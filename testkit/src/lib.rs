//! Dev-only helpers shared by port-agent's integration tests (`tests/it`)
//! and its load benchmark (`benches/load`): one home for each piece of test
//! infrastructure.
//!
//! * [`tansu`]: a tansu broker, in memory, on 127.0.0.1, and a TCP relay in
//!   front of it; committed offsets; producing test messages.
//! * [`net`]: free ports and a plain HTTP/1.1 `GET`.
//! * [`agent`]: the `port-agent` binary as a child process.
//! * [`message`]: action-run messages, signed and encrypted as Port does
//!   (an implementation independent of the agent's, so that it checks it).
//! * [`fakes`]: the fake Port API and the fake target, real HTTP servers on
//!   127.0.0.1 that record every call and can be told to fail.
//! * [`wait`]: polling a condition with a deadline, and [`wait::bounded`],
//!   the harness of tests that run the Kafka source in-process.
//!
//! **No test can hang.** Every wait on a broker, a child process or a
//! runtime's shutdown has a deadline that turns it into a failure naming
//! what was awaited: conditions are polled with [`wait::eventually`];
//! [`agent::AgentProcess`] is killed when dropped and waited for with a
//! deadline; a test that drops a runtime still holding a Kafka consumer
//! runs under [`wait::bounded`].
//!
//! testkit does not depend on the `port-agent` library: a dev-dependency
//! cycle would make distinct copies of the crate's types in its unit tests.
#![warn(missing_docs)]

pub mod agent;
pub mod fakes;
pub mod message;
pub mod net;
pub mod tansu;
pub mod wait;
