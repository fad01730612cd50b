//! What every layer passes around: one message as a source hands it in
//! ([`Delivery`]) and how far it is trusted ([`Trust`]). The outcome of
//! processing it is in [`crate::outcome`]. Below `source` and `pipeline`,
//! so neither imports the other for these.

/// One message and where it came from.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Topic name.
    pub topic: String,
    /// Partition (-1 when not from Kafka).
    pub partition: i32,
    /// Offset (or line number for recorded files).
    pub offset: i64,
    /// Kafka key.
    pub key: Option<Vec<u8>>,
    /// The message bytes.
    pub payload: Vec<u8>,
    /// Whether the message must be signed and say it is for the agent.
    pub trust: Trust,
}

/// How far a delivery's message is trusted: it travels on each
/// [`Delivery`], so the pipeline needs not know which source runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    /// Read from a topic anyone with access could write to (Kafka, a
    /// recorded topic): the message must say it is for the agent, and its
    /// signature is checked on every topic but the change log (SPEC §3).
    Signed,
    /// Claimed from Port's API over an authenticated connection (polling,
    /// SPEC §2.2): not signed, and already kept to runs for the agent by
    /// the source (its invocation method has no `agent` key).
    Claimed,
}
