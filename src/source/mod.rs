//! Sources of deliveries: the [`Source`] and [`Ack`] traits, the one
//! runner ([`run`]), and the sources themselves (Kafka, polling).
//!
//! A [`Source`] yields [`Delivery`] values, each with an [`Ack`] it wants back
//! when the message is done; the rest of the agent does not know which source
//! runs. [`run`] (in `run.rs`) is the one runner for every source: it owns
//! everything source-independent (the in-flight bound, per-key ordering, the
//! stop–drain–close sequence, panics) and hands each delivery to a
//! [`Process`] (the pipeline).

pub mod kafka;
pub mod offsets;
pub mod polling;
mod run;

use std::future::Future;

pub use run::{run, Process};

use crate::delivery::Delivery;
use crate::outcome::Outcome;

/// Handed back to the source when its delivery is done.
pub trait Ack: Send + 'static {
    /// The source will not have this delivery processed, and says why: the
    /// summary its run is failed with instead (the Kafka source gives up a
    /// message found in flight at too many deaths of the agent).
    fn given_up(&self) -> Option<&str> {
        None
    }

    /// The message reached `outcome` (final: delivered and reported, failed
    /// and reported, or skipped by rule).
    fn done(self, delivery: &Delivery, outcome: &Outcome) -> impl Future<Output = ()> + Send;
}

/// Where deliveries come from (Kafka, Port's polling API).
pub trait Source: Send + 'static {
    /// What the source wants back per delivery.
    type Ack: Ack;
    /// Why the source ended on its own (the polling source gives up after
    /// claims failed for too long); returned by [`run`].
    type Error: std::error::Error + Send + 'static;

    /// The next delivery, waiting as long as needed; `None` when the source
    /// has ended. `room` is how many more deliveries the runner could
    /// start now (this one included): a source that takes responsibility
    /// for work in batches (polling claims) takes no more than that.
    /// Transient errors are the source's to retry and log; a source that
    /// gives up returns `None` and says why from [`Source::close`]. Must be
    /// cancel-safe: the runner drops it when shutdown starts.
    fn next(&mut self, room: usize) -> impl Future<Output = Option<(Delivery, Self::Ack)>> + Send;

    /// Called (and dropped when a slot frees) while every slot is taken:
    /// a source that must keep serving its connection (Kafka's poll
    /// interval) does so here. Never resolves; must be cancel-safe.
    fn idle(&mut self) -> impl Future<Output = ()> + Send {
        std::future::pending()
    }

    /// Fetching has stopped; in-flight messages are about to be drained.
    fn stopping(&mut self) {}

    /// Deliveries the source already took responsibility for but has not
    /// handed out yet (polling: acked runs); they are processed in the drain.
    fn undispatched(&mut self) -> impl Future<Output = Vec<(Delivery, Self::Ack)>> + Send {
        async { Vec::new() }
    }

    /// The drain is over (or timed out): release everything. Messages that
    /// did not finish in the drain were stopped before this is called and
    /// their acks dropped without `done`. An error says why the source
    /// ended by itself (see [`Source::Error`]).
    fn close(self) -> impl Future<Output = Result<(), Self::Error>> + Send;
}
