//! The list of scoped values: data only. A value set by
//! [`ContextVar::sync_scope`](crate::ContextVar::sync_scope) lives beside its
//! context's map instead of in it, in an entry ([`Scoped`]) in the stack
//! frame of the `scope` call, linked at the head of its context's list
//! until the scope ends or something needs the map as it is (the write
//! path then writes the list into it). How entries are pushed, written and
//! taken off is the write path's (`write::scoped`); how they are read, the
//! read path's.
//!
//! **Invariant:** every entry on a context's list is the newest value of
//! its variable in that context and is in no map; entries nest (a scope
//! ends inside the `run` or poll that entered its context), so the list is
//! empty whenever its context is not entered, and an entry not yet written
//! is the list's head when its scope ends.

use std::cell::{Cell, UnsafeCell};
use std::mem::ManuallyDrop;

use crate::map::{Garbage, Map, Value, VarId};
#[cfg(debug_assertions)]
use crate::read_cache::Slot;

/// One scoped value, in the frame of its `scope` call.
pub(crate) struct Scoped {
    pub(super) id: VarId,
    /// The read-cache slot of the variable: the only slot that may hold
    /// this value, cleared when the entry leaves the list (the scope's end
    /// knows it; kept here only to check that reads find it there).
    #[cfg(debug_assertions)]
    pub(super) slot: Slot,
    /// Dropped by the scope's end, with the variable's own type.
    pub(super) value: UnsafeCell<ManuallyDrop<Value>>,
    pub(super) prev: *const Scoped,
    /// `Some(old)` once the value was written into the map (`old` is the
    /// value it replaced there, which the scope's end gives back).
    pub(super) written: Cell<Option<Option<Value>>>,
}

/// A copy of `map` with the values of the list headed by `scoped` on top,
/// for a reader that holds the context's lock but cannot write its map (the
/// entries stay listed while it holds the lock).
#[cold]
#[inline(never)]
pub(super) fn with_scoped(map: &Map, scoped: *const Scoped) -> Map {
    let mut merged = map.clone();
    let mut garbage = Garbage::new();
    insert_scoped(
        &scoped_entries(scoped),
        &mut merged,
        &mut garbage,
        |_, _| (),
    );
    merged
}

/// The entries of a list of scoped values, newest first.
pub(super) fn scoped_entries(mut next: *const Scoped) -> Vec<*const Scoped> {
    let mut entries = Vec::new();
    while !next.is_null() {
        entries.push(next);
        // SAFETY: listed entries live in the frames of their `scope` calls,
        // which unlink them before they end (module invariant); the caller
        // holds the list still (its owner, or a reader under the lock).
        next = unsafe { (*next).prev };
    }
    entries
}

/// Inserts the values of `entries` (a list's, newest first) into `map`,
/// oldest first so that the newest of a variable wins, and hands each entry
/// with the value it replaced to `replaced`.
pub(super) fn insert_scoped(
    entries: &[*const Scoped],
    map: &mut Map,
    garbage: &mut Garbage,
    mut replaced: impl FnMut(&Scoped, Option<Value>),
) {
    for &entry in entries.iter().rev() {
        // SAFETY: listed entries live in the frames of their `scope` calls
        // (module invariant), and the callers hold them listed meanwhile.
        let entry = unsafe { &*entry };
        // SAFETY: as above; the value is taken only after it left the list.
        let value = Value::clone(unsafe { &*entry.value.get() });
        let old = map.insert(entry.id, value, garbage);
        replaced(entry, old);
    }
}
