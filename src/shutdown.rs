//! Shutdown as a small explicit type handed to every long-running task
//! (mini-redis style): the first SIGTERM/SIGINT asks everything to stop and
//! drain; a second one reports what would otherwise be lost
//! ([`LastWords`], bounded) and asks for the process to end with 130
//! ([`interrupted`], which `main.rs` waits on); a third asks at once.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

/// Fires once; cheap to clone; every clone sees the same signal.
#[derive(Clone, Debug)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

/// The side that fires it.
#[derive(Debug)]
pub struct Trigger {
    tx: watch::Sender<bool>,
}

/// A new shutdown signal.
pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (Trigger { tx }, Shutdown { rx })
}

impl Trigger {
    /// Ask every holder of the [`Shutdown`] to stop.
    pub fn fire(&self) {
        let _ = self.tx.send(true);
    }
}

impl Shutdown {
    /// Resolves once shutdown was asked for.
    pub async fn wait(&self) {
        let mut rx = self.rx.clone();
        // An error means the trigger is gone: treat it as a shutdown.
        let _ = rx.wait_for(|fired| *fired).await;
    }

    /// Has shutdown been asked for?
    pub fn is_fired(&self) -> bool {
        *self.rx.borrow()
    }
}

/// What a second signal does before the process exits: set once the source
/// is known (polling: fail the runs Port handed us that are in flight).
/// Each call is bounded by its own deadline ([`LAST_WORDS_TIMEOUT`] at most).
#[derive(Clone, Default)]
pub struct LastWords {
    action: Arc<Mutex<Option<LastWordsFn>>>,
}

type LastWordsFn = Box<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// How long the last words of a second signal may take before the process
/// exits anyway.
pub const LAST_WORDS_TIMEOUT: Duration = Duration::from_secs(5);

impl LastWords {
    /// What to do on a second signal (replaces what was set before).
    pub fn set<F>(&self, action: impl Fn() -> F + Send + Sync + 'static)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let boxed: LastWordsFn = Box::new(move || Box::pin(action()));
        *self.action.lock().unwrap_or_else(|p| p.into_inner()) = Some(boxed);
    }

    /// Say them, within `timeout`; `false` when that ran out.
    pub async fn say(&self, timeout: Duration) -> bool {
        let words = {
            let action = self.action.lock().unwrap_or_else(|p| p.into_inner());
            action.as_ref().map(|a| a())
        };
        match words {
            Some(words) => tokio::time::timeout(timeout, words).await.is_ok(),
            None => true,
        }
    }
}

/// Resolves once a second (or third) stop signal asked for the process to
/// end now, with 130 ([`on_signals`]); `main.rs` waits on it beside the
/// command and exits without waiting for the runtime's tasks.
pub async fn interrupted() {
    interruption().notified().await;
}

fn interruption() -> &'static tokio::sync::Notify {
    static INTERRUPTED: std::sync::OnceLock<tokio::sync::Notify> = std::sync::OnceLock::new();
    INTERRUPTED.get_or_init(tokio::sync::Notify::new)
}

/// Fire `trigger` on the first SIGTERM or SIGINT; on a second, say
/// `last_words` (within [`LAST_WORDS_TIMEOUT`]) and then end the process
/// ([`interrupted`]); a third ends it at once.
pub fn on_signals(trigger: Trigger, last_words: LastWords) {
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested: draining (send the signal again to exit at once)");
        trigger.fire();
        wait_for_signal().await;
        tracing::warn!("second signal: exiting now (a third exits without reporting the runs in flight)");
        tokio::spawn(async {
            wait_for_signal().await;
            tracing::warn!("third signal: exiting at once");
            interruption().notify_one();
        });
        if !last_words.say(LAST_WORDS_TIMEOUT).await {
            tracing::error!(
                timeout_s = LAST_WORDS_TIMEOUT.as_secs(),
                "reporting the runs in flight took too long; exiting anyway"
            );
        }
        interruption().notify_one();
    });
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
