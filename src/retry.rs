//! One retry loop for every outgoing call (target requests and Port API
//! calls): exponential backoff with full jitter on top of `backon`, a
//! server's `Retry-After` honoured, bounded by attempts and elapsed time;
//! and [`Pauses`], the one backoff formula, which that loop and every other
//! wait-and-try-again (a Port call pending while Port is away, polling
//! claims, Kafka consume errors) use.

use std::future::Future;
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use rand::Rng;

/// Limits of one retried call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Attempts in total, the first included.
    pub max_attempts: u32,
    /// No attempt starts (and no sleep ends) later than this after the first.
    pub max_elapsed: Duration,
    /// The first step; doubles per attempt.
    pub initial: Duration,
    /// Cap of one step.
    pub max: Duration,
}

/// The retry policy of target requests (SPEC §8): the backoff, and the
/// answers that are retried.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Attempts, elapsed time and steps.
    pub backoff: Backoff,
    /// Response statuses that are retried.
    pub statuses: Vec<u16>,
}

impl Default for Policy {
    /// 5 attempts within 60 s, 200 ms doubling to 10 s; 429, 502, 503, 504.
    fn default() -> Self {
        Policy {
            backoff: Backoff {
                max_attempts: 5,
                max_elapsed: Duration::from_secs(60),
                initial: Duration::from_millis(200),
                max: Duration::from_secs(10),
            },
            statuses: vec![429, 502, 503, 504],
        }
    }
}

/// How one attempt ended, when it did not succeed outright.
#[derive(Debug)]
pub enum Attempt<T, E> {
    /// Worth another try; `last` is what to return if no try is left.
    Retryable {
        /// The result to hand back when retries run out.
        last: Result<T, E>,
        /// The server's `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
    },
    /// Not worth retrying.
    Final(E),
}

/// The one backoff formula: the pause before try number `n + 1` (`n` = 1
/// after the first failure) is `initial × factor^(n-1)`, capped at `max`,
/// then scaled by a jitter factor drawn uniformly from `jitter`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pauses {
    /// The first pause.
    pub initial: Duration,
    /// Growth per failure (at least 1).
    pub factor: f64,
    /// Cap of one pause, before the jitter.
    pub max: Duration,
    /// The jitter factor's range: `(0.0, 1.0)` is "full jitter", `(0.9,
    /// 1.1)` ± 10 %, `(1.0, 1.0)` none.
    pub jitter: (f64, f64),
}

impl Pauses {
    /// The pause after failure `n` (1-based) with the jitter factor at
    /// `draw` of its range (`draw` in `[0, 1]`, clamped).
    pub fn nth(&self, n: u32, draw: f64) -> Duration {
        let exp = i32::try_from(n.saturating_sub(1)).unwrap_or(i32::MAX);
        let base = (self.initial.as_secs_f64() * self.factor.max(1.0).powi(exp)).min(self.max.as_secs_f64());
        let (low, high) = self.jitter;
        let scale = low + (high - low) * draw.clamp(0.0, 1.0);
        Duration::try_from_secs_f64(base * scale.max(0.0)).unwrap_or(self.max)
    }

    /// The pause after failure `n`, with a random jitter.
    pub fn random(&self, n: u32) -> Duration {
        self.nth(n, rand::rng().random_range(0.0..=1.0))
    }
}

