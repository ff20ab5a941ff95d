//! Dropping a [`Context`]: a plain copy lets go of its shared root with
//! one decrement; a context with values of its own drops them inside
//! itself (`Context::release`), round after round while their destructors
//! set new ones.
//!
//! **Invariant:** a context's values are dropped inside the context
//! itself, whichever thread drops its last handle and even if one of their
//! destructors panics (a panic that would leave the drop during another
//! unwinding, and abort the process, is reported instead), so no destructor writes into the context of whoever
//! happens to drop it; which of two handles on one root is the last is
//! decided atomically (`Map::let_go_shared`).

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
    /// Entering the context for this is not a switch that observers hear
    /// of: the context is going, nothing runs in it but the destructors,
    /// and a switch hook that sets a value would refill it every round.
    #[cold]
    #[inline(never)]
    fn release(&mut self) {
        debug_assert!(
            self.own_scoped().is_null(),
            "scopes end inside their context"
        );
        for _ in 0..RELEASE_ROUNDS {
            let map = std::mem::take(self.map.get_mut());
            let frame = self.frame.get_mut().take();
            if map.is_empty() && frame.is_none() {
                return;
            }
            self.run_exclusive_as(false, move || drop((map, frame)));
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
        use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
        // The values go first, in this context: a token their destructors
        // make records its fork. If a destructor panics, the values set by
        // the others of its round go too, in this context, and then the
        // link; the panic goes on after them.
        let released = catch_unwind(AssertUnwindSafe(|| {
            if self.frame.get_mut().is_some() || !self.map.get_mut().let_go_shared() {
                self.release();
            }
        }));
        if released.is_err() {
            if let Err(message) = crate::report::contain(|| self.release()) {
                // A second panic: what its round set is leaked rather than
                // dropped outside the context, and said so.
                crate::report::warn(&format!(
                    "contextvars: a destructor of context #{}'s values panicked again while the \
                     context was dropped ({message}); the {} values set during it are leaked. \
                     Catch panics inside destructors to have them dropped",
                    self.id(),
                    self.map.get_mut().len()
                ));
            }
        }
        drop(self.fork.take());
        if let Err(panic) = released {
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
