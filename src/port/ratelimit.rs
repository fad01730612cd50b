//! Port's API rate limit, as the answers' headers tell it: one budget
//! shared by every task of the client.
//!
//! Port limits each organisation's API calls per period and says where a
//! caller stands on every answer (`x-ratelimit-limit`,
//! `x-ratelimit-remaining`, `x-ratelimit-reset`: seconds until the period
//! starts again). The client counts each call it starts against the last
//! known remainder, so concurrent tasks cannot overshoot it together; when
//! the remainder falls to a tenth of the limit, calls are spread evenly over
//! the time left, and when it is spent, calls wait for the reset. A 429 ends
//! the period early: nothing is sent until the reset it names. Without the
//! headers (an older Port, a proxy that strips them) nothing is paced.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;

use crate::telemetry::metrics;

/// Paced when the remainder is at most this share of the limit.
const LOW_SHARE: f64 = 0.1;
/// A reset is counted this much later than announced: the header has whole
/// seconds and the two clocks are not the same.
const RESET_MARGIN: Duration = Duration::from_millis(250);

/// What Port said on one answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observed {
    /// `x-ratelimit-limit`: calls per period.
    pub limit: u64,
    /// `x-ratelimit-remaining`: calls left in this period.
    pub remaining: u64,
    /// `x-ratelimit-reset`: until the period starts again.
    pub reset: Duration,
}

impl Observed {
    /// The rate-limit headers of an answer, when all three are there and
    /// readable.
    pub fn from_headers(headers: &HeaderMap) -> Option<Observed> {
        let number = |name: &str| -> Option<f64> {
            let n: f64 = headers.get(name)?.to_str().ok()?.trim().parse().ok()?;
            (n.is_finite() && n >= 0.0).then_some(n)
        };
        Some(Observed {
            limit: number("x-ratelimit-limit")? as u64,
            remaining: number("x-ratelimit-remaining")? as u64,
            // At most a day, like Retry-After.
            reset: Duration::try_from_secs_f64(number("x-ratelimit-reset")?.min(86_400.0)).ok()?,
        })
    }
}

#[derive(Debug)]
struct State {
    limit: u64,
    /// Calls left until `reset_at`, counting the calls started since the
    /// last answer.
    remaining: u64,
    reset_at: Instant,
    /// The longest reset seen: the length of a period, as far as known.
    period: Duration,
    /// The earliest start of the next call while paced.
    next_slot: Instant,
    /// Pacing was logged (once per process: a busy agent paces every period).
    told: bool,
}

/// The shared budget (one per client, cloned with it).
#[derive(Debug, Default)]
pub struct RateBudget {
    state: Mutex<Option<State>>,
}

impl RateBudget {
    /// Wait until a call may start, and count it.
    pub async fn acquire(&self) {
        loop {
            let wait = match self.state.lock() {
                Ok(mut state) => match state.as_mut() {
                    Some(s) => s.take(Instant::now()),
                    None => return,
                },
                Err(_) => return,
            };
            match wait {
                None => return,
                Some(d) => tokio::time::sleep(d).await,
            }
        }
    }

    /// Take what an answer said into account.
    pub fn observe(&self, seen: Observed) {
        let now = Instant::now();
        let reset_at = now + seen.reset + RESET_MARGIN;
        metrics::port_rate_limit_remaining(seen.remaining);
        if let Ok(mut state) = self.state.lock() {
            match state.as_mut() {
                // The same period: answers come back out of order, and calls
                // started since are already counted, so keep the lower count.
                Some(s) if reset_at <= s.reset_at + Duration::from_secs(1) && now < s.reset_at => {
                    s.remaining = s.remaining.min(seen.remaining);
                    s.limit = seen.limit;
                }
                Some(s) => {
                    s.limit = seen.limit;
                    s.remaining = seen.remaining;
                    s.reset_at = reset_at;
                    s.period = s.period.max(seen.reset);
                }
                None => {
                    *state = Some(State {
                        limit: seen.limit,
                        remaining: seen.remaining,
                        reset_at,
                        period: seen.reset,
                        next_slot: now,
                        told: false,
                    })
                }
            }
        }
    }

    /// Port answered 429: nothing more until `reset` from now; returns how
    /// long that is.
    pub fn exhausted(&self, reset: Option<Duration>) -> Option<Duration> {
        let now = Instant::now();
        let mut state = self.state.lock().ok()?;
        let s = state.as_mut()?;
        if let Some(reset) = reset {
            s.reset_at = s.reset_at.max(now + reset + RESET_MARGIN);
        }
        s.remaining = 0;
        Some(s.reset_at.saturating_duration_since(now))
    }
}

