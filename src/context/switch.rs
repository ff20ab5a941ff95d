//! The switch: making a context the thread's current one and back
//! ([`Current::enter`], [`Current::leave`]), with the `with` borrows of the
//! entry left set aside meanwhile, the observers told; and the thread's
//! base context, made current by its first write and dropped at its exit.
//!
//! **Invariant:** a switch never unwinds and runs no user code while it is
//! half done: the pointer and the read cache's version change together
//! (`Current::refresh`), and only then do observers' hooks run, contained
//! (`report::contain`), so no hook, report or panic payload can leave a
//! context entered or the thread's pointer dangling.

use std::cell::Cell;
use std::mem::ManuallyDrop;
use std::ptr;

use super::state::Context;
use super::thread::{Current, PARKED, PARKED_BIT, STASHED, current};

/// What an entry of a context replaced, for [`Current::leave`] to give
/// back: the context that was current, and the `with` borrows live in it.
#[derive(Clone, Copy)]
pub(crate) struct Entered {
    prev: *const Context,
    /// The `readers` word of the entry left (its borrows, and whether
    /// versions of its map are parked for them, then in `STASHED`).
    readers: usize,
}

impl Current {
    /// Enters `ctx` (null: none) until [`leave`](Current::leave). The new
    /// entry starts with no `with` borrow: those live in the context left
    /// borrow *its* map, so they are set aside (with the versions parked
    /// for them) until the entry ends, and writes in `ctx` do not park its
    /// versions for them. `observed`: whether switch observers hear of it.
    #[inline]
    pub(super) fn enter(&self, ctx: *const Context, observed: bool) -> Entered {
        let readers = self.readers.replace(0);
        if readers & PARKED_BIT != 0 {
            stash_parked();
        }
        Entered {
            prev: self.switch(ctx, observed),
            readers,
        }
    }

    /// Ends the entry that returned `entered`: the context before it is
    /// current again, with its borrows. Their count is back before any
    /// switch observer runs, so a hook's write copies what they borrow.
    #[inline]
    pub(super) fn leave(&self, entered: Entered, observed: bool) {
        debug_assert!(
            self.readers.get() == 0,
            "borrows end inside the entry they were made in"
        );
        if entered.readers & PARKED_BIT != 0 {
            unstash_parked();
        }
        self.readers.set(entered.readers);
        self.switch(entered.prev, observed);
    }

    /// Makes `ctx` (null: none) current; returns the one it replaces.
    /// Never unwinds: observers' hooks run after the switch is complete,
    /// and their panics are caught (`switch_observed`).
    #[inline]
    pub(super) fn switch(&self, ctx: *const Context, observed: bool) -> *const Context {
        if observed && super::observers::active() {
            return switch_observed(self, ctx);
        }
        let prev = self.ctx.replace(ctx);
        self.refresh();
        prev
    }
}

/// `Current::switch` with observers installed: notes the observed
/// variables' values, switches, then calls the hooks with the new context
/// current. Nothing unwinds out of it: the switch itself runs no user code,
/// and whatever runs around it (hooks, the drop of what they were handed)
/// is contained, so a switch is always complete.
#[cold]
#[inline(never)]
fn switch_observed(cur: &Current, ctx: *const Context) -> *const Context {
    // SAFETY: the current context and `ctx` are alive (see `switch`'s callers).
    let id_of = |c: *const Context| unsafe { c.as_ref() }.map(Context::id);
    let previous = id_of(cur.ctx.get());
    let before = crate::report::contain(|| super::observers::before_switch(previous))
        .ok()
        .flatten();
    let prev = cur.ctx.replace(ctx);
    cur.refresh();
    if let Some(before) = before {
        let current = id_of(ctx);
        let _ = crate::report::contain(move || super::observers::after_switch(before, current));
    }
    prev
}

/// Sets the versions parked for the borrows of the entry being left aside
/// (see `Current::enter`), on `STASHED`.
#[cold]
#[inline(never)]
fn stash_parked() {
    let parked = PARKED.with(Cell::take);
    let mut stashed = STASHED.with(Cell::take);
    stashed.push(ManuallyDrop::into_inner(parked));
    STASHED.with(|slot| slot.set(stashed));
}

/// Gives the entry ended back the versions parked for its borrows.
#[cold]
#[inline(never)]
fn unstash_parked() {
    let mut stashed = STASHED.with(Cell::take);
    let parked = stashed
        .pop()
        .expect("an entry that set parked versions aside");
    if stashed.is_empty() {
        // The outermost such entry: the list's buffer goes with it (the
        // thread-local has no destructor to free it at thread exit).
        drop(ManuallyDrop::into_inner(stashed));
    } else {
        STASHED.with(|slot| slot.set(stashed));
    }
    let inner = PARKED.with(|slot| slot.replace(ManuallyDrop::new(parked)));
    debug_assert!(inner.is_empty(), "an entry frees its parked versions");
    drop(ManuallyDrop::into_inner(inner));
}

