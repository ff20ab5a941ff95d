//! [`ContextVar`], the key to a value in the current context, and [`Token`],
//! the receipt that [`ContextVar::reset`] turns back into the previous value.
//!
//! **Invariant:** a variable's id is assigned once, from a process-wide
//! counter, and never changes or repeats; it is the only thing a context
//! knows a variable by, so the id fixes the value's type and a stored value
//! always downcasts to its variable's `T`. That holds because the type is
//! fixed too: `ContextVar<T>` and `Token<T>` are invariant in `T`, so no
//! coercion turns a variable of one type into a variable of a related one
//! (a `for<'a> fn(&'a X)` into a `fn(&'static X)`, say) that would store,
//! under the same id, values that read as the other type.

use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};

use std::sync::Arc;

use crate::context::observers::{Cause, ScopeNotice, vars_observed};
use crate::context::{
    ForkLink, current_fork, current_id, read_current, scoped, scoped_lent, write_current,
};
use crate::error::{LookupError, ResetError, ResetFailed};
use crate::future::ScopeFuture;
use crate::ids::FmtValue;
use crate::map::{Value, VarId};

/// A context variable: a key to a value that lives in the current
/// [`Context`](crate::Context), not in the variable.
///
/// Declare it once, normally as a `static`, with a name and an optional
/// default. Two variables with the same name are different variables.
///
/// ```
/// use contextvars::ContextVar;
///
/// static REQUEST_ID: ContextVar<u64> = ContextVar::new("request_id");
/// static LEVEL: ContextVar<u32> = ContextVar::with_default("level", 42);
///
/// assert!(REQUEST_ID.get().is_err());
/// assert_eq!(LEVEL.get(), Ok(42));
///
/// let token = REQUEST_ID.set(1);
/// assert_eq!(REQUEST_ID.get(), Ok(1));
/// REQUEST_ID.reset(token).unwrap();
/// assert!(REQUEST_ID.get().is_err());
/// ```
pub struct ContextVar<T> {
    name: &'static str,
    default: Option<T>,
    /// 0 until first use; see the module invariant.
    id: AtomicU64,
    /// Whether spawned work gets this variable's value (see
    /// [`not_inherited`](ContextVar::not_inherited)); recorded in the id.
    inherited: bool,
    /// Formats this variable's values for `Context::entries`, if declared
    /// with [`debuggable`](ContextVar::debuggable); recorded with the name.
    fmt: Option<FmtValue>,
    /// The crate's own state, left out of a context's listing (see
    /// `internal`); recorded with the name.
    internal: bool,
    /// Makes the variable invariant in `T`. Reads downcast the stored value
    /// to `T` without a check, so a `&ContextVar<T>` must never coerce to a
    /// `&ContextVar<U>` of a related type (`default: Option<T>` alone would
    /// make it covariant: a `for<'a> fn(&'a X)` variable would become a
    /// `fn(&'static X)` one, and a `set` through it would store a function
    /// that reads as the wider type).
    _invariant: PhantomData<fn(T) -> T>,
}

impl<T> ContextVar<T> {
    /// A variable without a default.
    ///
    /// ```
    /// use contextvars::ContextVar;
    ///
    /// static USER: ContextVar<String> = ContextVar::new("user");
    /// assert!(USER.get().is_err());
    /// ```
    pub const fn new(name: &'static str) -> ContextVar<T> {
        ContextVar {
            name,
            default: None,
            id: AtomicU64::new(0),
            inherited: true,
            fmt: None,
            internal: false,
            _invariant: PhantomData,
        }
    }

    /// A variable whose reads fall back to `default` when the current
    /// context has no value for it.
    ///
    /// ```
    /// use contextvars::ContextVar;
    ///
    /// static LEVEL: ContextVar<u32> = ContextVar::with_default("level", 42);
    /// assert_eq!(LEVEL.get(), Ok(42));
    /// ```
    pub const fn with_default(name: &'static str, default: T) -> ContextVar<T> {
        ContextVar {
            name,
            default: Some(default),
            id: AtomicU64::new(0),
            inherited: true,
            fmt: None,
            internal: false,
            _invariant: PhantomData,
        }
    }

    /// Declares that this variable is the crate's own state: a context's
    /// `names`, `entries`, `len` and `Debug` leave it out.
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    pub(crate) const fn internal(mut self) -> ContextVar<T> {
        self.internal = true;
        self
    }

