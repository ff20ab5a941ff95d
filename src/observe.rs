//! Observers: hooks called when a thread's current context switches
//! ([`on_switch`]) and when a chosen variable's value changes in the current
//! context ([`ContextVar::observe`]), for profilers that tag samples with the
//! current trace, MDC bridges that mirror variables into a logger's
//! thread-local map, and metrics.
//!
//! The hooks plug into the core at three points: `Current::enter` (every
//! switch: `run`, each poll of a context-carrying future, the task hooks,
//! generator resumptions, a thread's base context), and after the write of
//! `set`, `reset` and `scope` (in `var`). Each of those points first reads
//! one global flag (`ACTIVE`, a relaxed load); with no observer installed
//! that is all they do. The observers themselves are an immutable list
//! (`Snapshot`) that each thread caches and refreshes only when the global
//! generation moves, so a notification takes no lock and shares no counter.
//!
//! **Invariant:** a hook never runs inside another hook on the same thread
//! (`IN_HOOK`): whatever a hook reads, writes or enters is not observed, so
//! hooks that use variables cannot recurse, let alone without bound. And a
//! hook's panic never escapes into the switch or write that called it: it is
//! caught, reported once naming the observer, and that observer is switched
//! off; the context switch or write it observed is complete either way.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::ContextVar;
use crate::context::read_current;
use crate::map::{Value, VarId};

/// Bits of [`ACTIVE`].
const SWITCH: u8 = 1;
const VARS: u8 = 2;

/// Which kinds of observer are installed: the one word every switch and
/// every write reads (relaxed) before doing anything else here.
static ACTIVE: AtomicU8 = AtomicU8::new(0);

/// Moves on whenever the list of observers changes, so threads refresh their
/// cached copy.
static GENERATION: AtomicU64 = AtomicU64::new(1);

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    next: 1,
    snapshot: None,
});

struct Registry {
    next: u64,
    snapshot: Option<Arc<Snapshot>>,
}

/// The observers installed at one moment; never changed once published.
#[derive(Default, Clone)]
struct Snapshot {
    switch: Vec<Arc<SwitchEntry>>,
    vars: Vec<Arc<VarEntry>>,
}

struct SwitchEntry {
    id: u64,
    name: &'static str,
    off: AtomicBool,
    f: Box<dyn Fn(&Switch) + Send + Sync>,
}

type ErasedChange = dyn Fn(Option<&Value>, Option<&Value>, Cause) + Send + Sync;

struct VarEntry {
    id: u64,
    var: VarId,
    /// The variable's address: which read-cache slot its reads go through.
    hint: usize,
    name: &'static str,
    off: AtomicBool,
    f: Box<ErasedChange>,
}

thread_local! {
    /// Whether a hook is running on this thread (see the module invariant).
    static IN_HOOK: Cell<bool> = const { Cell::new(false) };
    /// This thread's copy of the published observers, with its generation.
    static CACHE: RefCell<(u64, Option<Arc<Snapshot>>)> = const { RefCell::new((0, None)) };
}

/// Whether any observer is installed: the check on the switch path.
#[inline(always)]
pub(crate) fn active() -> bool {
    ACTIVE.load(Ordering::Relaxed) != 0
}

/// Whether a variable observer is installed: the check on the write path.
#[inline(always)]
pub(crate) fn vars_observed() -> bool {
    ACTIVE.load(Ordering::Relaxed) & VARS != 0
}

fn in_hook() -> bool {
    IN_HOOK.with(Cell::get)
}

