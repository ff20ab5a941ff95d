//! The write path: every write of a variable goes through
//! [`write_current`] (`set`, `reset` and guards, merges, the end of a
//! scope written into the map), which opens the current context for the
//! write, tells the misuse check and the observers, and drops what the
//! write let go of only once it is closed; and `scope` ([`scoped`]), which
//! puts its value on the context's list of scoped values instead of into
//! the map, until something needs the map as it is ([`write_scoped`]).
//!
//! **Invariant:** no user code (a value's `Drop`, an observer's hook) runs
//! while a write is open: what the write replaces is returned or dropped
//! after the lock is released and the read cache refreshed, and the hooks
//! are told after that. While a `with` borrow is live in the current entry,
//! a write copies the map instead of mutating it, and parks the version the
//! borrow reads.

use std::cell::{Cell, UnsafeCell};
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::ptr;
use std::sync::Arc;

use super::observers::{Cause, after_write, before_write, vars_observed};
use super::read::tag_scoped;
use super::scoped::{Scoped, insert_scoped, scoped_entries};
use super::state::{Context, ForkLink};
use super::switch::enter_base;
use super::thread::{Current, PARKED, PARKED_BIT, READER, current};
use crate::map::{Garbage, Map, Value, VarId};
use crate::read_cache::Slot;
use crate::sync::Ordering;

/// The current context, opened for one write: what `set` and `reset` see
/// of it. (In a generator's resumption context this is the generator's own
/// map: what it sets and resets is its own, and reads fall through to the
/// caller's values; see `generator`.)
pub(crate) struct Writer<'a> {
    /// The context written, current on this thread.
    ctx: &'a Context,
    map: &'a mut Map,
    /// Nodes the write lets go of, dropped after the write is closed.
    garbage: &'a mut Garbage,
}

impl Writer<'_> {
    /// The context's id, which tokens record.
    #[inline]
    pub(crate) fn context(&self) -> u64 {
        self.ctx.id()
    }

    /// The fork the context is the child of, for a token made here.
    #[inline]
    pub(crate) fn fork(&self) -> Option<Arc<ForkLink>> {
        Option::clone(&self.ctx.fork)
    }

    /// Sets `id` to `value`; returns the value it replaces (what a token
    /// records).
    #[inline]
    pub(crate) fn insert(&mut self, id: VarId, value: Value) -> Option<Value> {
        self.map.insert(id, value, self.garbage)
    }

    /// Gives `id` back its value `old` (`None`: no value), as `reset` does;
    /// returns the value that goes, to be dropped once the write is over.
    #[inline]
    pub(crate) fn restore(&mut self, id: VarId, old: Option<Value>) -> Option<Value> {
        match old {
            Some(old) => self.map.insert(id, old, self.garbage),
            None => self.map.remove(id, self.garbage),
        }
    }
}