/// The thread's base context, dropped at thread exit.
struct Base(Context);

impl Drop for Base {
    fn drop(&mut self) {
        // `CURRENT` has no destructor, so it is still there; after this the
        // context's own `Drop` releases its values inside it (see
        // `Context::release`), so their destructors can use variables.
        let this: *const Context = &self.0;
        let cur = current();
        if cur.ctx.get() == this {
            // The same address, with a provenance this drop's `&mut`
            // allows: observers read the context being left, and the
            // pointer `enter_base` stored came from a shared borrow that
            // the thread-local's destructor has since invalidated.
            cur.ctx.set(this);
            cur.switch(ptr::null(), true);
        }
    }
}

/// A base context made on the heap for writes that come after the thread's
/// `BASE` was torn down (from another thread-local's destructor); freed by
/// this thread-local's own destructor, if it can still register one.
struct LateBase(Cell<*mut Context>);

impl Drop for LateBase {
    fn drop(&mut self) {
        let ctx = self.0.replace(ptr::null_mut());
        if ctx.is_null() {
            return;
        }
        let cur = current();
        if cur.ctx.get() == ctx.cast_const() {
            cur.switch(ptr::null(), true);
        }
        // SAFETY: made by `Box::into_raw` in `enter_base`, and no longer
        // current, so nothing else points at it.
        drop(unsafe { Box::from_raw(ctx) });
    }
}

crate::sync::thread_local! {
    static BASE: Base = Base(Context::base());
    /// A base context made after `BASE` was torn down (see `enter_base`).
    static LATE_BASE: LateBase = const { LateBase(Cell::new(ptr::null_mut())) };
}

/// Makes the thread's base context current (creating it on first use).
///
/// After the thread's `BASE` was torn down (a write from another
/// thread-local's destructor), the base is a new context on the heap,
/// freed by `LATE_BASE`'s destructor; if even that one has run, the context
/// is leaked (with whatever such late writes put in it) rather than abort
/// the thread's exit.
#[cold]
#[inline(never)]
pub(super) fn enter_base() -> *const Context {
    let base = match BASE.try_with(|base| &base.0 as *const Context) {
        Ok(base) => base,
        Err(_) => {
            let late = Box::into_raw(Box::new(Context::base()));
            let _ = LATE_BASE.try_with(|slot| {
                let older = slot.0.replace(late);
                if !older.is_null() {
                    // SAFETY: made here earlier and no longer current
                    // (the thread had no current context).
                    drop(unsafe { Box::from_raw(older) });
                }
            });
            late
        }
    };
    current().switch(base, true);
    base
}

/// The id of the current context, making the thread's base context current
/// first if it has none yet (so the id stays the same until a switch).
pub(crate) fn current_id_or_base() -> u64 {
    if let Some(id) = super::read::current_id() {
        return id;
    }
    // SAFETY: `enter_base` returns the context it made current, alive.
    unsafe { (*enter_base()).id() }
}

// Entering by pointer, for tokio's task hooks (`crate::tokio::hooks`): a
// hook cannot wrap the poll in a closure (tokio calls "before poll" and
// "after poll" as two separate functions), so it enters and leaves by hand,
// as `run_exclusive` does inside one call.

/// Makes `ctx` the thread's current context and returns the one it replaces,
/// to be handed back to [`leave_raw`] when the poll ends.
///
/// # Safety
///
/// `ctx` must be alive and unreachable from every other thread (a private
/// context the caller owns, as `run_exclusive`'s `&mut` guarantees) until
/// [`leave_raw`] is called with the returned pointer on this same thread,
/// and every enter/leave pair on this thread must nest.
#[cfg(all(feature = "tokio", tokio_unstable, not(loom)))]
#[inline]
pub(crate) unsafe fn enter_raw(ctx: *const Context) -> Entered {
    current().enter(ctx, true)
}

/// Restores `prev`, the context [`enter_raw`] returned.
///
/// # Safety
///
/// `prev` must be what the matching [`enter_raw`] on this thread returned,
/// and still alive (it is: a context stays alive while it is entered under
/// another, see `Exit`, `ExitExclusive` and `Base`).
#[cfg(all(feature = "tokio", tokio_unstable, not(loom)))]
#[inline]
pub(crate) unsafe fn leave_raw(prev: Entered) {
    current().leave(prev, true);
}
