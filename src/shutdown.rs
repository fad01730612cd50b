//! Shutdown as a small explicit type handed to every long-running task
//! (mini-redis style): the first SIGTERM/SIGINT asks everything to stop and
//! drain; a second one exits at once.

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

/// Fire `trigger` on the first SIGTERM or SIGINT; exit with 130 on a second.
pub fn on_signals(trigger: Trigger) {
    tokio::spawn(async move {
        let mut count = 0;
        loop {
            wait_for_signal().await;
            count += 1;
            if count == 1 {
                tracing::info!("shutdown requested: draining (send the signal again to exit at once)");
                trigger.fire();
            } else {
                tracing::warn!("second signal: exiting now");
                std::process::exit(130);
            }
        }
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