/// Runs `f` on the current context for writing, creating the thread's base
/// context if there is no current context yet. Everything `f` returns or
/// leaves in the garbage is dropped only after the write is closed, so no
/// value's destructor runs under it. `checked`: the variable a `set` writes,
/// for the misuse check (`misuse`); a reset is never a misuse. `observed`:
/// the variable written and why, for its observers (`observe`), told once
/// the write is closed; `None` for a write that is not a change of what
/// reads see (a scope's end, which `scope` reports itself).
///
/// This is the one write path: every write of a variable (`set`, `reset`,
/// a guard, a merge, the end of a scope written into the map) goes through
/// it, so none bypasses the misuse check or the observers.
#[inline(always)]
pub(crate) fn write_current<R>(
    checked: Option<VarId>,
    observed: Option<(VarId, Cause)>,
    f: impl FnOnce(Writer<'_>) -> R,
) -> R {
    let cur = current();
    let mut ctx = cur.ctx.get();
    if ctx.is_null() {
        ctx = enter_base();
    }
    // SAFETY: a current context is alive (the entry that made it current
    // borrows it until it ends).
    write_to(cur, unsafe { &*ctx }, checked, observed, f)
}

/// [`write_current`] for a write that belongs to the context with id
/// `home`, a drawn id (a token's, which `reset` writes back): `f` gets
/// `input`, or, if the current context is another one (or there is none),
/// `input` comes back as the `Err`, and nothing was opened, told or
/// changed. The check reads the context that the write then opens, so a
/// `reset` looks it up once; and it is no misuse check (`checked`): a reset
/// never is one.
#[inline(always)]
pub(crate) fn write_current_in<I, R>(
    home: u64,
    observed: Option<(VarId, Cause)>,
    input: I,
    f: impl FnOnce(Writer<'_>, I) -> R,
) -> Result<R, I> {
    let cur = current();
    // SAFETY: as in `write_current`.
    match unsafe { cur.ctx.get().as_ref() } {
        Some(ctx) if ctx.has_id(home) => Ok(write_to(cur, ctx, None, observed, |w| f(w, input))),
        _ => Err(input),
    }
}

/// The body of the write path: `ctx` is `cur`'s current context.
#[inline(always)]
fn write_to<R>(
    cur: &Current,
    ctx: &Context,
    checked: Option<VarId>,
    observed: Option<(VarId, Cause)>,
    f: impl FnOnce(Writer<'_>) -> R,
) -> R {
    if let Some((var, cause)) = observed {
        if vars_observed() {
            return write_observed(cur, ctx, checked, var, cause, f);
        }
    }
    write_unobserved(cur, ctx, checked, f)
}

/// [`write_current`] with variable observers installed: notes the value
/// visible before the write, and tells the observers after it is closed.
#[cold]
#[inline(never)]
fn write_observed<R>(
    cur: &Current,
    ctx: &Context,
    checked: Option<VarId>,
    var: VarId,
    cause: Cause,
    f: impl FnOnce(Writer<'_>) -> R,
) -> R {
    // `ctx` is still current after `before_write`: it only reads, and
    // whatever runs in it (at most a drop) leaves the thread where it was.
    let before = before_write(var);
    let result = write_unobserved(cur, ctx, checked, f);
    if let Some(before) = before {
        after_write(before, cause);
    }
    result
}

#[inline(always)]
fn write_unobserved<R>(
    cur: &Current,
    ctx: &Context,
    checked: Option<VarId>,
    f: impl FnOnce(Writer<'_>) -> R,
) -> R {
    if !ctx.own_scoped().is_null() {
        write_scoped(cur);
    }
    if let Some(var) = checked {
        if ctx.base {
            crate::misuse::check_base_write(var);
        }
    }
    if cur.readers.get() >= READER {
        park_current_version(ctx);
    }
    // Dropped in the reverse order, also on unwinding: the lock is
    // released, then the read cache refreshed, then the garbage (perhaps
    // the old root) dropped. What `f` returns goes straight to the caller
    // (no copy of it is held across the drops).
    let mut garbage = Garbage::new();
    let _refresh = Refresh;
    let _lock = ctx.lock();
    // SAFETY: this thread is the only writer (the context is current
    // here), and no reader on another thread reads now (`lock`).
    let map = ctx.map.with_mut(|map| unsafe { &mut *map });
    f(Writer {
        ctx,
        map,
        garbage: &mut garbage,
    })
}

/// Refreshes the read cache after a write, when dropped.
struct Refresh;

impl Drop for Refresh {
    #[inline]
    fn drop(&mut self) {
        current().refresh();
    }
}

/// Runs `f` with `value` as `id`'s value in the current context:
/// `sync_scope` (and each poll of a `scope`'s future, through `scoped_lent`).
///
/// The value is not written into the map. It goes on the context's list of
/// scoped values and straight into the thread's read cache, and the scope's
/// end takes it off again: no map write, no version bump, no token. In a
/// shared context (entered with `run` on a `&Context` or an `Arc<Context>`)
/// other threads' `Context::get` read the list too ([`Context::read`],
/// inside `lock`), so taking an entry off is a write (`lock`: a
/// reader may be walking it); putting one on is a release store. In a
/// private context (a thread's base context, a task's or callback's own)
/// neither opens a write.
/// Whatever needs the map as it is writes the list into it first
/// ([`write_scoped`]): a write (`set`, `reset`), a copy, a read through
/// `Context` itself on this thread. The scope's end then restores the map
/// as `reset` does. A switch to another context leaves the list where it
/// is: it belongs to its context, not to the thread.
///
/// **Invariant:** every value on a context's list is the newest value of
/// its variable in that context and is in no map; only the entry's own
/// read-cache slot ever holds it (every read of a variable, `ContextVar`'s,
/// the observers', the snapshots', goes through the slot of its address),
/// and that slot is cleared when it leaves the list. The value's box is on
/// the heap from the start and never moves: a `get` may be cloning it (user
/// code, which may copy or write the context) while a copy or a write puts
/// it into a map, and both must be the one value.
#[inline(always)]
pub(crate) fn scoped<T: Send + Sync + 'static, R>(
    id: VarId,
    addr: usize,
    value: T,
    f: impl FnOnce() -> R,
) -> R {
    scoped_in(id, addr, Value::new(value), DropAs::<T>(PhantomData), f)
}

/// [`scoped`] with a value boxed already, lent by `back` (a future's scope,
/// which holds its value across polls): the scope's end puts the handle
/// back there, also on unwinding, instead of dropping it.
///
/// `value` must have been made by the variable `id` (a `T` of its own).
#[inline(always)]
pub(crate) fn scoped_lent<T: 'static, R>(
    id: VarId,
    addr: usize,
    value: Value,
    back: &mut Option<Value>,
    f: impl FnOnce() -> R,
) -> R {
    scoped_in(id, addr, value, Lent::<T>(back, PhantomData), f)
}

/// What a scope's end does with its value's handle: drop it (`scoped`), or
/// give it back to its lender (`scoped_lent`); and how to drop a value of
/// the variable (the one a restore of the map lets go of).
trait ScopeValue {
    fn end(&mut self, value: Value);
    /// `Value::drop_as` with the variable's type.
    const DROP_AS: unsafe fn(Value);
}

/// Drops a scope's value with its variable's own type.
struct DropAs<T>(PhantomData<T>);

impl<T: 'static> ScopeValue for DropAs<T> {
    const DROP_AS: unsafe fn(Value) = Value::drop_as::<T>;

    #[inline(always)]
    fn end(&mut self, value: Value) {
        // SAFETY: the value is a `T` (`scoped`).
        unsafe { value.drop_as::<T>() };
    }
}

/// Gives a scope's value back to the lender's slot.
struct Lent<'a, T>(&'a mut Option<Value>, PhantomData<T>);

impl<T: 'static> ScopeValue for Lent<'_, T> {
    const DROP_AS: unsafe fn(Value) = Value::drop_as::<T>;

    #[inline(always)]
    fn end(&mut self, value: Value) {
        *self.0 = Some(value);
    }
}

/// The body of [`scoped`] and [`scoped_lent`].
#[inline(always)]
fn scoped_in<R>(
    id: VarId,
    addr: usize,
    value: Value,
    then: impl ScopeValue,
    f: impl FnOnce() -> R,
) -> R {
    let cur = current();
    let mut ctx = cur.ctx.get();
    if ctx.is_null() {
        ctx = enter_base();
    }
    // SAFETY: a current context is alive (as in `write_unobserved`); and it stays
    // alive and current until `f` returns (contexts are left in the order
    // they were entered, also on unwinding).
    let ctx = unsafe { &*ctx };
    let slot = Slot::of(addr);
    let raw = value.as_raw();
    // Its end takes what it owns (`written`, `value`) out of it, also on
    // unwinding: nothing is left for a drop to look at again.
    let entry = ManuallyDrop::new(Scoped {
        id,
        #[cfg(debug_assertions)]
        slot,
        value: UnsafeCell::new(ManuallyDrop::new(value)),
        prev: ctx.own_scoped(),
        written: Cell::new(None),
    });
    // No lock: a reader elsewhere sees the list with or without the entry,
    // both whole (release: with its fields), and none can be mid-way
    // through an entry that goes, as unlinking is a write (`lock`).
    ctx.scoped
        .store(ptr::from_ref(&*entry).cast_mut(), Ordering::Release);
    // Holds the entry by a shared reference: another thread may be reading
    // it until the unlinking has opened its write.
    let end = ScopeEnd {
        ctx,
        entry: &entry,
        slot,
        then,
    };
    // Tagged: a read of it takes no borrow count (see `read_current`).
    cur.cache.fill(slot, id, Some(tag_scoped(raw)));
    let result = f();
    // The end inline on the way out; the guard's drop does it on unwinding.
    ManuallyDrop::new(end).end();
    result
}

/// Ends a `scoped` call, also on unwinding.
struct ScopeEnd<'a, V: ScopeValue> {
    ctx: &'a Context,
    entry: &'a Scoped,
    /// The variable's read-cache slot, the only one that may hold the
    /// entry's value.
    slot: Slot,
    /// What becomes of the value.
    then: V,
}

