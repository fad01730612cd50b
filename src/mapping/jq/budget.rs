//! Bounded evaluation: every evaluation runs under a [`Budget`] of steps,
//! wall-clock time, stack depth and memory, kept by the meter of the
//! vendored jaq (`jaq_core::meter`). Every call of a definition and every
//! output of `range` spends one step; the interpreter, the value
//! operations and the JSON writer check the clock, the stack and the
//! memory as they go; the process's allocator ([`MeteredAlloc`]) counts
//! the bytes each evaluation holds.

use std::alloc::{GlobalAlloc, Layout, System};
use std::time::{Duration, Instant};

use jaq_core::box_iter::box_once;
use jaq_core::meter;
use jaq_core::native::{v, Fun};
use jaq_core::{Error as JaqError, Exn, Native};

use super::{Val, D};

/// Limits of one evaluation.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Definition calls and `range` outputs.
    pub steps: u64,
    /// Wall-clock time.
    pub time: Duration,
    /// Stack bytes the evaluation may use below its starting point.
    pub stack_bytes: usize,
    /// Bytes the evaluation may hold allocated at once (`AGENT_JQ_MAX_BYTES`).
    pub max_bytes: usize,
}

/// Default of `AGENT_JQ_MAX_BYTES` (see the setting).
pub const DEFAULT_MAX_BYTES: usize = crate::settings::DEFAULT_JQ_MAX_BYTES;

/// All evaluations running at once may hold this many times one
/// evaluation's budget ([`set_max_bytes`]); evaluations run on the runtime's
/// workers, so without this bound the total would grow with the cores.
pub const SHARED_BUDGETS: usize = 4;

impl Default for Budget {
    fn default() -> Self {
        Budget {
            steps: 250_000,
            time: Duration::from_secs(1),
            stack_bytes: 4 << 20,
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

/// Bound the memory of all evaluations together by [`SHARED_BUDGETS`] times
/// `per_evaluation` (set once at start-up from `AGENT_JQ_MAX_BYTES`).
pub fn set_max_bytes(per_evaluation: usize) {
    meter::set_shared_limit(per_evaluation.saturating_mul(SHARED_BUDGETS));
}

/// Stack size of the threads that evaluate jq (the agent's runtime workers).
///
/// A runaway loop can build a value nested as deep as the step budget
/// (`[while(true; [.])]`), and dropping it recurses once per level; this
/// much stack (virtual memory, committed only when touched) absorbs that
/// with room to spare. Evaluating on a smaller stack (a default 2 MiB test
/// thread) is fine for ordinary expressions.
pub const EVAL_THREAD_STACK: usize = 64 << 20;

/// The process's allocator: the system's, counting what each metered
/// evaluation allocates and releases on its thread (`jaq_core::meter`).
/// Outside an evaluation the count costs one thread-local read.
pub struct MeteredAlloc;

// SAFETY: every call is forwarded unchanged to the system allocator; the
// meter only counts (it neither allocates nor panics).
unsafe impl GlobalAlloc for MeteredAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            meter::charge(layout.size() as isize);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            meter::charge(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        meter::charge(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            meter::charge(new_size as isize - layout.size() as isize);
        }
        p
    }
}

pub(super) fn budget_error<'a>(why: &'static str) -> Exn<'a, Val> {
    Exn::from(JaqError::new(Val::from(format!("evaluation stopped: {why}"))))
}

/// The identity filter `__tick`, spending one step (after each output of
/// `range`; calls of definitions spend theirs in the interpreter); usable in
/// paths and updates.
pub(super) fn tick_native() -> Fun<D> {
    let native = Native::<D>::new(|cv| match meter::tick() {
        Ok(()) => box_once(Ok(cv.1)),
        Err(why) => box_once(Err(budget_error(why))),
    })
    .with_paths(|cv| match meter::tick() {
        Ok(()) => box_once(Ok(cv.1)),
        Err(why) => box_once(Err(budget_error(why))),
    })
    .with_update(|cv, f| match meter::tick() {
        Ok(()) => f(cv.1),
        Err(why) => box_once(Err(budget_error(why))),
    });
    ("__tick", v(0), native)
}

/// The meter of one evaluation on this thread, from [`Metered::start`] to
/// [`Metered::finish`]. Dropped without `finish` (a panic inside the
/// evaluation), it still ends the evaluation's meter, so that the thread's
/// later allocations are not counted against a dead evaluation and the
/// budget shared by all evaluations does not keep its bytes.
pub(super) struct Metered(Option<meter::Saved>);

impl Metered {
    /// Meter this thread's evaluation by `budget`.
    pub(super) fn start(budget: Budget) -> Metered {
        Metered(Some(meter::start(meter::Limits {
            steps: budget.steps,
            deadline: Instant::now() + budget.time,
            stack_bytes: budget.stack_bytes,
            max_bytes: budget.max_bytes,
        })))
    }

    /// End the evaluation: why it was stopped, if it was.
    pub(super) fn finish(mut self) -> Result<(), &'static str> {
        self.0.take().map_or(Ok(()), meter::finish)
    }
}

impl Drop for Metered {
    fn drop(&mut self) {
        if let Some(saved) = self.0.take() {
            let _ = meter::finish(saved);
        }
    }
}
