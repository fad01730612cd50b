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

/// Run a test's async body on a runtime and a thread of its own, and fail
/// naming `what` when the body and the runtime's shutdown have not both
/// ended within `within`: a wait that never ends (a consumer's close on a
/// broker that is gone, a join on a stuck task) becomes a failure with a
/// message instead of a hung test run.
///
/// The rule for the integration tests: a test that waits on a broker, a
/// child process or a runtime's shutdown bounds each wait. Polls go through
/// [`eventually`]; child processes are killed when their handle is dropped
/// ([`crate::agent`]) and waited for with a deadline; a test that runs the
/// Kafka source in-process runs under `bounded`, because dropping a tokio
/// runtime waits for its tasks and a failing assertion drops it.
///
/// A panic in the body fails the test with the body's own message, sent
/// before the runtime is dropped, so that a shutdown that hangs after a
/// failure cannot hide the failure.
pub fn bounded<F, Fut>(what: &str, within: Duration, body: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let (done, ended) = std::sync::mpsc::channel();
    let started = Instant::now();
    std::thread::Builder::new()
        .name(format!("bounded: {what}"))
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a tokio runtime for the test");
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rt.block_on(body())));
            if result.is_ok() {
                // The runtime's shutdown is part of the test.
                drop(rt);
            }
            let _ = done.send(result);
        })
        .expect("a thread for the test");
    match ended.recv_timeout(within) {
        Ok(Ok(())) => {}
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => panic!(
            "{what}: the test and its runtime's shutdown did not end within {within:?} (started {:?} ago): a wait hangs",
            started.elapsed()
        ),
    }
}