    /// Declares that spawned work does not inherit this variable: a task,
    /// thread or job started with this crate's helpers (`tokio::spawn`,
    /// `thread::spawn`, the `rayon` helpers, [`wrap`](crate::wrap),
    /// `in_current_context`, the tokio task hooks) starts without its
    /// value, and reads its default there. For values that belong to one
    /// flow of work and must not follow it into others: a database
    /// transaction, a per-request cache, an "inside handler X" flag.
    ///
    /// An explicit copy ([`copy_context`](crate::copy_context),
    /// [`Context::copy`](crate::Context::copy)) keeps it, as Python's
    /// `copy_context` keeps every variable: a copy is the same flow of
    /// work, run elsewhere on purpose. [`inherited_context`](crate::inherited_context)
    /// is the copy spawned work gets.
    ///
    /// ```
    /// use contextvars::ContextVar;
    ///
    /// static TRANSACTION: ContextVar<u64> = ContextVar::new("transaction").not_inherited();
    /// static REQUEST_ID: ContextVar<u64> = ContextVar::new("request_id");
    ///
    /// TRANSACTION.set(7);
    /// REQUEST_ID.set(1);
    /// let seen = contextvars::thread::spawn(|| (TRANSACTION.get().ok(), REQUEST_ID.get().ok()))
    ///     .join()
    ///     .unwrap();
    /// assert_eq!(seen, (None, Some(1)));
    /// assert_eq!(contextvars::copy_context().get(&TRANSACTION), Some(7));
    /// ```
    pub const fn not_inherited(mut self) -> ContextVar<T> {
        self.inherited = false;
        self
    }

    /// Whether spawned work inherits this variable (see
    /// [`not_inherited`](ContextVar::not_inherited)).
    ///
    /// ```
    /// use contextvars::ContextVar;
    ///
    /// static A: ContextVar<u8> = ContextVar::new("a");
    /// static B: ContextVar<u8> = ContextVar::new("b").not_inherited();
    /// assert!(A.is_inherited() && !B.is_inherited());
    /// ```
    pub const fn is_inherited(&self) -> bool {
        self.inherited
    }

    /// The variable's name, as given at declaration.
    ///
    /// ```
    /// use contextvars::ContextVar;
    ///
    /// static REQUEST_ID: ContextVar<u64> = ContextVar::new("request_id");
    /// assert_eq!(REQUEST_ID.name(), "request_id");
    /// ```
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// The variable's default, if it was declared with one.
    ///
    /// ```
    /// use contextvars::ContextVar;
    ///
    /// static LEVEL: ContextVar<u32> = ContextVar::with_default("level", 42);
    /// assert_eq!(LEVEL.default(), Some(&42));
    /// ```
    pub const fn default(&self) -> Option<&T> {
        self.default.as_ref()
    }

    /// The variable's address, which picks its read-cache slot (spreading
    /// variables over the slots without waiting for the id to load).
    #[inline]
    pub(crate) fn addr(&self) -> usize {
        std::ptr::from_ref(self).addr()
    }

    /// The id, or 0 if it has none yet.
    #[inline]
    fn raw_id(&self) -> VarId {
        self.id.load(Ordering::Relaxed)
    }

    #[inline]
    pub(crate) fn id(&self) -> VarId {
        match self.id.load(Ordering::Relaxed) {
            0 => self.assign_id(),
            id => id,
        }
    }

    #[cold]
    fn assign_id(&self) -> VarId {
        let fresh = crate::ids::new_var_id(self.name, !self.inherited, self.fmt, self.internal);
        match self
            .id
            .compare_exchange(0, fresh, Ordering::Relaxed, Ordering::Relaxed)
        {
            Ok(_) => fresh,
            // An id lost to a racing thread stays unused.
            Err(won) => won,
        }
    }
}

impl<T: fmt::Debug + Send + Sync + 'static> ContextVar<T> {
    /// Declares that this variable's values show in
    /// [`Context::entries`](crate::Context::entries) and in the `Debug` of
    /// a [`Context`](crate::Context). Without it a variable shows by name
    /// only: values are stored type-erased, and `ContextVar::new` cannot
    /// require `T: Debug`. Costs nothing on reads and writes (the formatter
    /// is recorded once, when the variable gets its id).
    ///
    /// ```
    /// use contextvars::{Context, ContextVar};
    ///
    /// static USER: ContextVar<String> = ContextVar::new("user").debuggable();
    /// let ctx = Context::new();
    /// ctx.run(|| USER.set("ada".into()));
    /// assert!(format!("{ctx:?}").contains(r#"vars: {"user": "ada"}"#));
    /// ```
    pub const fn debuggable(mut self) -> ContextVar<T> {
        self.fmt = Some(fmt_value::<T>);
        self
    }
}

/// The formatter [`ContextVar::debuggable`] records for a `T`.
fn fmt_value<T: fmt::Debug + 'static>(value: &Value, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    match value.downcast::<T>() {
        Some(value) => value.fmt(f),
        None => f.write_str("<?>"),
    }
}

