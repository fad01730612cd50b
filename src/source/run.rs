//! The one runner for every source: [`run`] takes deliveries from a
//! [`Source`] and hands each to a [`Process`] (the pipeline). It owns
//! everything source-independent: the in-flight bound (a permit is taken
//! *before* asking the source for more, so a full agent stops fetching),
//! per-key ordering, the stop–drain–close sequence, and panics: a panic
//! while processing one message becomes that message's failure (reported,
//! counted, acked), never a stalled partition.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tracing::{error, info, warn};

use super::{Ack, Source};
use crate::delivery::Delivery;
use crate::outcome::Outcome;
use crate::settings::LimitSettings;
use crate::shutdown::Shutdown;
use crate::telemetry::metrics;

/// What the runner hands each delivery to: the pipeline implements it
/// (in `pipeline`), tests may put anything else there.
pub trait Process: Send + Sync + 'static {
    /// The whole handling of one message, to its final outcome.
    fn process(&self, delivery: &Delivery) -> impl Future<Output = Outcome> + Send;

    /// Processing `delivery` panicked with `panic`: fail it (report it when
    /// it is a run that is ours) and give the outcome the source acks.
    fn internal_error(&self, delivery: &Delivery, panic: &str) -> impl Future<Output = Outcome> + Send;

    /// The source gave `delivery` up (see [`Ack::given_up`]): fail its run
    /// with `summary` without processing it.
    fn given_up(&self, delivery: &Delivery, summary: &str) -> impl Future<Output = Outcome> + Send;
}

/// Keys whose messages are running or waiting: each new message of a key
/// waits for the completion signal of the previous one.
#[derive(Default)]
struct KeyChains {
    tails: HashMap<Vec<u8>, (u64, oneshot::Receiver<()>)>,
    next_id: u64,
}

/// Run `source` through `pipeline` until `shutdown` fires (or the source
/// ends), then drain in-flight messages and close the source; the result is
/// the close's (why the source ended by itself, if it did).
pub async fn run<S: Source, P: Process>(
    mut source: S,
    pipeline: Arc<P>,
    opts: LimitSettings,
    shutdown: Shutdown,
) -> Result<(), S::Error> {
    let permits = Arc::new(Semaphore::new(opts.max_in_flight));
    let chains = Arc::new(Mutex::new(KeyChains::default()));
    let mut tasks = JoinSet::new();
    loop {
        // Forget finished tasks (their results are ()).
        while tasks.try_join_next().is_some() {}
        let permit = tokio::select! {
            _ = shutdown.wait() => break,
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = source.idle() => continue,
        };
        let room = permits.available_permits() + 1;
        let (delivery, ack) = tokio::select! {
            _ = shutdown.wait() => break,
            next = source.next(room) => match next { Some(n) => n, None => break },
        };
        start(delivery, ack, permit, &pipeline, &chains, &mut tasks);
    }

    source.stopping();
    let deadline = tokio::time::Instant::now() + opts.drain_timeout;
    let handed_over = source.undispatched().await;
    let mut left = handed_over.len();
    for (delivery, ack) in handed_over {
        match tokio::time::timeout_at(deadline, permits.clone().acquire_owned()).await {
            Ok(Ok(permit)) => start(delivery, ack, permit, &pipeline, &chains, &mut tasks),
            _ => break,
        }
        left -= 1;
    }
    if left > 0 {
        warn!(
            messages = left,
            "drain timeout reached before these messages could start"
        );
    }
    info!("stopping: draining in-flight messages");
    let all = u32::try_from(opts.max_in_flight).unwrap_or(u32::MAX);
    match tokio::time::timeout_at(deadline, permits.acquire_many(all)).await {
        Ok(_) => info!("all in-flight messages finished"),
        Err(_) => {
            warn!(
                in_flight = opts.max_in_flight - permits.available_permits(),
                "drain timeout reached; unfinished messages are stopped and not acknowledged"
            );
            // Stop them before the source closes, so that nothing they do
            // (a late report) comes after what the source does about them.
            tasks.abort_all();
            let stopped = async { while tasks.join_next().await.is_some() {} };
            if tokio::time::timeout(STOP_TIMEOUT, stopped).await.is_err() {
                warn!("some stopped messages did not end in time");
            }
        }
    }
    source.close().await
}

