//! [`Token`], the receipt that [`ContextVar::reset`] turns back into the
//! previous value.
//!
//! **Invariant:** a token is used at most once (`reset` takes it by value),
//! and it records the context it was made in, so that it resets nowhere
//! else unless a fork's link says it crosses.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use crate::context::{ForkLink, current_fork, current_id};
use crate::map::{Value, VarId};

/// The receipt of a [`ContextVar::set`](crate::ContextVar::set): it
/// remembers the variable, the context it was set in, and the value it
/// replaced.
///
/// [`ContextVar::reset`](crate::ContextVar::reset) takes it by value, so a
/// token is used at most once; reusing one is a compile error. Dropping it
/// changes nothing.
///
/// ```compile_fail
/// use contextvars::ContextVar;
///
/// static N: ContextVar<u32> = ContextVar::new("n");
/// let token = N.set(1);
/// N.reset(token).unwrap();
/// N.reset(token).unwrap(); // error[E0382]: use of moved value: `token`
/// ```
///
/// ```
/// use contextvars::ContextVar;
///
/// static N: ContextVar<u32> = ContextVar::new("n");
/// N.set(1);
/// let token = N.set(2);
/// assert_eq!(token.old_value(), Some(&1));
/// N.reset(token).unwrap();
/// assert_eq!(N.get(), Ok(1));
/// ```
pub struct Token<T> {
    /// The variable that made it (its name is looked up by id, only for
    /// messages: a token is as small as the write it undoes needs).
    pub(super) var_id: VarId,
    pub(super) context: u64,
    /// The fork whose child made the token, if one did (see [`Fork`](crate::Fork)).
    pub(super) fork: Option<Arc<ForkLink>>,
    pub(super) old: Option<Value>,
    /// Invariant in `T`, as the variable is: a token's old value is handed
    /// back to its variable as a `T` without a check.
    pub(super) _type: PhantomData<fn(T) -> T>,
}

impl<T> Token<T> {
    /// A token of the variable `var_id` for a write in the context with id
    /// `context` (made in `fork`'s child, if any) that replaced `old`; also
    /// what a refused reset puts back together from the parts it took.
    #[inline(always)]
    pub(super) fn from_parts(
        var_id: VarId,
        context: u64,
        fork: Option<Arc<ForkLink>>,
        old: Option<Value>,
    ) -> Token<T> {
        Token {
            var_id,
            context,
            fork,
            old,
            _type: PhantomData,
        }
    }

    /// The name of the variable that made this token.
    ///
    /// ```
    /// use contextvars::ContextVar;
    ///
    /// static N: ContextVar<u32> = ContextVar::new("n");
    /// assert_eq!(N.set(1).var_name(), "n");
    /// ```
    pub fn var_name(&self) -> &'static str {
        crate::ids::name_of(self.var_id)
    }
}

/// Whether a token of variable `var`, made in the context with id `context`
/// (in a fork's child, if `fork` is that fork's link), belongs in the
/// current context all the same, though that is another one: made in a
/// fork's child whose merge here applied the variable's value, or made in
/// the parent of the fork whose child is current (see [`Fork`](crate::Fork)).
/// Takes the token's fields rather than the token, which `reset` keeps
/// apart until it knows.
#[cold]
#[inline(never)]
pub(super) fn crosses_a_fork_here(context: u64, fork: Option<&ForkLink>, var: VarId) -> bool {
    let here = current_id();
    let merged_here = fork.is_some_and(|link| Some(link.parent) == here && link.applied(var));
    merged_here || current_fork().is_some_and(|link| link.parent == context)
}

impl<T: 'static> Token<T> {
    /// The value the variable had before the `set`; `None` if it had none
    /// (Python's `Token.MISSING`).
    ///
    /// ```
    /// use contextvars::ContextVar;
    ///
    /// static N: ContextVar<u32> = ContextVar::with_default("n", 5);
    /// // A default is not a value: the token records that there was none.
    /// assert_eq!(N.set(1).old_value(), None);
    /// ```
    pub fn old_value(&self) -> Option<&T> {
        self.old.as_ref().map(|v| {
            v.downcast::<T>()
                .expect("a variable's id always maps to its type")
        })
    }
}

impl<T: fmt::Debug + 'static> fmt::Debug for Token<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("var", &self.var_name())
            .field("old_value", &self.old_value())
            .finish_non_exhaustive()
    }
}
