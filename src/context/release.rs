//! Dropping a [`Context`]: a plain copy lets go of its shared root with
//! one decrement; a context with values of its own drops them inside
//! itself (`Context::release`), round after round while their destructors
//! set new ones.
//!
//! **Invariant:** a context's values are dropped inside the context
//! itself, whichever thread drops its last handle and even if some of
//! their destructors panic (the first panic goes on to the dropper, unless
//! the thread is already unwinding and it would abort the process; the
//! others are reported), so no destructor writes into the context of
//! whoever happens to drop it; which of two handles on one root is the
//! last is decided atomically (`Map::let_go_shared`).

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

use super::state::Context;

/// How many times dropping a context empties it again when destructors of
/// its values keep setting new values in it (see `Context::release`).
const RELEASE_ROUNDS: usize = 16;

impl Context {
    /// Drops the context's values inside the context itself, so that their
    /// destructors read and write this context, never the one the dropper
    /// happens to be in (a worker's, a caller's). They run after the values
    /// were taken out: they read defaults, and what they set is dropped in
    /// turn, round after round until nothing is left.
    ///
    /// A destructor's panic ends its round only: the round's other values
    /// are still dropped (a slice's drop goes on past a panicking element),
    /// and what they set goes in the next round. The first panic is handed
    /// back for the caller to pass on; any later one is reported.
    ///
    /// Entering the context for this is not a switch that observers hear
    /// of: the context is going, nothing runs in it but the destructors,
    /// and a switch hook that sets a value would refill it every round.
    #[cold]
    #[inline(never)]
    fn release(&mut self) -> Option<Box<dyn Any + Send>> {
        debug_assert!(
            self.own_scoped().is_null(),
            "scopes end inside their context"
        );
        let mut first_panic = None;
        for _ in 0..RELEASE_ROUNDS {
            let map = std::mem::take(self.map.get_mut());
            let frame = self.frame.get_mut().take();
            if map.is_empty() && frame.is_none() {
                return first_panic;
            }
            let round = catch_unwind(AssertUnwindSafe(|| {
                self.run_exclusive_as(false, move || drop((map, frame)));
            }));
            if let Err(panic) = round {
                if first_panic.is_none() {
                    first_panic = Some(panic);
                } else {
                    crate::report::warn(&format!(
                        "contextvars: another destructor of context #{}'s values panicked while \
                         the context was dropped ({}); only the first panic goes on",
                        self.id(),
                        crate::report::message_of(&*panic)
                    ));
                    crate::report::drop_payload(panic);
                }
            }
        }
        // Destructors that set values whose destructors set values, without
        // end: stop rather than loop forever, and say so.
        let left = std::mem::take(self.map.get_mut());
        crate::report::warn(&format!(
            "contextvars: the values of context #{} kept setting new values while being dropped \
             ({} left after {RELEASE_ROUNDS} rounds); they are leaked",
            self.id(),
            left.len()
        ));
        std::mem::forget(left);
        first_panic
    }
}

impl Drop for Context {
    #[inline]
    fn drop(&mut self) {
        // A plain context whose root another map still holds (a copy that
        // never wrote) drops no value: one decrement, no switch. Decided
        // atomically: of a context and its copy dropped at once, one
        // releases the values.
        if self.frame.get_mut().is_none()
            && self.fork.is_none()
            && self.map.get_mut().let_go_shared()
        {
            return;
        }
        self.drop_slow();
    }
}

impl Context {
    /// The drop of a context with values of its own, a generator's frame or
    /// a fork's link (the fields are `ManuallyDrop`: this lets go of each).
    #[cold]
    #[inline(never)]
    fn drop_slow(&mut self) {
        // The values go first, in this context: a token their destructors
        // make records its fork. Then the link, also after a panic.
        let panic = if self.frame.get_mut().is_some() || !self.map.get_mut().let_go_shared() {
            self.release()
        } else {
            None
        };
        drop(self.fork.take());
        if let Some(panic) = panic {
            if !std::thread::panicking() {
                resume_unwind(panic);
            }
            // Dropped while the thread unwinds from another panic: a
            // second one leaving this drop would abort the process.
            crate::report::warn(&format!(
                "contextvars: a destructor of context #{}'s values panicked while the thread was \
                 already unwinding ({}); that panic is not propagated, to keep the process alive. \
                 Catch panics inside destructors to see them",
                self.id(),
                crate::report::message_of(&*panic)
            ));
            crate::report::drop_payload(panic);
        }
        debug_assert!(self.frame.get_mut().is_none(), "`release` takes the frame");
    }
}
