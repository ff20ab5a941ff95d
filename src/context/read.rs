//! The read path: a variable's value in the current context, through the
//! thread's read cache, without a lock, an atomic or a clone
//! ([`read_current`]); and the `with` borrows that keep what a read hands
//! out alive while the reader's own code writes.
//!
//! **Invariant:** a cached lookup answers only for the map version it was
//! made in (the version moves at every switch and write), and a value a
//! read borrows is neither mutated nor freed until the borrow ends: a map
//! value is kept by the borrow count (writes copy and park the old version
//! while it is non-zero), a scoped value by its scope's entry (scopes nest,
//! so the entry outlives every borrow inside the scope).

use std::ptr::NonNull;
use std::sync::Arc;

use super::state::{Context, ForkLink};
use super::thread::{Current, PARKED, PARKED_BIT, READER, current};
use crate::map::{Value, VarId};
use crate::read_cache::Slot;

/// Calls `f` with the current context's value for `id`, without locks,
/// atomics or clones. The reference stays valid for all of `f`, even if `f`
/// writes to the context: while `f` runs, writes copy instead of mutating.
///
/// `id` may be 0, for a variable not given an id yet: that never hits the
/// cache (no slot's tag holds id 0), and `assign` then gives it one.
/// `addr`, the variable's address, picks its read-cache slot.
#[inline]
pub(crate) fn read_current<R>(
    id: VarId,
    addr: usize,
    assign: impl FnOnce() -> VarId,
    f: impl FnOnce(Option<&Value>) -> R,
) -> R {
    let cur = current();
    // `addr` only picks the slot, so finding it does not wait for `id` to
    // load; `id` decides a hit.
    let slot = Slot::of(addr);
    let found = match cur.cache.get(slot, id) {
        Some(hit) => hit,
        None => look_up(cur, slot, if id == 0 { assign() } else { id }),
    };
    // A scoped value (see `SCOPED`) needs no count, its entry holds it; nor
    // does no value.
    let counted = found.is_some_and(|raw| raw.as_ptr().addr() & SCOPED == 0);
    let _reading = counted.then(Reading::start);
    // SAFETY: `found` is in the current map as of the current version: the
    // map holds a handle to it until it is written, and every write bumps
    // the version. The `readers` count makes every write during `f` copy the
    // nodes and park the old version in `PARKED`, so the box `f` borrows
    // is neither mutated nor freed until `f` returns. Or `found` is the
    // value of a `scope` under way on this thread, tagged `SCOPED`: its
    // entry holds a handle to it until the scope ends, after `f` returns
    // (scopes nest), whatever `f` writes (a write hands the map a handle
    // of its own).
    let value = found.map(|raw| unsafe { Value::borrow_raw(untag(raw)) });
    f(value.as_deref())
}

/// The low bit of a value's address in the read cache: the value is a
/// `scope`'s, held by the scope's entry (value boxes are word-aligned, so
/// the bit is free).
const SCOPED: usize = 1;

/// `raw`, a scoped value's box, tagged `SCOPED` for the read cache.
#[inline(always)]
pub(super) fn tag_scoped(raw: NonNull<()>) -> NonNull<()> {
    // SAFETY: an address with its low bit set is not null.
    unsafe { NonNull::new_unchecked(raw.as_ptr().map_addr(|a| a | SCOPED)) }
}

/// The box `raw` (from the read cache) points to, without the `SCOPED` tag.
#[inline(always)]
fn untag(raw: NonNull<()>) -> NonNull<()> {
    // SAFETY: a box's address is word-aligned and not null, so clearing
    // the tag bit leaves it not null.
    unsafe { NonNull::new_unchecked(raw.as_ptr().map_addr(|a| a & !SCOPED)) }
}

