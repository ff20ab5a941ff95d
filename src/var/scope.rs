//! A variable's scoped values: [`ContextVar::sync_scope`] around a closure
//! and [`ContextVar::scope`] around a future.
//!
//! **Invariant:** a scope's value is visible exactly while its closure (or
//! each poll of its future) runs, and the previous value is back when it
//! ends, also on unwinding; observers hear of the start and the end.

use super::ContextVar;
use crate::context::observers::{ScopeNotice, vars_observed};
use crate::context::{scoped, scoped_lent};
use crate::future::ScopeFuture;
use crate::map::Value;

/// What the closure of [`ContextVar::sync_scope`] may return: any `Unpin`
/// type, which is nearly every type.
///
/// The futures of `async` blocks and `async fn`s are not `Unpin`, so a
/// closure that returns one, `VAR.sync_scope(v, || async { .. })`, which
/// would end the scope before the future runs and read no value in it, does
/// not compile. For a value that holds while a future runs, use
/// [`ContextVar::scope`]. (A future that is `Unpin`, such as a
/// `Pin<Box<dyn Future>>` or a `JoinHandle`, is not caught: the bound
/// cannot tell a future from another value, `Unpin` only catches the common
/// case.)
///
/// ```
/// use contextvars::ContextVar;
///
/// static N: ContextVar<u32> = ContextVar::new("n");
/// let seen: Result<u32, _> = N.sync_scope(1, || N.get());
/// assert_eq!(seen, Ok(1));
/// ```
#[diagnostic::on_unimplemented(
    message = "`sync_scope`'s closure returns `{Self}`, a future that would run after the scope has ended",
    label = "the value is gone before this future is polled",
    note = "to hold a value while a future runs, use `VAR.scope(value, future).await`"
)]
pub trait SyncScopeOutput {}

impl<R: Unpin> SyncScopeOutput for R {}

impl<T: Send + Sync + 'static> ContextVar<T> {
    /// Sets the variable to `value` for the duration of `f`, then resets it,
    /// also if `f` panics: `tokio::task_local!`'s `sync_scope`. For a value
    /// that holds while a future runs, [`scope`](ContextVar::scope).
    ///
    /// Everything inside `f` sees the value as if it had been `set`: reads,
    /// copies, spawned work, other threads reading a shared context. It is
    /// the cheapest write: the value stays beside the context's map rather
    /// than in it, until a copy or a write inside `f` needs the map.
    ///
    /// ```
    /// use contextvars::ContextVar;
    ///
    /// static DEPTH: ContextVar<u32> = ContextVar::with_default("depth", 0);
    /// let inner = DEPTH.sync_scope(1, || DEPTH.sync_scope(2, || DEPTH.get()));
    /// assert_eq!(inner, Ok(2));
    /// assert_eq!(DEPTH.get(), Ok(0));
    /// ```
    ///
    /// A closure that returns a future would leave the scope before the
    /// future runs, so it does not compile (see [`SyncScopeOutput`]):
    ///
    /// ```compile_fail
    /// use contextvars::ContextVar;
    ///
    /// static DEPTH: ContextVar<u32> = ContextVar::with_default("depth", 0);
    /// let task = DEPTH.sync_scope(1, || async { DEPTH.get() }); // error[E0277]
    /// ```
    #[inline(always)]
    pub fn sync_scope<R: SyncScopeOutput>(&self, value: T, f: impl FnOnce() -> R) -> R {
        if vars_observed() {
            return self.scope_observed(value, f);
        }
        self.scope_unobserved(value, f)
    }

    /// `sync_scope` with observers of some variable installed: tells this
    /// variable's observers of the scope's start and end.
    #[cold]
    #[inline(never)]
    fn scope_observed<R>(&self, value: T, f: impl FnOnce() -> R) -> R {
        let Some(notice) = ScopeNotice::new(self.id(), self.addr()) else {
            return self.scope_unobserved(value, f);
        };
        self.scope_unobserved(value, || {
            let _body = notice.begun();
            f()
        })
    }

    /// `sync_scope`, without telling observers.
    #[inline(always)]
    fn scope_unobserved<R>(&self, value: T, f: impl FnOnce() -> R) -> R {
        // Balanced by construction, so never a misuse (see `misuse`), and
        // the value need not even enter the map (`scoped`).
        scoped(self.id(), self.addr(), value, f)
    }

    /// Sets the variable to `value` while `future` runs: during every poll
    /// and during its drop, on any executor, whichever thread polls it.
    /// `tokio::task_local!`'s `scope`. Between polls the value is gone, and
    /// the context the future is polled in is as it was.
    ///
    /// Each poll is a [`sync_scope`](ContextVar::sync_scope) of the value
    /// in the context the future is polled in (the task's), so the future's
    /// writes to other variables are the task's, as those of any future
    /// awaited inline. A `set` of this same variable inside the future lasts
    /// to the end of that poll, as one inside `sync_scope` lasts to the end
    /// of the scope; nest another `scope` to change the value for a part of
    /// the future.
    ///
    /// ```
    /// use contextvars::ContextVar;
    ///
    /// static REQUEST_ID: ContextVar<u64> = ContextVar::new("request_id");
    ///
    /// async fn handle() -> u64 {
    ///     tokio::task::yield_now().await; // held across the `.await`
    ///     REQUEST_ID.get().unwrap()
    /// }
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// assert_eq!(REQUEST_ID.scope(7, handle()).await, 7);
    /// assert!(REQUEST_ID.get().is_err());
    /// # });
    /// ```
    ///
    /// It takes a future, not a closure: `scope(v, || async { .. })` does
    /// not compile.
    ///
    /// ```compile_fail
    /// use contextvars::ContextVar;
    ///
    /// static REQUEST_ID: ContextVar<u64> = ContextVar::new("request_id");
    /// let _ = REQUEST_ID.scope(7, || async { REQUEST_ID.get() }); // error[E0277]
    /// ```
    pub fn scope<F: IntoFuture>(&self, value: T, future: F) -> ScopeFuture<'_, T, F::IntoFuture> {
        ScopeFuture::new(self, Value::new(value), future.into_future())
    }

    /// Runs `f` inside a `sync_scope` of the value `slot` lends (a
    /// [`ScopeFuture`]'s, for one poll or its drop); the scope's end puts
    /// the value back into `slot`, also if `f` panics.
    #[inline]
    pub(crate) fn scope_lent<R>(&self, slot: &mut Option<Value>, f: impl FnOnce() -> R) -> R {
        let Some(value) = slot.take() else {
            // Only a scope whose end could not give the value back leaves
            // the slot empty, and every end does; run `f` all the same.
            return f();
        };
        if vars_observed() {
            return self.scope_lent_observed(value, slot, f);
        }
        scoped_lent::<T, R>(self.id(), self.addr(), value, slot, f)
    }

    /// `scope_lent` with observers of some variable installed, as
    /// `scope_observed`: each poll of the future is one observed scope.
    #[cold]
    #[inline(never)]
    fn scope_lent_observed<R>(
        &self,
        value: Value,
        back: &mut Option<Value>,
        f: impl FnOnce() -> R,
    ) -> R {
        let (id, addr) = (self.id(), self.addr());
        let Some(notice) = ScopeNotice::new(id, addr) else {
            return scoped_lent::<T, R>(id, addr, value, back, f);
        };
        scoped_lent::<T, R>(id, addr, value, back, || {
            let _body = notice.begun();
            f()
        })
    }
}