impl<V: ScopeValue> Drop for ScopeEnd<'_, V> {
    fn drop(&mut self) {
        self.end();
    }
}

impl<V: ScopeValue> ScopeEnd<'_, V> {
    /// Takes the entry off (or restores the map it was written into), and
    /// hands the value to `then`. Runs once: by `scoped`, or by the drop.
    #[inline(always)]
    fn end(&mut self) {
        // Scopes nest, and writing the list into the map empties it whole:
        // an entry is still the head exactly when it was not written.
        let value = if ptr::eq(self.ctx.own_scoped(), self.entry) {
            debug_assert!(self.entry.written.take().is_none());
            {
                let _lock = self.ctx.lock();
                // No reader elsewhere is still walking the entry when its
                // frame goes (`lock`).
                self.ctx
                    .scoped
                    .store(self.entry.prev.cast_mut(), Ordering::Relaxed);
            }
            // The context is current again (or still): the slot is its.
            current().cache.forget(self.slot);
            // SAFETY: the entry is off the list and out of the read cache,
            // so nothing reaches its value: taken once, here.
            unsafe { ManuallyDrop::take(&mut *self.entry.value.get()) }
        } else {
            // SAFETY: a written entry left the list when it was written, and
            // the map holds a handle of its own: taken once, here, before
            // the restore, so that it goes also if the restore panics (a
            // value the restore lets go of may panic in its `drop`).
            let value = unsafe { ManuallyDrop::take(&mut *self.entry.value.get()) };
            let old = self.entry.written.take();
            debug_assert!(old.is_some(), "an entry off the list was written");
            if let Some(old) = old {
                restore_written(self.entry.id, old, V::DROP_AS);
            }
            value
        };
        self.then.end(value);
    }
}