impl State {
    /// Count one call and go (`None`), or say how long to wait first.
    fn take(&mut self, now: Instant) -> Option<Duration> {
        if now >= self.reset_at {
            // A new period: the whole limit, until an answer says otherwise.
            self.remaining = self.limit;
            self.reset_at = now + self.period.max(Duration::from_secs(1));
        }
        if self.remaining == 0 {
            self.tell();
            return Some(self.reset_at - now);
        }
        let low = ((self.limit as f64 * LOW_SHARE).ceil() as u64).max(1);
        if self.remaining <= low {
            self.tell();
            if self.next_slot > now {
                return Some(self.next_slot - now);
            }
            // Spread what is left evenly over the time to the reset.
            let spacing = (self.reset_at - now) / (self.remaining as u32).max(1);
            self.next_slot = now + spacing;
        }
        self.remaining -= 1;
        None
    }

    fn tell(&mut self) {
        if !self.told {
            self.told = true;
            tracing::warn!(
                limit = self.limit,
                remaining = self.remaining,
                reset_in_ms = self
                    .reset_at
                    .saturating_duration_since(Instant::now())
                    .as_millis() as u64,
                "Port's API rate limit is nearly used up: pacing Port calls until it resets"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(limit: u64, remaining: u64, reset_in: Duration) -> (State, Instant) {
        let now = Instant::now();
        let s = State {
            limit,
            remaining,
            reset_at: now + reset_in,
            period: reset_in,
            next_slot: now,
            told: false,
        };
        (s, now)
    }

    #[test]
    fn headers_are_read_when_all_three_are_there() {
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-limit", "600".parse().unwrap());
        h.insert("x-ratelimit-remaining", "12".parse().unwrap());
        assert_eq!(Observed::from_headers(&h), None);
        h.insert("x-ratelimit-reset", "7".parse().unwrap());
        assert_eq!(
            Observed::from_headers(&h),
            Some(Observed {
                limit: 600,
                remaining: 12,
                reset: Duration::from_secs(7)
            })
        );
        h.insert("x-ratelimit-reset", "-1".parse().unwrap());
        assert_eq!(Observed::from_headers(&h), None, "a negative reset is ignored");
    }

    #[test]
    fn calls_go_at_once_while_the_budget_is_ample_and_each_is_counted() {
        let (mut s, now) = state(600, 100, Duration::from_secs(10));
        for _ in 0..40 {
            assert_eq!(s.take(now), None);
        }
        assert_eq!(s.remaining, 60);
        assert!(!s.told);
    }

    #[test]
    fn a_low_budget_is_spread_over_the_time_to_the_reset() {
        let (mut s, now) = state(600, 10, Duration::from_secs(10));
        assert_eq!(s.take(now), None, "the first paced call goes at once");
        let wait = s.take(now).expect("the next one waits");
        assert_eq!(wait, Duration::from_secs(1), "10 s over 10 calls");
        assert!(s.told);
        assert_eq!(s.take(now + wait), None);
        assert_eq!(s.remaining, 8);
    }

    #[test]
    fn a_spent_budget_waits_for_the_reset_then_starts_again() {
        let (mut s, now) = state(600, 0, Duration::from_secs(3));
        assert_eq!(s.take(now), Some(Duration::from_secs(3)));
        let later = now + Duration::from_secs(3);
        assert_eq!(s.take(later), None, "a new period");
        assert_eq!(s.remaining, 599);
    }

    #[tokio::test]
    async fn answers_of_the_same_period_never_raise_the_count_and_a_429_stops_calls() {
        let budget = RateBudget::default();
        budget.acquire().await; // nothing known: goes
        let seen = |remaining| Observed {
            limit: 600,
            remaining,
            reset: Duration::from_secs(5),
        };
        budget.observe(seen(100));
        budget.acquire().await;
        budget.observe(seen(120)); // an answer to an older call
        let remaining = budget.state.lock().unwrap().as_ref().unwrap().remaining;
        assert_eq!(remaining, 99);
        let wait = budget.exhausted(Some(Duration::from_secs(2))).expect("known");
        assert!(wait >= Duration::from_secs(4), "the later reset wins: {wait:?}");
        let s = budget.state.lock().unwrap();
        assert_eq!(s.as_ref().unwrap().remaining, 0);
    }
}
