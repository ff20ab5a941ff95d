//! The observers' engine: the installed hooks (an immutable list each
//! thread caches), and what the switch and the write path call when any
//! are installed. The public side (`on_switch`, `ContextVar::observe`,
//! `Observer`) is `crate::observe`.
//!
//! The core calls in at two points: `switch` (every switch: `run`, each poll
//! of a context-carrying future, the task hooks, generator resumptions, a
//! thread's base context), and the write path (`write::write_current`, every
//! write of a variable). Each first reads one global flag (`ACTIVE`, a
//! relaxed load); with no observer installed that is all it does. A
//! notification takes no lock and shares no counter: the list of observers
//! is re-read only when the global generation moves.
//!
//! **Invariant:** a hook never runs inside another hook on the same thread
//! (`IN_HOOK`): whatever a hook reads, writes or enters is not observed, so
//! hooks that use variables cannot recurse, let alone without bound. And
//! nothing a hook does escapes into the switch or write that called it: its
//! panic (and the drop of the panic's payload) is caught, reported once
//! naming the observer, and that observer is switched off.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::read::read_current;
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
    installed: None,
});

struct Registry {
    next: u64,
    installed: Option<Arc<Installed>>,
}

/// The observers installed at one moment; never changed once published.
#[derive(Default, Clone)]
struct Installed {
    switch: Vec<Arc<SwitchEntry>>,
    vars: Vec<Arc<VarEntry>>,
}

struct SwitchEntry {
    id: u64,
    name: &'static str,
    off: AtomicBool,
    f: Box<dyn Fn(&Switch) + Send + Sync>,
}

pub(crate) type ErasedChange = dyn Fn(Option<&Value>, Option<&Value>, Cause) + Send + Sync;

struct VarEntry {
    id: u64,
    var: VarId,
    /// The variable's address: which read-cache slot its reads go through.
    addr: usize,
    name: &'static str,
    off: AtomicBool,
    f: Box<ErasedChange>,
}

thread_local! {
    /// Whether a hook is running on this thread (see the module invariant).
    static IN_HOOK: Cell<bool> = const { Cell::new(false) };
    /// This thread's copy of the published observers, with its generation.
    static CACHE: RefCell<(u64, Option<Arc<Installed>>)> = const { RefCell::new((0, None)) };
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

pub(crate) fn in_hook() -> bool {
    IN_HOOK.with(Cell::get)
}

/// Runs `f` with the current observers, from this thread's cache.
///
/// The cache is refreshed only where it is not borrowed: a hook that runs
/// inside `f` and reaches here again (through `scope`, say) while another
/// thread changed the observers reads the fresh list without caching it.
fn with_installed<R>(f: impl FnOnce(&Installed) -> R) -> R {
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
        let empty = Installed::default();
        Some((f.take().expect("once"))(
            cache.1.as_deref().unwrap_or(&empty),
        ))
    });
    match cached {
        Ok(Some(r)) => r,
        // The cache is borrowed further up this thread's stack, or gone
        // (thread teardown): ask the registry.
        Ok(None) | Err(_) => {
            let installed = published();
            let r =
                (f.take().expect("once"))(installed.as_deref().unwrap_or(&Installed::default()));
            let _ = crate::report::contain(|| drop(installed));
            r
        }
    }
}

fn published() -> Option<Arc<Installed>> {
    REGISTRY
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .installed
        .clone()
}

/// Changes the published list with `edit`; the old list is dropped after the
/// lock is released (its hooks' captures are user values).
fn update(edit: impl FnOnce(&mut Installed, u64)) -> u64 {
    let (id, old) = {
        let mut registry = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
        let id = registry.next;
        registry.next += 1;
        let mut next = registry.installed.as_deref().cloned().unwrap_or_default();
        edit(&mut next, id);
        let bits = if next.switch.is_empty() { 0 } else { SWITCH }
            | if next.vars.is_empty() { 0 } else { VARS };
        let old = registry.installed.replace(Arc::new(next));
        GENERATION.fetch_add(1, Ordering::Release);
        ACTIVE.store(bits, Ordering::Release);
        (id, old)
    };
    drop(old);
    id
}

/// Installs a switch hook named `name`; returns its id, for [`remove`].
pub(crate) fn install_switch(name: &'static str, f: Box<dyn Fn(&Switch) + Send + Sync>) -> u64 {
    update(|s, id| {
        s.switch.push(Arc::new(SwitchEntry {
            id,
            name,
            off: AtomicBool::new(false),
            f,
        }))
    })
}

/// Installs a hook on the variable with id `var` at address `addr`, named
/// `name` (the variable's); returns its id, for [`remove`].
pub(crate) fn install_var(
    var: VarId,
    addr: usize,
    name: &'static str,
    f: Box<ErasedChange>,
) -> u64 {
    update(|s, id| {
        s.vars.push(Arc::new(VarEntry {
            id,
            var,
            addr,
            name,
            off: AtomicBool::new(false),
            f,
        }))
    })
}