/// The end of a scope whose value was written into the map: restores the
/// map as `reset` does.
#[cold]
#[inline(never)]
fn restore_written(id: VarId, old: Option<Value>, drop_as: unsafe fn(Value)) {
    let replaced = write_current(None, None, |mut w| w.restore(id, old));
    if let Some(replaced) = replaced {
        // SAFETY: `drop_as` is the variable's own (see `scope`).
        unsafe { drop_as(replaced) };
    }
}

/// Writes the current context's scoped values into its map, oldest first,
/// each remembering the value it replaced, and empties the list; the
/// scopes' ends then restore the map.
#[cold]
#[inline(never)]
pub(super) fn write_scoped(cur: &Current) {
    // SAFETY: only called with a current context, which is alive and which
    // this thread alone writes.
    let ctx = unsafe { &*cur.ctx.get() };
    let entries = scoped_entries(ctx.own_scoped());
    if cur.readers.get() >= READER {
        park_current_version(ctx);
    }
    let mut garbage = Garbage::new();
    {
        let _lock = ctx.lock();
        // SAFETY: as above, and no reader elsewhere reads now.
        let map = ctx.map.with_mut(|map| unsafe { &mut *map });
        insert_scoped(&entries, map, &mut garbage, |entry, old| {
            entry.written.set(Some(old));
        });
        ctx.scoped.store(ptr::null_mut(), Ordering::Relaxed);
    }
    cur.refresh();
    drop(garbage);
}

/// Keeps the current version of `ctx`'s map alive while `with` borrows
/// into it are live; the write that follows then copies instead of mutating.
#[cold]
#[inline(never)]
fn park_current_version(ctx: &Context) {
    // SAFETY: this thread is the only writer of its current context.
    let version = ctx.map.with(|map| unsafe { (*map).clone() });
    let mut parked = PARKED.with(Cell::take);
    parked.push(version);
    PARKED.with(|slot| slot.set(parked));
    let cur = current();
    cur.readers.set(cur.readers.get() | PARKED_BIT);
}

/// [`current_map`] without the values of variables not inherited by
/// spawned work: the one place spawns copy from.
#[inline]
pub(crate) fn inherited_map() -> Map {
    current_map().into_inherited()
}

/// An O(1) copy of the current context's map.
#[inline]
pub(crate) fn current_map() -> Map {
    // SAFETY: the map is cloned before anything can switch or write.
    match unsafe { plain_current_map() } {
        Some(map) => map.clone(),
        None => current_map_slow(),
    }
}

/// The current context's map, when it holds all of the context's values
/// (no scoped value waits to be written into it, no generator frame lies
/// under it); `None` otherwise, or with no current context.
///
/// # Safety
///
/// The caller is done with the reference before anything switches the
/// thread's context or writes the current one.
#[inline]
pub(super) unsafe fn plain_current_map<'a>() -> Option<&'a Map> {
    // SAFETY: a current context is alive while it is current, and the
    // caller is done with the reference before it could stop being so.
    let ctx = unsafe { current().ctx.get().as_ref() }?;
    // SAFETY: only this thread writes its current context's map and
    // frame, so reading them here needs no lock.
    let plain = ctx.own_scoped().is_null() && unsafe { ctx.frame.with(|f| (*f).is_none()) };
    // SAFETY: as above.
    plain.then(|| unsafe { ctx.map.with(|m| &*m) })
}

/// [`current_map`] with scoped values to write first, a generator's frame
/// to merge, or no current context at all.
#[cold]
#[inline(never)]
fn current_map_slow() -> Map {
    let cur = current();
    let ctx = cur.ctx.get();
    if ctx.is_null() {
        return Map::default();
    }
    // SAFETY: a current context is alive.
    if !unsafe { (*ctx).own_scoped() }.is_null() {
        write_scoped(cur);
    }
    // SAFETY: a current context is alive and only this thread writes
    // it (map and frame), so reading it here needs no lock.
    let (map, frame) = unsafe { ((*ctx).map.with(|m| &*m), (*ctx).frame.with(|f| &*f)) };
    match frame {
        None => map.clone(),
        Some(frame) => frame.merged(map),
    }
}