impl<T: Send + Sync + 'static> ContextVar<T> {
    /// Calls `f` with a reference to the variable's value in the current
    /// context, else to its default, else `None`, without cloning.
    ///
    /// The read takes no lock and touches no shared memory.
    ///
    /// ```
    /// use contextvars::ContextVar;
    ///
    /// static NAME: ContextVar<String> = ContextVar::new("name");
    /// assert_eq!(NAME.with(|v| v.map(String::len)), None);
    /// NAME.set("ferris".to_string());
    /// assert_eq!(NAME.with(|v| v.map(String::len)), Some(6));
    /// ```
    #[inline]
    pub fn with<R>(&self, f: impl FnOnce(Option<&T>) -> R) -> R {
        read_current(
            self.raw_id(),
            self.addr(),
            || self.id(),
            |value| match value {
                Some(value) => f(Some(self.value(value))),
                None => f(self.default.as_ref()),
            },
        )
    }

    /// The variable's value in the current context, else its default.
    ///
    /// # Errors
    ///
    /// [`LookupError`] when there is neither.
    ///
    /// ```
    /// use contextvars::ContextVar;
    ///
    /// static REQUEST_ID: ContextVar<u64> = ContextVar::new("request_id");
    /// assert_eq!(REQUEST_ID.get().unwrap_err().var_name(), "request_id");
    /// REQUEST_ID.set(7);
    /// assert_eq!(REQUEST_ID.get(), Ok(7));
    /// ```
    #[inline]
    pub fn get(&self) -> Result<T, LookupError>
    where
        T: Clone,
    {
        self.with(|v| v.cloned())
            .ok_or(LookupError { var: self.name })
    }

    /// The variable's value in the current context, else `default` (which
    /// wins over the variable's own default).
    ///
    /// ```
    /// use contextvars::ContextVar;
    ///
    /// static LEVEL: ContextVar<u32> = ContextVar::with_default("level", 42);
    /// assert_eq!(LEVEL.get_or(7), 7);
    /// LEVEL.set(1);
    /// assert_eq!(LEVEL.get_or(7), 1);
    /// ```
    #[inline]
    pub fn get_or(&self, default: T) -> T
    where
        T: Clone,
    {
        self.get_or_else(move || default)
    }

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
        let (context, fork, old) =
            write_current(Some(self.name), Some((id, Cause::Set)), |mut w| {
                (w.context, w.fork(), w.insert(id, value))
            });
        Token {
            var: self.name,
            var_id: id,
            context,
            fork,
            old,
            _type: PhantomData,
        }
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
        let id = self.id();
        if token.var_id != id {
            let error = ResetError::DifferentVar {
                var: self.name,
                token_var: token.var,
            };
            return Err(ResetFailed { error, token });
        }
        if current_id() != Some(token.context) && !token.crosses_a_fork_here() {
            let error = ResetError::DifferentContext { var: self.name };
            return Err(ResetFailed { error, token });
        }
        let Token { old, .. } = token;
        // Whatever the map lets go of is returned and dropped here, after
        // the context's lock is released.
        let replaced = write_current(None, Some((id, Cause::Reset)), |mut w| w.restore(id, old));
        if let Some(replaced) = replaced {
            // SAFETY: it was stored under this variable's id, so it is a `T`
            // (as in `value`; a token of a fork's child is accepted here only
            // for this same variable, `token.var_id == id`).
            unsafe { replaced.drop_as::<T>() };
        }
        Ok(())
    }

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

    /// The variable's value in the current context, else the result of
    /// `default`, called only then (which wins over the variable's own
    /// default): `Option::unwrap_or_else`.
    ///
    /// ```
    /// use contextvars::ContextVar;
    ///
    /// static USER: ContextVar<String> = ContextVar::new("user");
    /// assert_eq!(USER.get_or_else(|| "anonymous".to_string()), "anonymous");
    /// USER.set("ada".to_string());
    /// assert_eq!(USER.get_or_else(|| unreachable!("there is a value")), "ada");
    /// ```
    #[inline]
    pub fn get_or_else(&self, default: impl FnOnce() -> T) -> T
    where
        T: Clone,
    {
        read_current(
            self.raw_id(),
            self.addr(),
            || self.id(),
            |value| match value {
                Some(value) => self.value(value).clone(),
                None => default(),
            },
        )
    }

    /// The variable's value in the current context, else its own default
    /// (as [`get`](ContextVar::get)), else `T::default()`:
    /// `get().unwrap_or_default()`.
    ///
    /// ```
    /// use contextvars::ContextVar;
    ///
    /// static TAGS: ContextVar<Vec<String>> = ContextVar::new("tags");
    /// static LEVEL: ContextVar<u32> = ContextVar::with_default("level", 42);
    /// assert!(TAGS.get_or_default().is_empty());
    /// assert_eq!(LEVEL.get_or_default(), 42); // the variable's default first
    /// ```
    #[inline]
    pub fn get_or_default(&self) -> T
    where
        T: Clone + Default,
    {
        self.with(|v| v.cloned()).unwrap_or_default()
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

    #[inline]
    fn value<'a>(&self, value: &'a Value) -> &'a T {
        // SAFETY: `value` was found under this variable's id, and only this
        // variable stores values under it, always as a `T`, the one type
        // `self` has (module invariant: ids never repeat, and `T` is
        // invariant, so `self` is not a coerced view of a variable of
        // another type). Skipping the `TypeId` check saves an indirect call
        // on every read (see BENCHMARKS.md).
        unsafe { value.downcast_unchecked::<T>() }
    }
}

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