/// Removes the observer with id `id`.
pub(crate) fn remove(id: u64) {
    update(|s, _| {
        s.switch.retain(|e| e.id != id);
        s.vars.retain(|e| e.id != id);
    });
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

/// What a switch observer is told: the thread's current context changed.
///
/// The hook runs *after* the switch, with the new context current, so it
/// reads the variables it cares about with [`ContextVar::with`](crate::ContextVar::with) or
/// [`ContextVar::get`](crate::ContextVar::get) as usual (a first read after a switch misses the
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
    /// [`ContextVar::set`](crate::ContextVar::set).
    Set,
    /// [`ContextVar::reset`](crate::ContextVar::reset) / [`try_reset`](crate::ContextVar::try_reset).
    Reset,
    /// The start of a [`ContextVar::sync_scope`](crate::ContextVar::sync_scope), or of a poll (or the
    /// drop) of a [`ContextVar::scope`](crate::ContextVar::scope)'s future.
    ScopeBegin,
    /// The end of a [`ContextVar::sync_scope`](crate::ContextVar::sync_scope) or of a poll (or the drop) of
    /// a [`ContextVar::scope`](crate::ContextVar::scope)'s future (also when it unwinds).
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

/// A handle to the current context's value of `id`, read through the read
/// cache's slot for `addr`, the variable's address, as every read of it is:
/// a scoped value is put into that slot alone, without moving the cache's
/// version on, and cleared from it when its scope ends.
pub(crate) fn current_value(id: VarId, addr: usize) -> Option<Value> {
    read_current(id, addr, || id, |v| v.cloned())
}

pub(crate) fn is_observed(id: VarId) -> bool {
    with_installed(|s| s.vars.iter().any(|e| e.var == id))
}

/// What an observed write of a variable needs from before it: the
/// variable's address (see `current_value`) and the value visible then.
pub(crate) struct BeforeWrite {
    var: VarId,
    addr: usize,
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
    let addr = with_installed(|s| s.vars.iter().find(|e| e.var == id).map(|e| e.addr))?;
    Some(BeforeWrite {
        var: id,
        addr,
        old: current_value(id, addr),
    })
}

/// After the write that `before` was taken for, closed: tells the
/// variable's observers of the change, from the value visible before it to
/// the one visible now.
#[cold]
#[inline(never)]
pub(crate) fn after_write(before: BeforeWrite, cause: Cause) {
    let new = current_value(before.var, before.addr);
    notify(before.var, before.old.as_ref(), new.as_ref(), cause);
}

pub(crate) fn notify(id: VarId, old: Option<&Value>, new: Option<&Value>, cause: Cause) {
    let Some(_hook) = HookScope::enter() else {
        return;
    };
    with_installed(|s| {
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
    with_installed(|s| {
        for e in &s.vars {
            if !values.iter().any(|(id, _, _)| *id == e.var) {
                values.push((e.var, e.addr, None));
            }
        }
    });
    for (id, addr, value) in &mut values {
        *value = current_value(*id, *addr);
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
    for (id, addr, old) in &before.values {
        let new = current_value(*id, *addr);
        let same = match (old, &new) {
            (None, None) => true,
            (Some(a), Some(b)) => Value::ptr_eq(a, b),
            _ => false,
        };
        if !same {
            with_installed(|s| {
                for e in s.vars.iter().filter(|e| e.var == *id) {
                    call(e.name, "variable", &e.off, || {
                        (e.f)(old.as_ref(), new.as_ref(), Cause::Switch)
                    });
                }
            });
        }
    }
    with_installed(|s| {
        for e in &s.switch {
            call(e.name, "switch", &e.off, || (e.f)(&switch));
        }
    });
    drop(before);
}

/// A `scope` of an observed variable: tells its observers of the scope's
/// start (`begun`, inside the scope) and end (the drop, once the scope's
/// own end restored the value, also on unwinding), each from the value
/// visible just before to the one visible after.
pub(crate) struct ScopeNotice {
    var: VarId,
    addr: usize,
    /// The value visible before the scope; then, once its body ended, the
    /// value visible just before its end (the body may have set another).
    before: Cell<Option<Value>>,
    armed: Cell<bool>,
}

impl ScopeNotice {
    /// For a scope of the variable with id `var` at address `addr`: `None`
    /// if it has no observer, or inside a hook (nothing a hook does is
    /// observed).
    #[cold]
    pub(crate) fn new(var: VarId, addr: usize) -> Option<ScopeNotice> {
        if in_hook() || !is_observed(var) {
            return None;
        }
        Some(ScopeNotice {
            var,
            addr,
            before: Cell::new(current_value(var, addr)),
            armed: Cell::new(false),
        })
    }

    /// Inside the scope, first: tells the start; the guard returned notes,
    /// when the body ends, the value visible then.
    pub(crate) fn begun(&self) -> BodyEnd<'_> {
        let old = self.before.take();
        let new = current_value(self.var, self.addr);
        notify(self.var, old.as_ref(), new.as_ref(), Cause::ScopeBegin);
        BodyEnd(self)
    }
}

/// The end of an observed scope's body, before the scope's own end.
pub(crate) struct BodyEnd<'a>(&'a ScopeNotice);

impl Drop for BodyEnd<'_> {
    fn drop(&mut self) {
        let notice = self.0;
        notice.before.set(current_value(notice.var, notice.addr));
        notice.armed.set(true);
    }
}

impl Drop for ScopeNotice {
    fn drop(&mut self) {
        if self.armed.get() {
            let before = self.before.take();
            let now = current_value(self.var, self.addr);
            notify(self.var, before.as_ref(), now.as_ref(), Cause::ScopeEnd);
        }
    }
}
