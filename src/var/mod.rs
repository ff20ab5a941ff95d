//! [`ContextVar`], the key to a value in the current context: its
//! declaration, its identity and its reads. Its writes (`write`), its
//! scoped values (`scope`) and the [`Token`] a `set` hands back (`token`)
//! each have a file of their own.
//!
//! **Invariant:** a variable's id is assigned once, from a process-wide
//! counter, and never changes or repeats; it is the only thing a context
//! knows a variable by, so the id fixes the value's type and a stored value
//! always downcasts to its variable's `T`. That holds because the type is
//! fixed too: `ContextVar<T>` and `Token<T>` are invariant in `T`, so no
//! coercion turns a variable of one type into a variable of a related one
//! (a `for<'a> fn(&'a X)` into a `fn(&'static X)`, say) that would store,
//! under the same id, values that read as the other type.

mod scope;
mod token;
mod write;

use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::context::read_current;
use crate::error::LookupError;
use crate::ids::FmtValue;
use crate::map::{Value, VarId};

pub use scope::SyncScopeOutput;
pub use token::Token;

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

impl<T> fmt::Debug for ContextVar<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContextVar")
            .field("name", &self.name)
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
