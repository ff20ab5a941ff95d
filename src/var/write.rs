//! A variable's writes into the current context: [`ContextVar::set`], its
//! undoing ([`ContextVar::reset`]) and [`ContextVar::replace`].
//!
//! **Invariant:** every write goes through the core's one observed write
//! path (`write_current`), and a token resets only where it belongs: in
//! the context it was made in, or across a fork where the fork's link says
//! it crosses (see `token`).

use super::token::crosses_a_fork_here;
use super::{ContextVar, Token};
use crate::context::observers::Cause;
use crate::context::{write_current, write_current_in};
use crate::error::{ResetError, ResetFailed};
use crate::map::{Value, VarId};

impl<T: Send + Sync + 'static> ContextVar<T> {
    /// Sets the variable's value in the current context, and returns a
    /// [`Token`] that [`reset`](ContextVar::reset) uses to restore the
    /// previous value.
    ///
    /// Dropping the token does nothing: the value stays set.
    /// [`sync_scope`](ContextVar::sync_scope) and [`scope`](ContextVar::scope)
    /// are the forms that restore by themselves.
    ///
    /// ```
    /// use contextvars::ContextVar;
    ///
    /// static N: ContextVar<u32> = ContextVar::new("n");
    /// let first = N.set(1);
    /// assert_eq!(first.old_value(), None);
    /// let second = N.set(2);
    /// assert_eq!(second.old_value(), Some(&1));
    /// ```
    #[inline(always)]
    pub fn set(&self, value: T) -> Token<T> {
        let id = self.id();
        let value = Value::new(value);
        let (context, fork, old) = write_current(Some(id), Some((id, Cause::Set)), |mut w| {
            (w.context(), w.fork(), w.insert(id, value))
        });
        Token::from_parts(id, context, fork, old)
    }

    /// Restores the value the variable had before the [`set`](ContextVar::set)
    /// that made `token`; if it had none, removes it from the current context.
    ///
    /// # Errors
    ///
    /// [`ResetError::DifferentVar`] if another variable made the token;
    /// [`ResetError::DifferentContext`] if it was made in another context.
    /// On error nothing changes.
    ///
    /// ```
    /// use contextvars::{ContextVar, copy_context};
    ///
    /// static N: ContextVar<u32> = ContextVar::new("n");
    /// let token = N.set(1);
    /// N.reset(token).unwrap();
    /// assert!(N.get().is_err());
    ///
    /// let token = N.set(2);
    /// let err = copy_context().run(|| N.reset(token)).unwrap_err();
    /// assert!(err.to_string().contains("different context"));
    /// ```
    #[inline(always)]
    pub fn reset(&self, token: Token<T>) -> Result<(), ResetError> {
        self.try_reset(token).map_err(ResetFailed::into_error)
    }

    /// [`reset`](ContextVar::reset), which on error hands the token back (in
    /// the [`ResetFailed`]), so it can still be used where it belongs, as a
    /// Python token stays usable after a failed `reset`.
    ///
    /// # Errors
    ///
    /// As `reset`; nothing changes.
    ///
    /// ```
    /// use contextvars::{ContextVar, ResetError, copy_context};
    ///
    /// static N: ContextVar<u32> = ContextVar::new("n");
    /// let token = N.set(1);
    /// // In another context the token is refused, and given back ...
    /// let failed = copy_context().run(|| N.try_reset(token)).unwrap_err();
    /// assert!(matches!(failed.error(), ResetError::DifferentContext { .. }));
    /// // ... to be used where it was made.
    /// N.reset(failed.into_token()).unwrap();
    /// assert!(N.get().is_err());
    /// ```
    #[inline(always)]
    pub fn try_reset(&self, token: Token<T>) -> Result<(), ResetFailed<T>> {
        // Taken apart so that the token's fields stay in registers on the
        // way through the write; it is put together again only if refused.
        let Token {
            var_id,
            context,
            fork,
            old,
            _type: _,
        } = token;
        // The variable's id without assigning one: a variable without an id
        // made no token, and that is the mismatch path anyway.
        let id = self.raw_id();
        if var_id != id {
            let error = ResetError::DifferentVar {
                var: self.name,
                token_var: crate::ids::name_of(var_id),
            };
            let token = Token::from_parts(var_id, context, fork, old);
            return Err(ResetFailed { error, token });
        }
        // Whatever the map lets go of is returned and dropped here, after
        // the context's lock is released.
        let written = write_current_in(context, Some((id, Cause::Reset)), old, |mut w, old| {
            w.restore(id, old)
        });
        let replaced = match written {
            Ok(replaced) => replaced,
            Err(old) if crosses_a_fork_here(context, fork.as_deref(), var_id) => {
                reset_across_a_fork(id, old)
            }
            Err(old) => {
                let error = ResetError::DifferentContext { var: self.name };
                let token = Token::from_parts(var_id, context, fork, old);
                return Err(ResetFailed { error, token });
            }
        };
        if let Some(replaced) = replaced {
            // SAFETY: it was stored under this variable's id, so it is a `T`
            // (as in `value`; a token of a fork's child is accepted here only
            // for this same variable, `token.var_id == id`).
            unsafe { replaced.drop_as::<T>() };
        }
        Ok(())
    }

    /// Sets the variable's value in the current context and returns the
    /// value it replaces there (`None` if it had none; a default is not a
    /// value), as `Cell::replace` does: a [`set`](ContextVar::set) whose
    /// token is read and dropped.
    ///
    /// The old value is cloned: other contexts (copies taken before) may
    /// still hold it.
    ///
    /// ```
    /// use contextvars::ContextVar;
    ///
    /// static LEVEL: ContextVar<u32> = ContextVar::with_default("level", 42);
    /// assert_eq!(LEVEL.replace(1), None);
    /// assert_eq!(LEVEL.replace(2), Some(1));
    /// assert_eq!(LEVEL.get(), Ok(2));
    /// ```
    #[inline]
    pub fn replace(&self, value: T) -> Option<T>
    where
        T: Clone,
    {
        self.set(value).old_value().cloned()
    }
}

/// `try_reset` of a token made in another context than the current one,
/// which crosses a fork here (see `crosses_a_fork_here`): returns
/// the value it replaces.
#[cold]
#[inline(never)]
fn reset_across_a_fork(id: VarId, old: Option<Value>) -> Option<Value> {
    write_current(None, Some((id, Cause::Reset)), |mut w| w.restore(id, old))
}
