//! port-agent patch: a budget for one evaluation on the current thread.
//!
//! An evaluation can loop, nest or allocate without calling a definition,
//! inside the interpreter (`reduce .[] as $x (...)`) or inside a native
//! (`tojson` of a value whose parts are shared, `sort`, comparisons). So the
//! interpreter, the value operations and the writers of jaq-json ask
//! [`check`] as they go; it fails once the evaluation is over its deadline,
//! deeper in the stack than allowed, or over its memory budget.
//!
//! Memory is counted by the embedding program: its global allocator calls
//! [`charge`] for every allocation and release made on this thread while an
//! evaluation is metered, and operations that would make one large
//! allocation at once (string repetition, concatenation) ask [`reserve`]
//! first. All metered evaluations of the process also share one budget
//! ([`set_shared_limit`]), so that many evaluations at once stay bounded.
//!
//! Once a check fails, every later check of the same evaluation fails too,
//! so `try` cannot keep a runaway evaluation alive; infallible operations
//! (comparison, hashing) that see a failed check return early with a
//! meaningless result, and [`finish`] reports the failure, so that result
//! never leaves the evaluation.
//!
//! Without the `std` feature, nothing is metered.

#[cfg(feature = "std")]
mod imp {
    use core::cell::Cell;
    use core::sync::atomic::{AtomicIsize, Ordering};
    use std::time::Instant;

    /// Limits of one evaluation.
    #[derive(Clone, Copy, Debug)]
    pub struct Limits {
        /// Definition calls and `range` outputs ([`super::tick`]).
        pub steps: u64,
        /// When the evaluation must stop.
        pub deadline: Instant,
        /// Stack bytes the evaluation may use below the point where it started.
        pub stack_bytes: usize,
        /// Bytes the evaluation may hold allocated at once.
        pub max_bytes: usize,
    }

    /// How many checks pass between two readings of the clock.
    const CLOCK_EVERY: u32 = 64;

    #[derive(Clone, Copy)]
    struct Budget {
        steps_left: u64,
        deadline: Instant,
        stack_base: usize,
        stack_bytes: usize,
        countdown: u32,
    }

    struct Meter {
        active: Cell<bool>,
        used: Cell<isize>,
        max_bytes: Cell<isize>,
        exceeded: Cell<Option<&'static str>>,
        budget: Cell<Option<Budget>>,
    }

    std::thread_local! {
        static METER: Meter = const {
            Meter {
                active: Cell::new(false),
                used: Cell::new(0),
                max_bytes: Cell::new(isize::MAX),
                exceeded: Cell::new(None),
                budget: Cell::new(None),
            }
        };
    }

    /// Bytes held by all metered evaluations of the process.
    static SHARED_USED: AtomicIsize = AtomicIsize::new(0);
    /// Limit of [`SHARED_USED`]; `isize::MAX` when unset.
    static SHARED_LIMIT: AtomicIsize = AtomicIsize::new(isize::MAX);

    /// Why the evaluation was stopped, for the memory budget.
    pub const MEMORY: &str = "memory limit exceeded";
    /// ... for the shared memory budget.
    pub const SHARED_MEMORY: &str = "memory limit of all evaluations together exceeded";
    /// ... for the stack.
    pub const DEPTH: &str = "nesting too deep";
    /// ... for the clock.
    pub const TIME: &str = "time limit exceeded";
    /// ... for the step count.
    pub const STEPS: &str = "step limit exceeded";

    /// Limit the bytes held by all metered evaluations together.
    pub fn set_shared_limit(bytes: usize) {
        SHARED_LIMIT.store(bytes.min(isize::MAX as usize) as isize, Ordering::Relaxed);
    }

    /// Is an evaluation metered on this thread now?
    pub fn is_active() -> bool {
        METER.try_with(|m| m.active.get()).unwrap_or(false)
    }

    /// Bytes held now by all metered evaluations together.
    pub fn shared_used() -> isize {
        SHARED_USED.load(Ordering::Relaxed)
    }

    fn stack_position() -> usize {
        let marker = 0u8;
        core::hint::black_box(&marker) as *const u8 as usize
    }

    /// The state of the evaluation that [`start`] replaced.
    pub struct Saved {
        active: bool,
        used: isize,
        max_bytes: isize,
        exceeded: Option<&'static str>,
        budget: Option<Budget>,
    }

    /// Meter the evaluation that starts now on this thread.
    pub fn start(limits: Limits) -> Saved {
        METER.with(|m| {
            let saved = Saved {
                active: m.active.get(),
                used: m.used.get(),
                max_bytes: m.max_bytes.get(),
                exceeded: m.exceeded.get(),
                budget: m.budget.get(),
            };
            let max_bytes = limits.max_bytes.min(isize::MAX as usize) as isize;
            m.used.set(0);
            m.max_bytes.set(max_bytes);
            m.exceeded.set(None);
            m.budget.set(Some(Budget {
                steps_left: limits.steps,
                deadline: limits.deadline,
                stack_base: stack_position(),
                stack_bytes: limits.stack_bytes,
                countdown: CLOCK_EVERY,
            }));
            m.active.set(true);
            saved
        })
    }