/// Runs `f` with the current observers, from this thread's cache.
///
/// The cache is refreshed only where it is not borrowed: a hook that runs
/// inside `f` and reaches here again (through `scope`, say) while another
/// thread changed the observers reads the fresh list without caching it.
fn with_snapshot<R>(f: impl FnOnce(&Snapshot) -> R) -> R {
    let generation = GENERATION.load(Ordering::Acquire);
    let mut f = Some(f);
    let cached = CACHE.try_with(|cache| {
        if cache.borrow().0 != generation {
            let Ok(mut slot) = cache.try_borrow_mut() else {
                return None;
            };
            let old = std::mem::replace(&mut *slot, (generation, published()));
            drop(slot);
            // Outside the borrow, and contained: the old list's hooks'
            // captures are user values, dropped where the last list goes.
            let _ = crate::report::contain(|| drop(old));
        }
        let cache = cache.borrow();
        let empty = Snapshot::default();
        Some((f.take().expect("once"))(
            cache.1.as_deref().unwrap_or(&empty),
        ))
    });
    match cached {
        Ok(Some(r)) => r,
        // The cache is borrowed further up this thread's stack, or gone
        // (thread teardown): ask the registry.
        Ok(None) | Err(_) => {
            let snapshot = published();
            let r = (f.take().expect("once"))(snapshot.as_deref().unwrap_or(&Snapshot::default()));
            let _ = crate::report::contain(|| drop(snapshot));
            r
        }
    }
}

fn published() -> Option<Arc<Snapshot>> {
    REGISTRY
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .snapshot
        .clone()
}

/// Changes the published list with `edit`; the old list is dropped after the
/// lock is released (its hooks' captures are user values).
fn update(edit: impl FnOnce(&mut Snapshot, u64)) -> u64 {
    let (id, old) = {
        let mut registry = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
        let id = registry.next;
        registry.next += 1;
        let mut next = registry.snapshot.as_deref().cloned().unwrap_or_default();
        edit(&mut next, id);
        let bits = if next.switch.is_empty() { 0 } else { SWITCH }
            | if next.vars.is_empty() { 0 } else { VARS };
        let old = registry.snapshot.replace(Arc::new(next));
        GENERATION.fetch_add(1, Ordering::Release);
        ACTIVE.store(bits, Ordering::Release);
        (id, old)
    };
    drop(old);
    id
}

/// Marks this thread as running a hook until dropped.
struct HookScope(bool);

impl HookScope {
    /// `None` if a hook is running already (the notification is suppressed).
    fn enter() -> Option<HookScope> {
        IN_HOOK.with(|flag| (!flag.replace(true)).then(|| HookScope(true)))
    }
}

impl Drop for HookScope {
    fn drop(&mut self) {
        if self.0 {
            IN_HOOK.with(|flag| flag.set(false));
        }
    }
}

/// Calls one hook, catching its panic (see the module invariant).
fn call(name: &'static str, kind: &str, off: &AtomicBool, f: impl FnOnce()) {
    if off.load(Ordering::Relaxed) {
        return;
    }
    if let Err(what) = crate::report::contain(f) {
        if !off.swap(true, Ordering::Relaxed) {
            crate::report::warn(&format!(
                "contextvars: the {kind} observer `{name}` panicked ({what}); it is switched \
                 off. Catch panics inside the hook to keep it running."
            ));
        }
    }
}

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
        let id = self.id;
        update(|s, _| {
            s.switch.retain(|e| e.id != id);
            s.vars.retain(|e| e.id != id);
        });
    }
}

impl fmt::Debug for Observer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Observer").field("id", &self.id).finish()
    }
}

/// What a switch observer is told: the thread's current context changed.
///
/// The hook runs *after* the switch, with the new context current, so it
/// reads the variables it cares about with [`ContextVar::with`] or
/// [`ContextVar::get`] as usual (a first read after a switch misses the
/// read cache and walks a small map: tens of nanoseconds).
///
/// The ids are opaque numbers that tell contexts apart (a generator's
/// resumptions share one id); `None` is "no context yet" (a thread before its
/// first write, or while it is torn down).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Switch {
    pub(crate) previous: Option<u64>,
    pub(crate) current: Option<u64>,
}

impl Switch {
    /// The id of the context that was current before the switch.
    ///
    /// ```
    /// # use contextvars::{Context, observe};
    /// let _o = observe::on_switch("ids", |s| assert_ne!(s.previous(), s.current()));
    /// Context::new().run(|| ());
    /// ```
    pub fn previous(&self) -> Option<u64> {
        self.previous
    }

