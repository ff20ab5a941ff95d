//! Observers: hooks called when a thread's current context switches
//! ([`on_switch`]) and when a chosen variable's value changes in the current
//! context ([`ContextVar::observe`]), for profilers that tag samples with the
//! current trace, MDC bridges that mirror variables into a logger's
//! thread-local map, and metrics.
//!
//! This is the public side; the engine that the switch and the write path
//! call, and that keeps the installed hooks, is the core's
//! (`context::observers`). With no observer installed, a switch or a write
//! pays one relaxed load.
//!
//! **Invariant:** a hook never runs inside another hook on the same thread:
//! whatever a hook reads, writes or enters is not observed, so hooks that
//! use variables cannot recurse, let alone without bound. And a hook's
//! panic never escapes into the switch or write that called it: it is
//! caught, reported once naming the observer, and that observer is switched
//! off; the context switch or write it observed is complete either way.
//!
//! ```
//! use contextvars::{ContextVar, observe::{Cause, Change}};
//! use std::sync::Mutex;
//!
//! static LEVEL: ContextVar<u32> = ContextVar::new("level");
//! static SEEN: Mutex<Vec<(Option<u32>, Cause)>> = Mutex::new(Vec::new());
//!
//! let observer = LEVEL.observe(|c: &Change<'_, u32>| {
//!     SEEN.lock().unwrap().push((c.current().copied(), c.cause()));
//! });
//! contextvars::Context::new().run(|| LEVEL.sync_scope(3, || ()));
//! drop(observer);
//! assert_eq!(SEEN.lock().unwrap()[..2], [(Some(3), Cause::ScopeBegin), (None, Cause::ScopeEnd)]);
//! ```

use std::fmt;

use crate::ContextVar;
pub use crate::context::observers::{Cause, Switch};
use crate::context::observers::{ErasedChange, install_switch, install_var, remove};
use crate::map::Value;

/// A handle to an installed observer: dropping it removes the observer.
///
/// ```
/// use contextvars::{Context, observe};
/// use std::sync::atomic::{AtomicUsize, Ordering};
///
/// static SWITCHES: AtomicUsize = AtomicUsize::new(0);
/// let observer = observe::on_switch("counter", |_| {
///     SWITCHES.fetch_add(1, Ordering::Relaxed);
/// });
/// Context::new().run(|| ());
/// drop(observer); // removed: later switches are not counted
/// Context::new().run(|| ());
/// assert!(SWITCHES.load(Ordering::Relaxed) >= 2); // enter and exit (other threads may add)
/// ```
#[must_use = "dropping an `Observer` removes it at once; call `keep()` to keep it for the life \
              of the program"]
pub struct Observer {
    id: u64,
}

impl Observer {
    /// Keeps the observer installed for the rest of the program.
    ///
    /// ```
    /// contextvars::observe::on_switch("forever", |_| {}).keep();
    /// ```
    pub fn keep(self) {
        std::mem::forget(self);
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        remove(self.id);
    }
}

impl fmt::Debug for Observer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Observer").field("id", &self.id).finish()
    }
}

/// A change of an observed variable, as its hook sees it: the value before
/// and after, as held by the context (a variable's default is not a value:
/// `None` means "no value").
pub struct Change<'a, T> {
    old: Option<&'a T>,
    new: Option<&'a T>,
    cause: Cause,
}

impl<'a, T> Change<'a, T> {
    /// The value before the change (`None`: it had none).
    ///
    /// ```
    /// # use contextvars::{ContextVar, observe::Change};
    /// static N: ContextVar<u32> = ContextVar::new("n");
    /// let _o = N.observe(|c: &Change<'_, u32>| assert!(c.previous().is_none() || c.previous() == Some(&1)));
    /// N.set(1);
    /// N.set(2);
    /// ```
    pub fn previous(&self) -> Option<&'a T> {
        self.old
    }

    /// The value after the change (`None`: it has none now).
    ///
    /// ```
    /// # use contextvars::{ContextVar, observe::Change};
    /// static N: ContextVar<u32> = ContextVar::new("n");
    /// let _o = N.observe(|c: &Change<'_, u32>| assert_eq!(c.current(), Some(&1)));
    /// N.set(1);
    /// ```
    pub fn current(&self) -> Option<&'a T> {
        self.new
    }

    /// What made the change.
    ///
    /// ```
    /// # use contextvars::{ContextVar, observe::{Cause, Change}};
    /// static N: ContextVar<u32> = ContextVar::new("n");
    /// let _o = N.observe(|c: &Change<'_, u32>| assert_eq!(c.cause(), Cause::Set));
    /// N.set(1);
    /// ```
    pub fn cause(&self) -> Cause {
        self.cause
    }
}

impl<T: fmt::Debug> fmt::Debug for Change<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Change")
            .field("old", &self.old)
            .field("new", &self.new)
            .field("cause", &self.cause)
            .finish()
    }
}