    /// End the evaluation [`start`] began and put back what it replaced;
    /// the reason it was stopped, if it was.
    pub fn finish(saved: Saved) -> Result<(), &'static str> {
        METER.with(|m| {
            m.active.set(false);
            SHARED_USED.fetch_sub(m.used.get(), Ordering::Relaxed);
            let outcome = match m.exceeded.get() {
                Some(why) => Err(why),
                None => Ok(()),
            };
            m.used.set(saved.used);
            m.max_bytes.set(saved.max_bytes);
            m.exceeded.set(saved.exceeded);
            m.budget.set(saved.budget);
            m.active.set(saved.active);
            outcome
        })
    }

    fn stop(m: &Meter, why: &'static str) -> Result<(), &'static str> {
        if m.exceeded.get().is_none() {
            m.exceeded.set(Some(why));
        }
        Err(m.exceeded.get().unwrap_or(why))
    }

    fn check_in(m: &Meter, step: bool) -> Result<(), &'static str> {
        if let Some(why) = m.exceeded.get() {
            return Err(why);
        }
        let Some(mut b) = m.budget.get() else {
            return Ok(());
        };
        if b.stack_base.saturating_sub(stack_position()) > b.stack_bytes {
            return stop(m, DEPTH);
        }
        if step {
            if b.steps_left == 0 {
                return stop(m, STEPS);
            }
            b.steps_left -= 1;
        }
        b.countdown -= 1;
        if b.countdown == 0 {
            b.countdown = CLOCK_EVERY;
            if Instant::now() > b.deadline {
                m.budget.set(Some(b));
                return stop(m, TIME);
            }
        }
        m.budget.set(Some(b));
        Ok(())
    }

    /// Is the current evaluation still within its budget (stack, clock,
    /// memory)? Always `Ok` when nothing is metered.
    #[inline]
    pub fn check() -> Result<(), &'static str> {
        METER.try_with(|m| if m.active.get() { check_in(m, false) } else { Ok(()) })
            .unwrap_or(Ok(()))
    }

    /// [`check`], and spend one step of the step budget.
    #[inline]
    pub fn tick() -> Result<(), &'static str> {
        METER.try_with(|m| if m.active.get() { check_in(m, true) } else { Ok(()) })
            .unwrap_or(Ok(()))
    }

    /// May the current evaluation allocate `bytes` more? Fails (and stops
    /// the evaluation) when that would exceed its budget or the shared one.
    pub fn reserve(bytes: usize) -> Result<(), &'static str> {
        let bytes = bytes.min(isize::MAX as usize / 2) as isize;
        METER
            .try_with(|m| {
                if !m.active.get() {
                    return Ok(());
                }
                if m.used.get().saturating_add(bytes) > m.max_bytes.get() {
                    return stop(m, MEMORY);
                }
                let shared = SHARED_USED.load(Ordering::Relaxed);
                if shared.saturating_add(bytes) > SHARED_LIMIT.load(Ordering::Relaxed) {
                    return stop(m, SHARED_MEMORY);
                }
                check_in(m, false)
            })
            .unwrap_or(Ok(()))
    }

    /// Count `delta` bytes allocated (negative: released) on this thread.
    /// Called by the global allocator: it must not allocate.
    #[inline]
    pub fn charge(delta: isize) {
        let _ = METER.try_with(|m| {
            if !m.active.get() {
                return;
            }
            let used = m.used.get().saturating_add(delta);
            m.used.set(used);
            let shared = SHARED_USED.fetch_add(delta, Ordering::Relaxed).saturating_add(delta);
            if delta > 0 && m.exceeded.get().is_none() {
                if used > m.max_bytes.get() {
                    m.exceeded.set(Some(MEMORY));
                } else if shared > SHARED_LIMIT.load(Ordering::Relaxed) {
                    m.exceeded.set(Some(SHARED_MEMORY));
                }
            }
        });
    }
}

#[cfg(feature = "std")]
pub use imp::*;

/// Without `std`, nothing is metered.
#[cfg(not(feature = "std"))]
#[inline]
pub fn check() -> Result<(), &'static str> {
    Ok(())
}

/// Without `std`, nothing is metered.
#[cfg(not(feature = "std"))]
#[inline]
pub fn reserve(_bytes: usize) -> Result<(), &'static str> {
    Ok(())
}

/// Without `std`, nothing is metered.
#[cfg(not(feature = "std"))]
#[inline]
pub fn tick() -> Result<(), &'static str> {
    Ok(())
}