/// Run `op` until it succeeds, fails finally, or the limits are reached.
/// `on_retry` is called before each sleep (for metrics and logs).
pub async fn with_retries<T, E, F, Fut>(
    policy: Backoff,
    op: F,
    mut on_retry: impl FnMut(&Attempt<T, E>, Duration),
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Attempt<T, E>>>,
{
    let start = Instant::now();
    let pauses = Pauses {
        initial: policy.initial,
        factor: 2.0,
        max: policy.max,
        jitter: (0.0, 1.0),
    };
    let mut failures = 0;
    // backon counts the attempts; the pauses are ours.
    let backoff =
        ExponentialBuilder::default().with_max_times(policy.max_attempts.saturating_sub(1) as usize);
    let result = op
        .retry(backoff)
        .sleep(tokio::time::sleep)
        .when(|e| matches!(e, Attempt::Retryable { .. }))
        .adjust(|e, step| {
            step?;
            failures += 1;
            let delay = match e {
                Attempt::Retryable {
                    retry_after: Some(after),
                    ..
                } => *after,
                _ => pauses.random(failures),
            };
            // Checked: a server may send any Retry-After.
            let ends = start.elapsed().checked_add(delay)?;
            (ends <= policy.max_elapsed).then_some(delay)
        })
        .notify(|e, d| on_retry(e, d))
        .await;
    match result {
        Ok(v) => Ok(v),
        Err(Attempt::Retryable { last, .. }) => last,
        Err(Attempt::Final(e)) => Err(e),
    }
}

/// Parse a `Retry-After` header given in seconds (negative, NaN or absurd
/// values are ignored; anything above a day is a day).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    const DAY: f64 = 86_400.0;
    value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite())
        .and_then(|s| Duration::try_from_secs_f64(s.min(DAY)).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn policy(attempts: u32) -> Backoff {
        Backoff {
            max_attempts: attempts,
            max_elapsed: Duration::from_secs(5),
            initial: Duration::from_millis(1),
            max: Duration::from_millis(4),
        }
    }

    #[tokio::test]
    async fn retries_until_success_within_the_attempt_bound() {
        let calls = AtomicU32::new(0);
        let mut retries = 0;
        let r: Result<u32, ()> = with_retries(
            policy(5),
            || async {
                let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                if n < 3 {
                    Err(Attempt::Retryable {
                        last: Err(()),
                        retry_after: None,
                    })
                } else {
                    Ok(n)
                }
            },
            |_, _| retries += 1,
        )
        .await;
        assert_eq!(r, Ok(3));
        assert_eq!(retries, 2);
    }

    #[tokio::test]
    async fn gives_back_the_last_result_when_attempts_run_out() {
        let calls = AtomicU32::new(0);
        let r: Result<u32, &str> = with_retries(
            policy(3),
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(Attempt::Retryable {
                    last: Ok(503),
                    retry_after: None,
                })
            },
            |_, _| {},
        )
        .await;
        assert_eq!(r, Ok(503));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn final_errors_are_not_retried() {
        let calls = AtomicU32::new(0);
        let r: Result<u32, &str> = with_retries(
            policy(5),
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(Attempt::Final("no"))
            },
            |_, _| {},
        )
        .await;
        assert_eq!(r, Err("no"));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn retry_after_is_honoured_and_bounded_by_elapsed_time() {
        let mut sleeps = Vec::new();
        let calls = AtomicU32::new(0);
        let mut p = policy(10);
        p.max_elapsed = Duration::from_millis(300);
        let r: Result<u32, ()> = with_retries(
            p,
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(Attempt::Retryable {
                    last: Ok(429),
                    retry_after: Some(Duration::from_millis(120)),
                })
            },
            |_, d| sleeps.push(d),
        )
        .await;
        assert_eq!(r, Ok(429));
        // 120 ms twice fits in 300 ms; a third wait would end past it.
        assert_eq!(sleeps, vec![Duration::from_millis(120); 2]);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn full_jitter_stays_within_the_step() {
        let pauses = Pauses {
            initial: Duration::from_millis(10),
            factor: 2.0,
            max: Duration::from_millis(10),
            jitter: (0.0, 1.0),
        };
        for _ in 0..1000 {
            assert!(pauses.random(3) <= Duration::from_millis(10));
        }
        assert_eq!(parse_retry_after(" 2 "), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

    #[test]
    fn pauses_grow_by_the_factor_are_capped_then_jittered() {
        let p = Pauses {
            initial: Duration::from_secs(1),
            factor: 2.0,
            max: Duration::from_secs(10),
            jitter: (0.5, 1.0),
        };
        let top: Vec<u64> = (1..=6).map(|n| p.nth(n, 1.0).as_secs()).collect();
        assert_eq!(top, [1, 2, 4, 8, 10, 10]);
        assert_eq!(p.nth(5, 0.0), Duration::from_secs(5), "the low end of the jitter");
        assert_eq!(p.nth(5, 7.0), Duration::from_secs(10), "draws are clamped");
        assert_eq!(p.nth(u32::MAX, 1.0), Duration::from_secs(10), "no overflow");
    }

    #[test]
    fn any_retry_after_is_safe() {
        let day = Some(Duration::from_secs(86_400));
        assert_eq!(parse_retry_after("1.8e19"), day);
        assert_eq!(parse_retry_after("1e400"), None, "not finite");
        assert_eq!(parse_retry_after("-3"), None);
        assert_eq!(parse_retry_after("NaN"), None);
    }

    #[tokio::test]
    async fn a_huge_retry_after_ends_the_retries_instead_of_overflowing() {
        let calls = AtomicU32::new(0);
        let r: Result<u32, ()> = with_retries(
            policy(5),
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(Attempt::Retryable {
                    last: Err(()),
                    retry_after: Some(Duration::MAX),
                })
            },
            |_, _| {},
        )
        .await;
        assert_eq!((r, calls.load(Ordering::SeqCst)), (Err(()), 1));
    }
}
