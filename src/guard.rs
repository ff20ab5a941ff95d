//! [`SetGuard`]: a `set` that resets when the guard drops, Python 3.14's
//! `with var.set(v):` done the Rust way.
//!
//! A guard is a [`Token`] that resets itself: `set_scoped` is `set`, and the
//! drop is `reset`, through the one write path. It does not use `scope`'s
//! list of scoped values (`context::scoped`), which needs strictly nested
//! ends; guards may be dropped in any order, and each restores its own old
//! value, as resetting tokens in that order would.
//!
//! **Invariant:** a guard writes only the context it was made in. The
//! token's context id is checked at the drop, as `reset` checks it; in any
//! other context (another thread's, another task's, a copy) the drop changes
//! nothing and reports the misuse with a warning that names the variable.
//! So the guard may be `Send` (held across `.await` in a task that moves
//! between worker threads, whose context travels with it) without ever
//! corrupting a context it was not made in. The drop never panics: a drop
//! runs while unwinding and in thread-locals' destructors, where a panic
//! aborts the process.

use std::fmt;

use crate::{ContextVar, ResetError, ResetFailed, Token};

/// The guard of [`ContextVar::set_scoped`]: while it lives the variable has
/// the value it set; dropping it restores the value before, as
/// [`ContextVar::reset`] does.
///
/// Guards dropped out of order each restore their own old value, exactly as
/// the tokens would (so the last one dropped decides what is left: drop them
/// in reverse order to get the value before the first).
///
/// It is `Send`, so it can be held across `.await` in a task spawned with
/// this crate's helpers (or any future polled with
/// [`in_context`](crate::future::FutureExt::in_context)): the task's
/// context is entered around every poll, on whichever thread. Dropped in a
/// context other than its own, it changes nothing there, and its own
/// context keeps the value; the misuse is reported as a warning that names
/// the variable (through `tracing` with that feature, else on stderr). It
/// does not panic: a drop also runs while a panic unwinds and in a
/// thread-local's destructor at thread exit, where a second panic aborts
/// the process. [`reset`](SetGuard::reset) is the form that returns the
/// error.
///
/// ```
/// use contextvars::ContextVar;
///
/// static USER: ContextVar<&'static str> = ContextVar::with_default("user", "anonymous");
///
/// fn handle() -> &'static str {
///     let _user = USER.set_scoped("ada");
///     USER.get().unwrap()
/// } // `_user` drops here: back to the default
///
/// assert_eq!(handle(), "ada");
/// assert_eq!(USER.get(), Ok("anonymous"));
/// ```
#[must_use = "the value is reset as soon as the guard is dropped"]
pub struct SetGuard<'a, T: Send + Sync + 'static> {
    var: &'a ContextVar<T>,
    /// `None` once the guard was defused (`into_token`) or reset by hand.
    token: Option<Token<T>>,
}

impl<T: Send + Sync + 'static> ContextVar<T> {
    /// Sets the variable's value in the current context until the returned
    /// guard is dropped; the drop restores the value before, as
    /// [`reset`](ContextVar::reset) does. The write is a [`set`](ContextVar::set)
    /// (the misuse check included).
    ///
    /// Unlike [`sync_scope`](ContextVar::sync_scope), the value stays set for the rest
    /// of the enclosing block, across `.await` points included.
    ///
    /// ```
    /// use contextvars::ContextVar;
    ///
    /// static DEPTH: ContextVar<u32> = ContextVar::with_default("depth", 0);
    ///
    /// let outer = DEPTH.set_scoped(1);
    /// let inner = DEPTH.set_scoped(2);
    /// assert_eq!(DEPTH.get(), Ok(2));
    /// // Out of order: each guard restores what was there before its own set.
    /// drop(outer);
    /// assert_eq!(DEPTH.get(), Ok(0));
    /// drop(inner);
    /// assert_eq!(DEPTH.get(), Ok(1));
    /// ```
    pub fn set_scoped(&self, value: T) -> SetGuard<'_, T> {
        SetGuard {
            var: self,
            token: Some(self.set(value)),
        }
    }
}

impl<'a, T: Send + Sync + 'static> SetGuard<'a, T> {
    /// The value the variable had before the guard's `set`; `None` if it had
    /// none.
    ///
    /// ```
    /// use contextvars::ContextVar;
    ///
    /// static N: ContextVar<u32> = ContextVar::new("n");
    /// let _one = N.set_scoped(1);
    /// let two = N.set_scoped(2);
    /// assert_eq!(two.old_value(), Some(&1));
    /// ```
    pub fn old_value(&self) -> Option<&T> {
        self.token.as_ref().and_then(Token::old_value)
    }

    /// Resets now, as the drop would, but returns the error instead of
    /// panicking; on error the token comes back inside it (see
    /// [`ContextVar::try_reset`]).
    ///
    /// # Errors
    ///
    /// [`ResetError::DifferentContext`] if the current context is not the
    /// one the guard was made in; nothing changes.
    ///
    /// ```
    /// use contextvars::{copy_context, ContextVar, ResetError};
    ///
    /// static N: ContextVar<u32> = ContextVar::new("n");
    /// let guard = N.set_scoped(1);
    /// let failed = copy_context().run(|| guard.reset()).unwrap_err();
    /// assert!(matches!(failed.error(), ResetError::DifferentContext { .. }));
    /// N.reset(failed.into_token()).unwrap(); // where it belongs
    /// assert!(N.get().is_err());
    /// ```
    pub fn reset(mut self) -> Result<(), ResetFailed<T>> {
        let token = self.token.take().expect("a live guard holds its token");
        self.var.try_reset(token)
    }

    /// Defuses the guard: the value stays set, and the token is yours (for a
    /// later [`reset`](ContextVar::reset), or to drop).
    ///
    /// ```
    /// use contextvars::ContextVar;
    ///
    /// static N: ContextVar<u32> = ContextVar::new("n");
    /// let token = N.set_scoped(1).into_token();
    /// assert_eq!(N.get(), Ok(1));
    /// N.reset(token).unwrap();
    /// assert!(N.get().is_err());
    /// ```
    pub fn into_token(mut self) -> Token<T> {
        self.token.take().expect("a live guard holds its token")
    }
}

impl<T: Send + Sync + 'static> Drop for SetGuard<'_, T> {
    fn drop(&mut self) {
        let Some(token) = self.token.take() else {
            return;
        };
        let Err(failed) = self.var.try_reset(token) else {
            return;
        };
        // Only `DifferentContext` can happen (the variable made the token).
        // The other context is untouched; the token (and the old value it
        // holds) is dropped here, so the guard's own context keeps its value.
        let error: &ResetError = failed.error();
        let message = format!(
            "contextvars: the guard of `{}` was dropped in another context than the one it was \
             set in, so it reset nothing ({error}); drop a guard in the context, task or thread \
             that made it, or use `into_token` and `reset` where it belongs",
            self.var.name()
        );
        crate::report::warn_var(self.var.name(), &message);
        drop(failed);
    }
}

impl<T: fmt::Debug + Send + Sync + 'static> fmt::Debug for SetGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SetGuard")
            .field("var", &self.var.name())
            .field("old_value", &self.old_value())
            .finish()
    }
}
