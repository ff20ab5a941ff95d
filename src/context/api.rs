//! The public [`Context`]: making, copying, entering (`run`, `try_run`,
//! and the crate's own exclusive and waiting entries), reading through it
//! (`get`, `entries`, ...); and the free functions that copy the current
//! context (`copy_context`, `inherited_context`, `wrap`). Dropping it is
//! `release`'s.
//!
//! **Invariant:** every entry ends, on return or unwind, with a guard
//! (`Exit`, `ExitExclusive`) that leaves the context and, for a shared
//! entry, gives the entry back.

use std::fmt;
use std::task::Waker;

use super::scoped::with_scoped;
use super::sharing::backoff;
use super::state::Context;
use super::switch::Entered;
use super::thread::{current, token};
use super::write::{current_map, inherited_map, plain_current_map, write_scoped};
use crate::ContextVar;
use crate::error::AlreadyEntered;
use crate::map::{Map, Value, VarId};
use crate::sync::Ordering;

impl Context {
    /// A new, empty context.
    ///
    /// ```
    /// let ctx = contextvars::Context::new();
    /// assert!(ctx.is_empty());
    /// ```
    pub fn new() -> Context {
        Context::from_map(Map::default(), false)
    }

    /// An independent copy, O(1): it starts with this context's current
    /// values, and changes to either are never seen by the other.
    ///
    /// ```
    /// use contextvars::{Context, ContextVar};
    ///
    /// static N: ContextVar<u32> = ContextVar::new("n");
    /// let a = Context::new();
    /// a.run(|| N.set(1));
    /// let b = a.copy();
    /// b.run(|| N.set(2));
    /// assert_eq!((a.get(&N), b.get(&N)), (Some(1), Some(2)));
    /// ```
    #[must_use = "a copy does nothing unless it is run or kept"]
    pub fn copy(&self) -> Context {
        Context::from_map(self.read(Map::clone), false)
    }

    /// Runs `f` with this context as the current one, then restores the
    /// previous context, also if `f` panics.
    ///
    /// # Panics
    ///
    /// If this context is already entered, on this thread or another (see
    /// [`try_run`](Context::try_run) for the fallible form).
    ///
    /// ```
    /// use contextvars::{Context, ContextVar};
    ///
    /// static N: ContextVar<u32> = ContextVar::new("n");
    /// let ctx = Context::new();
    /// let seen = ctx.run(|| {
    ///     N.set(5);
    ///     N.get()
    /// });
    /// assert_eq!(seen, Ok(5));
    /// assert!(N.get().is_err());
    /// ```
    #[track_caller]
    pub fn run<R>(&self, f: impl FnOnce() -> R) -> R {
        match self.try_run(f) {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        }
    }

    /// Like [`run`](Context::run), but returns [`AlreadyEntered`] instead of
    /// panicking when this context is already entered.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use contextvars::Context;
    ///
    /// let ctx = Arc::new(Context::new());
    /// let other = ctx.clone();
    /// ctx.run(|| {
    ///     // Entered here, so another thread cannot enter it either.
    ///     let refused = std::thread::spawn(move || other.try_run(|| ()).is_err());
    ///     assert!(refused.join().unwrap());
    /// });
    /// ```
    pub fn try_run<R>(&self, f: impl FnOnce() -> R) -> Result<R, AlreadyEntered> {
        let Some(_exit) = self.try_enter() else {
            return Err(AlreadyEntered { context: self.id() });
        };
        Ok(f())
    }

