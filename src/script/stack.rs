//! How deep a script may go. Rhai evaluates recursively on the thread that runs it, and a
//! thread whose stack overflows aborts the whole process: one user's script would stop the
//! gate, which would then crash again on the same event after a restart. Two bounds keep a
//! run on its own stack:
//!
//! - A run may take [`RUN_STACK`] below the point where it started. The engine's progress
//!   callback, called at every expression and statement, fails the run past that point
//!   ([`too_deep`]). The call-depth limit alone cannot promise this: what one level takes
//!   depends on what the script nests in it (measured on a 2 MiB tokio thread, release build:
//!   332 levels of a plain recursive function, 195 with loops and blocks in each level, 25
//!   with 28 calls nested as arguments in each level; a debug build takes 5 to 8 times more
//!   stack a level).
//! - The call and expression depths of gate.yaml are capped at [`MAX_CALL_DEPTH`] and
//!   [`MAX_EXPR_DEPTH`]. Parsing is not watched by the callback, and nested parentheses
//!   overflowed a 2 MiB thread at 1940 (release) and 245 (debug) levels.
//!
//! Runs execute on tokio's worker and blocking threads and on the main thread of the CLI:
//! each has at least 2 MiB of stack, of which a run may take half; the other half is for what
//! called the run and for what the engine does between two calls of the callback.

use crate::config::ScriptLimits;
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};

/// The stack one run (or a compile that runs a module's top level) may take.
pub const RUN_STACK: usize = 1024 * 1024;

/// The stack of the gate's runtime threads, where runs go on. Nested data (a map in a map in a
/// map…) is cloned and dropped by Rhai's own code, one level a call, where the callback never
/// runs: on a 2 MiB thread `let a = #{}; for i in 0..10000 { a = #{x: a}; }` overflowed it and
/// aborted the gate. The run's time and operation limits bound how deep data can get within
/// this (the memory is only reserved; pages are taken as they are touched).
pub const THREAD_STACK: usize = 64 * 1024 * 1024;
/// The largest `scripts.max_call_depth` the gate uses; larger values are lowered to it.
pub const MAX_CALL_DEPTH: usize = 128;
/// The largest `scripts.max_expr_depth` the gate uses; larger values are lowered to it.
pub const MAX_EXPR_DEPTH: usize = 128;

thread_local! {
    /// The lowest stack address the script running on this thread may reach; 0: none runs.
    static FLOOR: Cell<usize> = const { Cell::new(0) };
}

/// Where this thread's stack is now. Stacks grow down on every platform the gate builds for.
#[inline(always)]
fn here() -> usize {
    let marker = 0u8;
    std::hint::black_box(&marker) as *const u8 as usize
}

/// While it lives, what runs on this thread may take [`RUN_STACK`] below the point where it
/// was made.
pub(super) struct Guard(usize);

impl Guard {
    pub(super) fn enter() -> Guard {
        let previous = FLOOR.with(Cell::get);
        FLOOR.with(|f| f.set(here().saturating_sub(RUN_STACK)));
        Guard(previous)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        FLOOR.with(|f| f.set(self.0));
    }
}

/// Whether the script running on this thread went below its floor: then why it must stop.
#[inline]
pub(super) fn too_deep() -> Option<rhai::Dynamic> {
    if here() >= FLOOR.with(Cell::get) {
        return None;
    }
    Some(
        format!(
            "the run went too deep: its nested calls and expressions need more than the {} KiB of stack a run may use",
            RUN_STACK / 1024
        )
        .into(),
    )
}

/// `limits` with the depths capped ([`MAX_CALL_DEPTH`], [`MAX_EXPR_DEPTH`]); a warning says
/// so once per process.
pub(super) fn capped(limits: &ScriptLimits) -> ScriptLimits {
    static WARNED: AtomicBool = AtomicBool::new(false);
    let over = limits.max_call_depth > MAX_CALL_DEPTH || limits.max_expr_depth > MAX_EXPR_DEPTH;
    if over && !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            max_call_depth = limits.max_call_depth,
            max_expr_depth = limits.max_expr_depth,
            cap_call_depth = MAX_CALL_DEPTH,
            cap_expr_depth = MAX_EXPR_DEPTH,
            "scripts: depth limits above what a run's stack allows are lowered to the caps"
        );
    }
    ScriptLimits {
        max_call_depth: limits.max_call_depth.min(MAX_CALL_DEPTH),
        max_expr_depth: limits.max_expr_depth.min(MAX_EXPR_DEPTH),
        ..limits.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depths_are_capped_and_the_rest_kept() {
        let l = ScriptLimits {
            max_call_depth: 100_000,
            max_expr_depth: 100,
            max_operations: 7,
            ..ScriptLimits::default()
        };
        let c = capped(&l);
        assert_eq!(
            (c.max_call_depth, c.max_expr_depth, c.max_operations),
            (MAX_CALL_DEPTH, 100, 7)
        );
    }

    #[test]
    fn the_floor_holds_only_while_a_guard_lives() {
        // A frame far below the floor.
        fn deep(n: usize) -> bool {
            let pad = std::hint::black_box([0u8; 1024]);
            if n == 0 {
                too_deep().is_some()
            } else {
                deep(n - 1) || pad[0] == 1
            }
        }
        // On a thread with room to go below the floor without overflowing.
        let t = std::thread::Builder::new().stack_size(16 * RUN_STACK);
        t.spawn(|| {
            assert!(too_deep().is_none(), "no guard: nothing to hold to");
            {
                let _g = Guard::enter();
                assert!(too_deep().is_none());
                assert!(deep(RUN_STACK / 1024 + 16));
            }
            assert!(too_deep().is_none());
        })
        .unwrap()
        .join()
        .unwrap();
    }
}
