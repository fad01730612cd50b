//! Bounded evaluation: every call of a definition and every output of
//! `range` spends one step of the evaluation's [`Budget`] (steps, a
//! wall-clock deadline, a stack-depth limit).

use std::cell::Cell;
use std::time::{Duration, Instant};

use jaq_core::box_iter::box_once;
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
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            steps: 250_000,
            time: Duration::from_secs(1),
            stack_bytes: 4 << 20,
        }
    }
}

/// Stack size of the threads that evaluate jq (the agent's runtime workers).
///
/// A runaway loop can build a value nested as deep as the step budget
/// (`[while(true; [.])]`), and dropping it recurses once per level; this
/// much stack (virtual memory, committed only when touched) absorbs that
/// with room to spare. Evaluating on a smaller stack (a default 2 MiB test
/// thread) is fine for ordinary expressions.
pub const EVAL_THREAD_STACK: usize = 64 << 20;

/// What is left of the current evaluation's budget on this thread.
pub(super) struct Meter {
    steps_left: u64,
    deadline: Instant,
    stack_base: usize,
    stack_bytes: usize,
    exceeded: Option<&'static str>,
}

thread_local! {
    pub(super) static METER: Cell<Option<Meter>> = const { Cell::new(None) };
}

pub(super) fn stack_position() -> usize {
    let marker = 0u8;
    std::hint::black_box(&marker) as *const u8 as usize
}

/// Spend one step of the current evaluation's budget.
pub(super) fn tick() -> Result<(), &'static str> {
    METER.with(|cell| {
        let Some(mut m) = cell.take() else {
            return Ok(());
        };
        let result = if let Some(why) = m.exceeded {
            Err(why)
        } else if m.steps_left == 0 {
            Err("step limit exceeded")
        } else if m.stack_base.saturating_sub(stack_position()) > m.stack_bytes {
            Err("recursion too deep")
        } else if m.steps_left % 1024 == 0 && Instant::now() > m.deadline {
            Err("time limit exceeded")
        } else {
            m.steps_left -= 1;
            Ok(())
        };
        if let Err(why) = result {
            // Once exceeded, every later step fails too, so `try` cannot
            // keep a runaway loop alive.
            m.exceeded = Some(why);
        }
        cell.set(Some(m));
        result
    })
}

pub(super) fn budget_error<'a>(why: &'static str) -> Exn<'a, Val> {
    Exn::from(JaqError::new(Val::from(format!("evaluation stopped: {why}"))))
}

/// The identity filter `__tick`, spending one step; usable in paths and
/// updates so that it can prefix any definition.
pub(super) fn tick_native() -> Fun<D> {
    let native = Native::<D>::new(|cv| match tick() {
        Ok(()) => box_once(Ok(cv.1)),
        Err(why) => box_once(Err(budget_error(why))),
    })
    .with_paths(|cv| match tick() {
        Ok(()) => box_once(Ok(cv.1)),
        Err(why) => box_once(Err(budget_error(why))),
    })
    .with_update(|cv, f| match tick() {
        Ok(()) => f(cv.1),
        Err(why) => box_once(Err(budget_error(why))),
    });
    ("__tick", v(0), native)
}

/// Meter this thread's evaluation by `budget`; returns the meter it
/// replaces, for [`restore`].
pub(super) fn start(budget: Budget) -> Option<Meter> {
    METER.with(|cell| {
        cell.replace(Some(Meter {
            steps_left: budget.steps,
            deadline: Instant::now() + budget.time,
            stack_base: stack_position(),
            stack_bytes: budget.stack_bytes,
            exceeded: None,
        }))
    })
}

/// Put back the meter [`start`] replaced.
pub(super) fn restore(previous: Option<Meter>) {
    METER.with(|cell| cell.set(previous));
}