    /// Enters the context through a shared borrow, if nobody has it entered;
    /// the guard leaves it.
    #[inline]
    fn try_enter(&self) -> Option<Exit<'_>> {
        let cur = current();
        self.sharing.try_enter(token(cur)).then(|| Exit {
            ctx: self,
            entered: cur.enter(self, true),
        })
    }

    /// For a poll of a shared context: runs `f` inside it if it is free
    /// (`Ok(Some)`); if another thread has it entered, arranges for `waker`
    /// to be woken when it is left and returns `Ok(None)`; if this thread
    /// has it entered already, that is the `AlreadyEntered` error (waiting
    /// would never end).
    pub(crate) fn run_or_wait<R>(
        &self,
        waker: &Waker,
        f: impl FnOnce() -> R,
    ) -> Result<Option<R>, AlreadyEntered> {
        loop {
            if let Some(_exit) = self.try_enter() {
                return Ok(Some(f()));
            }
            if self.entered_here() {
                return Err(AlreadyEntered { context: self.id() });
            }
            if self.sharing.wait_turn(self.id(), waker) {
                return Ok(None);
            }
        }
    }

    /// Runs `f` inside this shared context, waiting (blocking the thread)
    /// while another thread has it entered; for drops, which cannot return
    /// `Pending`. If this thread has it entered already, `f` runs as it is:
    /// the context is this thread's (and, normally, the current one).
    pub(crate) fn run_blocking<R>(&self, f: impl FnOnce() -> R) -> R {
        let mut spins = 0u32;
        loop {
            if let Some(_exit) = self.try_enter() {
                return f();
            }
            if self.entered_here() {
                return f();
            }
            backoff(&mut spins);
        }
    }

    /// Whether this thread has the context entered through a shared borrow.
    fn entered_here(&self) -> bool {
        self.sharing.entered_by(token(current()))
    }

    /// Runs `f` inside this context through a unique borrow: no other handle
    /// can reach the context meanwhile, so entering takes no `entered` flag
    /// and writes take no lock (the context is private for the duration).
    #[inline]
    pub(crate) fn run_exclusive<R>(&mut self, f: impl FnOnce() -> R) -> R {
        self.run_exclusive_as(true, f)
    }

    /// [`run_exclusive`](Context::run_exclusive); `observed`: whether
    /// switch observers hear of the entry and the exit.
    #[inline]
    pub(super) fn run_exclusive_as<R>(&mut self, observed: bool, f: impl FnOnce() -> R) -> R {
        let was_private = std::mem::replace(&mut self.private, true);
        let this: *mut Context = self;
        let entered = current().enter(this, observed);
        let _exit = ExitExclusive {
            ctx: this,
            entered,
            was_private,
            observed,
        };
        f()
    }

    /// An independent copy, through a unique borrow (so without the lock).
    #[cfg(feature = "rayon")]
    pub(crate) fn copy_exclusive(&mut self) -> Context {
        Context::from_map(self.map.get_mut().clone(), false)
    }

    /// The value of `var` in this context, without the variable's default.
    ///
    /// If the context is entered on another thread right now, this shows its
    /// live state (taking its lock for the moment of the read).
    ///
    /// ```
    /// use contextvars::{Context, ContextVar};
    ///
    /// static LEVEL: ContextVar<u8> = ContextVar::with_default("level", 3);
    /// let ctx = Context::new();
    /// assert_eq!(ctx.get(&LEVEL), None); // defaults are not context values
    /// ctx.run(|| LEVEL.set(9));
    /// assert_eq!(ctx.get(&LEVEL), Some(9));
    /// ```
    pub fn get<T: Clone + Send + Sync + 'static>(&self, var: &ContextVar<T>) -> Option<T> {
        let id = var.id();
        // Clone the `Arc` under the lock, the `T` outside it: `T::clone` is
        // user code and may itself touch contexts.
        let value: Option<Value> = self.read(|map| map.get(id).cloned());
        value.map(|v| {
            v.downcast::<T>()
                .expect("a variable's id always maps to its type")
                .clone()
        })
    }

    /// Whether `var` has a value in this context (defaults do not count).
    ///
    /// ```
    /// use contextvars::{Context, ContextVar};
    ///
    /// static N: ContextVar<u32> = ContextVar::new("n");
    /// let ctx = Context::new();
    /// assert!(!ctx.contains(&N));
    /// ctx.run(|| N.set(1));
    /// assert!(ctx.contains(&N));
    /// ```
    pub fn contains<T>(&self, var: &ContextVar<T>) -> bool {
        let id = var.id();
        self.read(|map| map.contains(id))
    }

    /// How many variables have a value in this context.
    ///
    /// ```
    /// use contextvars::{Context, ContextVar};
    ///
    /// static A: ContextVar<u32> = ContextVar::new("a");
    /// static B: ContextVar<u32> = ContextVar::new("b");
    /// let ctx = Context::new();
    /// ctx.run(|| {
    ///     A.set(1);
    ///     B.set(2);
    /// });
    /// assert_eq!(ctx.len(), 2);
    /// ```
    pub fn len(&self) -> usize {
        // The crate's own variables are not counted (see `ids`).
        let internal = crate::ids::internal_ids();
        self.read(|map| map.len() - internal.iter().filter(|&&id| map.contains(id)).count())
    }

    /// Whether no variable has a value in this context.
    ///
    /// ```
    /// assert!(contextvars::Context::new().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The names of the variables that have a value in this context, in no
    /// particular order. (Values are typed by their variable, so they are
    /// read with [`get`](Context::get).)
    ///
    /// ```
    /// use contextvars::{Context, ContextVar};
    ///
    /// static USER: ContextVar<String> = ContextVar::new("user");
    /// let ctx = Context::new();
    /// ctx.run(|| USER.set("ada".into()));
    /// assert_eq!(ctx.names(), vec!["user"]);
    /// ```
    pub fn names(&self) -> Vec<&'static str> {
        let ids: Vec<VarId> = self.read(|map| map.iter().map(|(id, _)| id).collect());
        ids.into_iter()
            .filter(|&id| !crate::ids::is_internal(id))
            .map(crate::ids::name_of)
            .collect()
    }

    /// The variables that have a value in this context, each with its name
    /// and its value as `Debug` shows it, sorted by name: for debugging and
    /// logs. A variable shows its value if it was declared
    /// [`debuggable`](ContextVar::debuggable) (its `T: Debug`), else `None`.
    ///
    /// The values are read under the context's lock where one is needed
    /// (only reference counts are taken), and formatted after it is
    /// released: a `Debug` impl is user code.
    ///
    /// ```
    /// use contextvars::{Context, ContextVar};
    ///
    /// static USER: ContextVar<&'static str> = ContextVar::new("user").debuggable();
    /// static SECRET: ContextVar<String> = ContextVar::new("secret");
    /// let ctx = Context::new();
    /// ctx.run(|| {
    ///     USER.set("ada");
    ///     SECRET.set("hunter2".into());
    /// });
    /// let entries: Vec<_> = ctx.entries().collect();
    /// assert_eq!(entries, [("secret", None), ("user", Some(r#""ada""#.to_string()))]);
    /// ```
    pub fn entries(&self) -> impl Iterator<Item = (&'static str, Option<String>)> + use<> {
        let values: Vec<(VarId, Value)> =
            self.read(|map| map.iter().map(|(id, v)| (id, v.clone())).collect());
        let mut entries: Vec<(&'static str, Option<String>)> = values
            .iter()
            .filter(|(id, _)| !crate::ids::is_internal(*id))
            .map(|(id, value)| {
                let (name, fmt) = crate::ids::debug_info_of(*id);
                let shown = fmt.map(|fmt| format!("{:?}", ShowValue(value, fmt)));
                (name, shown)
            })
            .collect();
        entries.sort_unstable();
        entries.into_iter()
    }

    /// Runs `f` on this context's map: lock-free on the thread where the
    /// context is current (the only writer), under the lock elsewhere.
    fn read<R>(&self, f: impl FnOnce(&Map) -> R) -> R {
        let cur = current();
        if std::ptr::eq(cur.ctx.get(), self) {
            if !self.own_scoped().is_null() {
                write_scoped(cur);
            }
            // SAFETY: see the invariant on `Sync`: this thread is the only
            // writer.
            return self.map.with(|map| f(unsafe { &*map }));
        }
        let lock = self.lock();
        // SAFETY: as above: we hold the lock, and the owner is not writing
        // (`lock`).
        let map = self.map.with(|map| unsafe { &*map });
        // Acquire: the entries were linked without the lock (see `scoped`).
        let scoped = self.scoped.load(Ordering::Acquire);
        if scoped.is_null() {
            return f(map);
        }
        // Entered elsewhere, inside `scope`s: their values over a copy of
        // the map (only the thread that has the context entered writes it).
        let merged = with_scoped(map, scoped);
        drop(lock);
        f(&merged)
    }
}