/// Installs a hook called after every switch of a thread's current context,
/// on that thread, with the new context current. `name` names it in the
/// report if it panics.
///
/// Switches are: entering and leaving [`Context::run`](crate::Context::run)
/// (and `try_run`), each poll (and the drop) of a context-carrying future,
/// the tokio task hooks, each resumption of an `isolated()` iterator or
/// stream, the spawn helpers' and [`wrap`](crate::wrap)'s runs, and the
/// thread's first write (its base context) and exit.
///
/// Dropping a [`Context`](crate::Context) is not a switch: the values it
/// held are dropped inside it (so that their destructors read and write
/// that context), but the hooks are not called for it, and nothing a hook
/// would set can refill a context that is going.
///
/// The hook may read and write variables and enter contexts; nothing it does
/// is observed (no hook runs inside a hook on the same thread). A panic in
/// it is caught and reported, and the observer is switched off; the switch
/// itself is complete either way.
///
/// ```
/// use contextvars::{Context, ContextVar, observe};
/// use std::cell::Cell;
///
/// static TRACE_ID: ContextVar<u64> = ContextVar::new("trace_id");
/// thread_local! {
///     // What a sampling profiler would read: the current trace, per thread.
///     static SAMPLE_TAG: Cell<u64> = const { Cell::new(0) };
/// }
///
/// let _profiler = observe::on_switch("profiler", |_switch| {
///     let id = TRACE_ID.get_or(0);
///     SAMPLE_TAG.with(|tag| tag.set(id));
/// });
///
/// let request = Context::new();
/// request.run(|| {
///     TRACE_ID.set(7);
/// });
/// request.run(|| assert_eq!(SAMPLE_TAG.with(Cell::get), 7));
/// assert_eq!(SAMPLE_TAG.with(Cell::get), 0); // back in the thread's own context
/// ```
pub fn on_switch(name: &'static str, hook: impl Fn(&Switch) + Send + Sync + 'static) -> Observer {
    Observer {
        id: install_switch(name, Box::new(hook)),
    }
}

impl<T: Send + Sync + 'static> ContextVar<T> {
    /// Installs a hook called whenever this variable's value changes in the
    /// current context, on the thread that changed it, after the change: a
    /// [`set`](ContextVar::set), a [`reset`](ContextVar::reset), the start
    /// and end of a [`sync_scope`](ContextVar::sync_scope) (and of each poll
    /// of a [`scope`](ContextVar::scope)'s future), and a switch of context
    /// that changes the value the thread sees ([`Cause::Switch`], as .NET's
    /// `AsyncLocal` reports with `ThreadContextChanged`). Like .NET's
    /// value-changed handler, with the cause.
    ///
    /// The hook may read and write variables; nothing it does is observed
    /// (no hook runs inside a hook on the same thread), so a hook that sets
    /// its own variable does not call itself. A panic in it is caught and
    /// reported naming the variable, and the observer is switched off.
    ///
    /// The variable must be a `static` (`&'static self`): the observer keeps
    /// reading it by its address, so it must never move. A variable that
    /// could move is refused at compile time:
    ///
    /// ```compile_fail
    /// use contextvars::ContextVar;
    ///
    /// let vars = vec![ContextVar::<u32>::new("a"), ContextVar::new("b")];
    /// let _observer = vars[0].observe(|_| {}); // `vars` does not live forever
    /// ```
    ///
    /// ```
    /// use contextvars::{Context, ContextVar, observe::{Cause, Change}};
    /// use std::sync::Mutex;
    ///
    /// static USER: ContextVar<String> = ContextVar::new("user");
    /// static SEEN: Mutex<Vec<(Option<String>, Cause)>> = Mutex::new(Vec::new());
    ///
    /// let _mdc = USER.observe(|change: &Change<'_, String>| {
    ///     SEEN.lock().unwrap().push((change.current().cloned(), change.cause()));
    /// });
    /// let ctx = Context::new();
    /// ctx.run(|| {
    ///     let token = USER.set("ada".to_string());
    ///     USER.reset(token).unwrap();
    ///     USER.set("bob".to_string());
    /// });
    /// ctx.run(|| ());
    /// let seen = SEEN.lock().unwrap();
    /// assert_eq!(seen[..], [
    ///     (Some("ada".to_string()), Cause::Set),
    ///     (None, Cause::Reset),
    ///     (Some("bob".to_string()), Cause::Set),
    ///     (None, Cause::Switch),              // leaving `ctx`
    ///     (Some("bob".to_string()), Cause::Switch), // entering it again
    ///     (None, Cause::Switch),
    /// ]);
    /// ```
    pub fn observe(
        &'static self,
        hook: impl Fn(&Change<'_, T>) + Send + Sync + 'static,
    ) -> Observer {
        let (var, addr) = (self.id(), self.addr());
        let erased = move |old: Option<&Value>, new: Option<&Value>, cause: Cause| {
            fn typed<T: 'static>(v: &Value) -> &T {
                v.downcast::<T>()
                    .expect("a variable's id always maps to its type")
            }
            hook(&Change {
                old: old.map(typed::<T>),
                new: new.map(typed::<T>),
                cause,
            });
        };
        let erased: Box<ErasedChange> = Box::new(erased);
        Observer {
            id: install_var(var, addr, self.name(), erased),
        }
    }
}