/// How long stopped messages may take to end after the drain timeout (a
/// jq evaluation in progress ends at its own bound).
const STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// A task that is aborted when its handle is dropped: stopping a message's
/// outer task also stops its pipeline.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Start processing one delivery: after its key's predecessor, holding
/// `permit` until the source has its ack.
fn start<A: Ack, P: Process>(
    delivery: Delivery,
    ack: A,
    permit: OwnedSemaphorePermit,
    pipeline: &Arc<P>,
    chains: &Arc<Mutex<KeyChains>>,
    tasks: &mut JoinSet<()>,
) {
    // Per-key order: wait for the previous message of the same key.
    let (prev, done_tx, chain_id) = match &delivery.key {
        Some(key) => {
            let (tx, rx) = oneshot::channel();
            let mut c = chains.lock().unwrap_or_else(|e| e.into_inner());
            c.next_id += 1;
            let id = c.next_id;
            let prev = c.tails.insert(key.clone(), (id, rx)).map(|(_, rx)| rx);
            (prev, Some(tx), id)
        }
        None => (None, None, 0),
    };
    metrics::consumed(&delivery.topic);
    let pipeline = pipeline.clone();
    let chains = chains.clone();
    let delivery = Arc::new(delivery);
    tasks.spawn(async move {
        if let Some(summary) = ack.given_up() {
            let outcome = pipeline.given_up(&delivery, summary).await;
            ack.done(&delivery, &outcome).await;
            metrics::done(outcome.name());
            release_key(&chains, &delivery, done_tx, chain_id);
            drop(permit);
            return;
        }
        if let Some(prev) = prev {
            // An error only means the predecessor's task is gone; never
            // block on it.
            let _ = prev.await;
        }
        // The pipeline runs as a task of its own so that a panic in it
        // (pipeline, invoker, reporter, jq) ends only that task: the
        // message is then failed, reported and acked like any other.
        let mut work = {
            let (pipeline, delivery) = (pipeline.clone(), delivery.clone());
            AbortOnDrop(tokio::spawn(async move { pipeline.process(&delivery).await }))
        };
        let outcome = match (&mut work.0).await {
            Ok(outcome) => outcome,
            // Stopped (the runtime is going away): not done, not acked.
            Err(e) if e.is_cancelled() => return,
            Err(e) => {
                let what = panic_text(e);
                error!(topic = %delivery.topic, partition = delivery.partition, offset = delivery.offset,
                       panic = %what, "internal error while processing a message; failing it");
                metrics::panicked();
                pipeline.internal_error(&delivery, &what).await
            }
        };
        ack.done(&delivery, &outcome).await;
        metrics::done(outcome.name());
        release_key(&chains, &delivery, done_tx, chain_id);
        drop(permit);
    });
}

/// The message of chain `chain_id` is done: its same-key successor may go.
fn release_key(
    chains: &Mutex<KeyChains>,
    delivery: &Delivery,
    done_tx: Option<oneshot::Sender<()>>,
    chain_id: u64,
) {
    if let Some(tx) = done_tx {
        let _ = tx.send(());
        if let Some(key) = &delivery.key {
            let mut c = chains.lock().unwrap_or_else(|e| e.into_inner());
            if c.tails.get(key).is_some_and(|(id, _)| *id == chain_id) {
                c.tails.remove(key);
            }
        }
    }
}

/// What a failed task said (a panic's message, when it has one).
fn panic_text(e: tokio::task::JoinError) -> String {
    if !e.is_panic() {
        return e.to_string();
    }
    let payload = e.into_panic();
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string())
}