impl<T> fmt::Debug for ContextVar<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContextVar")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The receipt of a [`ContextVar::set`]: it remembers the variable, the
/// context it was set in, and the value it replaced.
///
/// [`ContextVar::reset`] takes it by value, so a token is used at most once;
/// reusing one is a compile error. Dropping it changes nothing.
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
    var: &'static str,
    var_id: VarId,
    context: u64,
    /// The fork whose child made the token, if one did (see [`Fork`](crate::Fork)).
    fork: Option<Arc<ForkLink>>,
    old: Option<Value>,
    /// Invariant in `T`, as the variable is: a token's old value is handed
    /// back to its variable as a `T` without a check.
    _type: PhantomData<fn(T) -> T>,
}

impl<T> Token<T> {
    /// Whether this token, made in another context than the current one,
    /// belongs here all the same through a fork: made in a fork's child
    /// whose merge here applied the variable's value, or made in the parent
    /// of the fork whose child is current (see [`Fork`](crate::Fork)).
    #[cold]
    fn crosses_a_fork_here(&self) -> bool {
        let here = current_id();
        let merged_here = self
            .fork
            .as_ref()
            .is_some_and(|link| Some(link.parent) == here && link.applied(self.var_id));
        merged_here || current_fork().is_some_and(|link| link.parent == self.context)
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
        self.var
    }
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
            .field("var", &self.var)
            .field("old_value", &self.old_value())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::LOOK_UPS;
    use crate::read_cache::Slot;

    fn look_ups() -> u64 {
        LOOK_UPS.with(std::cell::Cell::get)
    }

    /// Two variables in one static, so their addresses (which pick their
    /// read-cache slots) are a `ContextVar` apart.
    static PAIR: [ContextVar<u32>; 2] = [ContextVar::new("a"), ContextVar::new("b")];

    /// Reads of variables the thread read since the last write or switch
    /// are answered by the read cache without a look-up in the map, also
    /// when two variables are read in turn (each has its own slot).
    #[test]
    fn reads_in_turn_of_two_variables_hit_the_read_cache() {
        std::thread::spawn(|| {
            let [a, b] = &PAIR;
            let slot = |v: &ContextVar<u32>| Slot::of(std::ptr::from_ref(v).addr());
            assert!(slot(a) != slot(b), "the two variables share a slot");
            a.set(1);
            b.set(2);
            let before = look_ups();
            assert_eq!((a.get(), b.get()), (Ok(1), Ok(2)));
            assert_eq!(look_ups(), before + 2, "the first reads look up");
            for _ in 0..10 {
                assert_eq!((a.get(), b.get(), a.get_or(0)), (Ok(1), Ok(2), 1));
            }
            assert_eq!(look_ups(), before + 2, "later reads hit the cache");
        })
        .join()
        .unwrap();
    }

    /// Inside a `scope`, reads of the scoped value after the first hit the
    /// read cache, also after a switch to another context and back (which
    /// empties the cache), in a thread's base context and in a shared one.
    #[test]
    fn reads_of_a_scoped_value_hit_the_read_cache() {
        std::thread::spawn(|| {
            let a = &PAIR[0];
            let reads = || {
                a.sync_scope(3, || {
                    crate::Context::new().run(|| ());
                    assert_eq!(a.get(), Ok(3));
                    let before = look_ups();
                    for _ in 0..10 {
                        assert_eq!(a.get(), Ok(3));
                    }
                    assert_eq!(look_ups(), before, "later reads hit the cache");
                });
            };
            a.set(1);
            reads();
            crate::Context::new().run(reads);
        })
        .join()
        .unwrap();
    }
}