/// A cache miss: looks `id` up in the current map and remembers the answer
/// in `slot`.
#[cold]
#[inline(never)]
fn look_up(cur: &Current, slot: Slot, id: VarId) -> Option<NonNull<()>> {
    #[cfg(test)]
    LOOK_UPS.with(|n| n.set(n.get() + 1));
    // SAFETY: a current context is alive (the entry that made it current
    // borrows it until it ends). Its `scoped` links entries that live in
    // the frames of the `scope` calls under way inside it on this thread,
    // which unlink them before they end.
    let mut entry = unsafe { cur.ctx.get().as_ref().and_then(|c| c.own_scoped().as_ref()) };
    while let Some(e) = entry {
        if e.id == id {
            // SAFETY: the value is taken only after the entry left the list.
            let value = Some(tag_scoped(unsafe { &*e.value.get() }.as_raw()));
            // Every read of a variable goes through its own slot (its
            // address), the one the scope's end clears.
            #[cfg(debug_assertions)]
            assert!(slot == e.slot, "a variable is read through its own slot");
            cur.cache.fill(slot, id, value);
            return value;
        }
        // SAFETY: as above.
        entry = unsafe { e.prev.as_ref() };
    }
    // SAFETY: the current context is alive (as above), and only this
    // thread writes its map and frame, so it reads them without a lock.
    let value = unsafe { cur.ctx.get().as_ref() }.and_then(|ctx| {
        // SAFETY: as above.
        let own = ctx.map.with(|map| unsafe { &*map }).get(id);
        // SAFETY: as above.
        own.or_else(|| unsafe { ctx.outer_value(id) })
            .map(Value::as_raw)
    });
    cur.cache.fill(slot, id, value);
    value
}

/// Marks a `with` borrow in the current entry for its lifetime; when the
/// last one ends, drops the map versions kept alive for it.
struct Reading;

impl Reading {
    #[inline]
    fn start() -> Reading {
        let cur = current();
        cur.readers.set(cur.readers.get() + READER);
        Reading
    }
}

impl Drop for Reading {
    #[inline]
    fn drop(&mut self) {
        let cur = current();
        let left = cur.readers.get() - READER;
        cur.readers.set(left);
        if left == PARKED_BIT {
            free_parked_versions();
        }
    }
}

#[cold]
#[inline(never)]
fn free_parked_versions() {
    #[cfg(test)]
    FREE_PARKED_CALLS.with(|n| n.set(n.get() + 1));
    let cur = current();
    cur.readers.set(cur.readers.get() & !PARKED_BIT);
    drop(std::mem::ManuallyDrop::into_inner(
        PARKED.with(std::cell::Cell::take),
    ));
}

/// The current context, if the thread has one yet.
#[inline]
fn current_context() -> Option<&'static Context> {
    // SAFETY: a current context is alive while it is current, and the
    // reference does not leave the callers below.
    unsafe { current().ctx.get().as_ref() }
}

/// The id of the current context, if the thread has one yet.
#[inline]
pub(crate) fn current_id() -> Option<u64> {
    current_context().map(Context::id)
}

/// The fork the current context is the child of, if it is one.
#[cold]
pub(crate) fn current_fork() -> Option<Arc<ForkLink>> {
    current_context().and_then(|ctx| Option::clone(&ctx.fork))
}

#[cfg(test)]
thread_local! {
    /// Read-cache misses on this thread (unit tests count them).
    pub(crate) static LOOK_UPS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    /// Calls of `free_parked_versions` (a borrow's slow end) on this thread.
    static FREE_PARKED_CALLS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ContextVar;

    /// A `with` borrow under which nothing was written ends on the fast
    /// path, also after an earlier borrow parked (and freed) a version.
    #[test]
    fn a_borrow_after_one_that_parked_a_version_ends_on_the_fast_path() {
        static V: ContextVar<u32> = ContextVar::new("v");
        std::thread::spawn(|| {
            let calls = || FREE_PARKED_CALLS.with(std::cell::Cell::get);
            V.set(1);
            V.with(|old| {
                V.set(2);
                assert_eq!(old, Some(&1));
            });
            assert_eq!(calls(), 1, "the parked version was freed");
            V.with(|v| assert_eq!(v, Some(&2)));
            assert_eq!(calls(), 1, "and the next borrow parked nothing");
        })
        .join()
        .unwrap();
    }
}