impl Default for Context {
    fn default() -> Self {
        Context::new()
    }
}

impl fmt::Debug for Context {
    /// Lists the context's variables by name, with the values of those
    /// declared [`debuggable`](ContextVar::debuggable) (`..` for the
    /// others), as [`entries`](Context::entries) does.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("id", &self.id())
            .field("vars", &Vars(self.entries().collect()))
            .finish()
    }
}

/// A context's entries as a `Debug` map: `name: value`, or `name: ..` for a
/// variable whose values are not shown.
struct Vars(Vec<(&'static str, Option<String>)>);

impl fmt::Debug for Vars {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        /// Written as it is: `Debug` of the value, already rendered.
        struct Raw<'a>(&'a str);
        impl fmt::Debug for Raw<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.0)
            }
        }
        f.debug_map()
            .entries(
                self.0
                    .iter()
                    .map(|(name, value)| (name, Raw(value.as_deref().unwrap_or("..")))),
            )
            .finish()
    }
}

/// A value with the debug formatter of its variable.
struct ShowValue<'a>(&'a Value, crate::ids::FmtValue);

impl fmt::Debug for ShowValue<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (self.1)(self.0, f)
    }
}

/// Restores the previous context when `run` ends, returns or unwinds.
struct Exit<'a> {
    ctx: &'a Context,
    entered: Entered,
}