    /// The id of the context that is current now.
    ///
    /// ```
    /// # use contextvars::{Context, observe};
    /// let _o = observe::on_switch("ids", |s| assert!(s.current().is_some() || s.previous().is_some()));
    /// Context::new().run(|| ());
    /// ```
    pub fn current(&self) -> Option<u64> {
        self.current
    }
}

/// Why an observed variable's value changed in the current context.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Cause {
    /// [`ContextVar::set`].
    Set,
    /// [`ContextVar::reset`] / [`try_reset`](ContextVar::try_reset).
    Reset,
    /// The start of a [`ContextVar::scope`].
    ScopeBegin,
    /// The end of a [`ContextVar::scope`] (also when it unwinds).
    ScopeEnd,
    /// A [`Fork::merge`](crate::Fork::merge) (or `merge_overwriting`)
    /// applied the value the fork's child gave the variable.
    Merge,
    /// The thread switched to a context where the variable's value is
    /// another one (.NET's `ThreadContextChanged`): entering or leaving a
    /// `run`, a poll of a context-carrying future, a task hook, a generator
    /// resumption. A switch between contexts that share the value (a copy
    /// and its original) is no change.
    Switch,
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
    let id = update(|s, id| {
        s.switch.push(Arc::new(SwitchEntry {
            id,
            name,
            off: AtomicBool::new(false),
            f: Box::new(hook),
        }))
    });
    Observer { id }
}

impl<T: Send + Sync + 'static> ContextVar<T> {
    /// Installs a hook called whenever this variable's value changes in the
    /// current context, on the thread that changed it, after the change: a
    /// [`set`](ContextVar::set), a [`reset`](ContextVar::reset), the start
    /// and end of a [`scope`](ContextVar::scope), and a switch of context
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
        let (var, hint) = (self.id(), self.hint());
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
        let name = self.name();
        let id = update(|s, id| {
            s.vars.push(Arc::new(VarEntry {
                id,
                var,
                hint,
                name,
                off: AtomicBool::new(false),
                f: Box::new(erased),
            }))
        });
        Observer { id }
    }

    /// `scope` with observers of some variable installed: tells this
    /// variable's observers of the scope's start and end.
    #[cold]
    #[inline(never)]
    pub(crate) fn scope_observed<R>(&self, value: T, f: impl FnOnce() -> R) -> R {
        let id = self.id();
        if in_hook() || !is_observed(id) {
            return self.scope_unobserved(value, f);
        }
        let hint = self.hint();
        let end = ScopeNotice {
            var: id,
            hint,
            before_end: Cell::new(None),
            armed: Cell::new(false),
        };
        let old = current_value(id, hint);
        self.scope_unobserved(value, || {
            let new = current_value(id, hint);
            notify(id, old.as_ref(), new.as_ref(), Cause::ScopeBegin);
            drop(old);
            drop(new);
            // Notes the value visible just before the scope's end (the
            // body may have set another one), also on unwinding.
            let _before_end = BeforeEnd(&end);
            f()
        })
    }
}

/// Tells a variable's observers that its scope ended, once the scope's own
/// end restored the value (also on unwinding): from the value visible just
/// before the end to the one visible after it.
struct ScopeNotice {
    var: VarId,
    hint: usize,
    before_end: Cell<Option<Value>>,
    armed: Cell<bool>,
}

/// Inside a scope's body: at its end, notes the value visible then.
struct BeforeEnd<'a>(&'a ScopeNotice);

impl Drop for BeforeEnd<'_> {
    fn drop(&mut self) {
        let notice = self.0;
        notice
            .before_end
            .set(current_value(notice.var, notice.hint));
        notice.armed.set(true);
    }
}

impl Drop for ScopeNotice {
    fn drop(&mut self) {
        if self.armed.get() {
            let before = self.before_end.take();
            let now = current_value(self.var, self.hint);
            notify(self.var, before.as_ref(), now.as_ref(), Cause::ScopeEnd);
        }
    }
}

