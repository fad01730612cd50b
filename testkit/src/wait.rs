//! Polling a condition with a deadline: the one polling loop of the tests.

use std::time::{Duration, Instant};

/// Poll `cond` every 50 ms until it holds; panic naming `what` after
/// `within`.
pub async fn eventually(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    eventually_some(what, within, || cond().then_some(())).await
}

/// Poll `check` every 50 ms until it gives a value and return it; panic
/// naming `what` after `within`.
pub async fn eventually_some<T>(what: &str, within: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Run `f` (blocking: a health probe, an admin call) off the async workers.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}