impl Drop for Exit<'_> {
    #[inline]
    fn drop(&mut self) {
        current().leave(self.entered, true);
        self.ctx.sharing.leave(|| self.ctx.id());
    }
}

/// Restores the previous context when `run_exclusive` ends, returns or
/// unwinds.
struct ExitExclusive {
    ctx: *mut Context,
    entered: Entered,
    was_private: bool,
    observed: bool,
}

impl Drop for ExitExclusive {
    #[inline]
    fn drop(&mut self) {
        current().leave(self.entered, self.observed);
        // SAFETY: `ctx` comes from the `&mut Context` that `run_exclusive`
        // holds for as long as this guard lives, and the thread-local no
        // longer points at it.
        unsafe { (*self.ctx).private = self.was_private };
    }
}

/// An O(1) copy of the current context: what a task, thread or callback
/// should start from to see the values the caller sees now.
///
/// ```
/// use contextvars::{copy_context, ContextVar};
///
/// static N: ContextVar<u32> = ContextVar::new("n");
/// N.set(1);
/// let ctx = copy_context();
/// N.set(2);
/// assert_eq!(ctx.get(&N), Some(1));
/// assert_eq!(ctx.run(|| N.get()), Ok(1));
/// ```
#[inline]
pub fn copy_context() -> Context {
    // Built in each arm, so that the common one clones the map straight
    // into the new context rather than through a temporary.
    // SAFETY: the map is cloned before anything can switch or write.
    match unsafe { plain_current_map() } {
        Some(map) => Context::from_map(map.clone(), false),
        None => Context::from_map(current_map(), false),
    }
}

/// A copy of the current context for spawned work: every value the caller
/// sees now, except those of variables declared
/// [`not_inherited`](ContextVar::not_inherited). It is what this crate's
/// spawn helpers (tokio, thread, rayon, [`wrap`],
/// [`in_current_context`](crate::future::FutureExt::in_current_context),
/// the tokio task hooks) start work in; use it to write your own. O(1), as
/// [`copy_context`], when the context holds no such variable.
///
/// ```
/// use contextvars::{inherited_context, ContextVar};
///
/// static CACHE: ContextVar<Vec<u8>> = ContextVar::new("cache").not_inherited();
/// static USER: ContextVar<&'static str> = ContextVar::new("user");
/// CACHE.set(vec![1, 2]);
/// USER.set("ada");
/// let ctx = inherited_context();
/// assert_eq!((ctx.get(&CACHE), ctx.get(&USER)), (None, Some("ada")));
/// ```
#[inline]
pub fn inherited_context() -> Context {
    Context::from_map(inherited_map(), false)
}

/// Captures a copy of the current context now (without the variables
/// declared [`not_inherited`](ContextVar::not_inherited): see
/// [`inherited_context`]) and returns a closure that runs `f` in it: the way
/// to hand a callback to any pool or executor.
///
/// The closure is `Send + 'static` when `f` is.
///
/// ```
/// use contextvars::{wrap, ContextVar};
///
/// static REQUEST: ContextVar<u64> = ContextVar::new("request");
/// REQUEST.set(7);
/// let job = wrap(|| REQUEST.get());
/// let seen = std::thread::spawn(job).join().unwrap();
/// assert_eq!(seen, Ok(7));
/// ```
pub fn wrap<F, R>(f: F) -> impl FnOnce() -> R
where
    F: FnOnce() -> R,
{
    let mut wrapped = Wrapped {
        ctx: inherited_context(),
        f: Some(f),
    };
    let carried = crate::carry::capture();
    move || {
        let f = wrapped.f.take().expect("called once");
        crate::carry::within(&carried, || wrapped.ctx.run_exclusive(f))
    }
}

/// A callback and its context: a callback that is dropped without being
/// called (a pool shut down, a job cancelled) is dropped inside its context.
struct Wrapped<F> {
    ctx: Context,
    f: Option<F>,
}

impl<F> Drop for Wrapped<F> {
    fn drop(&mut self) {
        if let Some(f) = self.f.take() {
            self.ctx.run_exclusive(|| drop(f));
        }
    }
}