/// A handle to the current context's value of `id`, read through the read
/// cache's slot for `hint`, the variable's address, as every read of it is:
/// a scoped value is put into that slot alone, without moving the cache's
/// version on, and cleared from it when its scope ends.
fn current_value(id: VarId, hint: usize) -> Option<Value> {
    read_current(id, hint, || id, |v| v.cloned())
}

fn is_observed(id: VarId) -> bool {
    with_snapshot(|s| s.vars.iter().any(|e| e.var == id))
}

/// What an observed write of a variable needs from before it: the
/// variable's address (see `current_value`) and the value visible then.
pub(crate) struct BeforeWrite {
    var: VarId,
    hint: usize,
    old: Option<Value>,
}

/// Before a write of `id` by the write path (`context::write_current`),
/// with variable observers installed: `None` if the variable has none, or
/// inside a hook (nothing a hook does is observed).
#[cold]
#[inline(never)]
pub(crate) fn before_write(id: VarId) -> Option<BeforeWrite> {
    if in_hook() {
        return None;
    }
    let hint = with_snapshot(|s| s.vars.iter().find(|e| e.var == id).map(|e| e.hint))?;
    Some(BeforeWrite {
        var: id,
        hint,
        old: current_value(id, hint),
    })
}

/// After the write that `before` was taken for, closed: tells the
/// variable's observers of the change, from the value visible before it to
/// the one visible now.
#[cold]
#[inline(never)]
pub(crate) fn after_write(before: BeforeWrite, cause: Cause) {
    let new = current_value(before.var, before.hint);
    notify(before.var, before.old.as_ref(), new.as_ref(), cause);
}

fn notify(id: VarId, old: Option<&Value>, new: Option<&Value>, cause: Cause) {
    let Some(_hook) = HookScope::enter() else {
        return;
    };
    with_snapshot(|s| {
        for e in s.vars.iter().filter(|e| e.var == id) {
            call(e.name, "variable", &e.off, || (e.f)(old, new, cause));
        }
    });
}

/// The observed variables' values before a switch, to tell which ones the
/// switch changes.
pub(crate) struct BeforeSwitch {
    previous: Option<u64>,
    /// Each observed variable, its address (see `current_value`), its value.
    values: Vec<(VarId, usize, Option<Value>)>,
    _hook: HookScope,
}

/// Before a switch away from the context with id `previous` (in
/// `Current::enter`, with observers installed): what the switch needs to
/// report afterwards. `None` inside a hook: the switch is not observed.
#[cold]
#[inline(never)]
pub(crate) fn before_switch(previous: Option<u64>) -> Option<BeforeSwitch> {
    let hook = HookScope::enter()?;
    let mut values: Vec<(VarId, usize, Option<Value>)> = Vec::new();
    with_snapshot(|s| {
        for e in &s.vars {
            if !values.iter().any(|(id, _, _)| *id == e.var) {
                values.push((e.var, e.hint, None));
            }
        }
    });
    for (id, hint, value) in &mut values {
        *value = current_value(*id, *hint);
    }
    Some(BeforeSwitch {
        previous,
        values,
        _hook: hook,
    })
}

/// After the switch to the context with id `current`: tells the observers
/// of each variable whose value it changed, then the switch observers.
#[cold]
#[inline(never)]
pub(crate) fn after_switch(before: BeforeSwitch, current: Option<u64>) {
    let switch = Switch {
        previous: before.previous,
        current,
    };
    for (id, hint, old) in &before.values {
        let new = current_value(*id, *hint);
        let same = match (old, &new) {
            (None, None) => true,
            (Some(a), Some(b)) => Value::ptr_eq(a, b),
            _ => false,
        };
        if !same {
            with_snapshot(|s| {
                for e in s.vars.iter().filter(|e| e.var == *id) {
                    call(e.name, "variable", &e.off, || {
                        (e.f)(old.as_ref(), new.as_ref(), Cause::Switch)
                    });
                }
            });
        }
    }
    with_snapshot(|s| {
        for e in &s.switch {
            call(e.name, "switch", &e.off, || (e.f)(&switch));
        }
    });
    drop(before);
}
