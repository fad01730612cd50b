//! Sources of deliveries. Each hands [`crate::pipeline::Delivery`] values to
//! the pipeline; the rest of the agent does not know which source runs.

pub mod kafka;
pub mod offsets;
pub mod recorded;
