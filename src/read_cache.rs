//! The per-thread read cache: CPython's `ContextVar` cache
//! (`var_cached_tsver`), kept per thread instead of per variable.
//!
//! A [`ReadCache`] remembers recent lookups in the current context's map: 16
//! direct-mapped slots, picked by the variable's address, each holding the
//! value box a variable had (or "no value") and a *tag*: the cache's version
//! in the high 32 bits, the variable's id (below 2³²) in the low ones. A hit
//! costs one thread-local load and one comparison, whatever the map's size.
//!
//! **Invariant:** a slot answers only for the version it was filled under,
//! and the version moves on ([`ReadCache::bump`]) at every switch of context
//! and every write of the current map, before anything the write released
//! is dropped; so a hit always points into the live current map (or at a
//! scoped value still on its context's list: only the entry's own slot
//! holds it, cleared when it leaves; `context` tags such a value's address
//! with its low bit, and the cache stores it as it is given). The version
//! is never 0, so the empty tag never matches.

use std::cell::Cell;
use std::ptr::NonNull;

use crate::map::VarId;

/// How many lookups each thread remembers.
const SLOTS: usize = 16;

/// The version counts in steps of this, so that a version and an id below
/// 2³² combine into one word with an `|`.
const VERSION_STEP: u64 = 1 << 32;
const FIRST_VERSION: u64 = VERSION_STEP;

/// One remembered lookup: the value box (`None`: no value) that the variable
/// with id `tag & 0xffff_ffff` has as of version `tag & !0xffff_ffff`. Two
/// words, so a slot is found with a mask and checked with one comparison.
#[derive(Clone, Copy)]
struct Cached {
    tag: u64,
    value: Option<NonNull<()>>,
}

impl Cached {
    /// Matches no lookup: versions are never 0.
    const NONE: Cached = Cached {
        tag: 0,
        value: None,
    };
}

/// See the module docs.
pub(crate) struct ReadCache {
    version: Cell<u64>,
    slots: [Cell<Cached>; SLOTS],
}

/// Where a variable's lookup is remembered (by the variable's address, so
/// finding it does not wait for the id to load).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slot(usize);

impl Slot {
    #[inline]
    pub(crate) fn of(hint: usize) -> Slot {
        Slot((hint >> 4) % SLOTS)
    }

    /// The slot's index: in range by construction, and masked again so that
    /// a slot kept in memory (a scope's entry) needs no bounds check.
    #[inline]
    fn index(self) -> usize {
        self.0 % SLOTS
    }
}

impl ReadCache {
    /// An empty cache (a `const fn`, for the `const` thread-local).
    pub(crate) const fn new() -> ReadCache {
        ReadCache {
            version: Cell::new(FIRST_VERSION),
            slots: [const { Cell::new(Cached::NONE) }; SLOTS],
        }
    }

    /// The remembered lookup of `id` in `slot`, if it is from this version:
    /// `Some(value)` (a value box, or `None` for "no value").
    #[inline]
    pub(crate) fn get(&self, slot: Slot, id: VarId) -> Option<Option<NonNull<()>>> {
        let cached = self.slots[slot.index()].get();
        (cached.tag == self.version.get() | id).then_some(cached.value)
    }

    /// Remembers `value` as `id`'s, for this version.
    #[inline]
    pub(crate) fn fill(&self, slot: Slot, id: VarId, value: Option<NonNull<()>>) {
        let tag = self.version.get() | id;
        self.slots[slot.index()].set(Cached { tag, value });
    }

    /// Forgets whatever `slot` remembers.
    #[inline]
    pub(crate) fn forget(&self, slot: Slot) {
        self.slots[slot.index()].set(Cached::NONE);
    }

    /// Moves to a new version: every remembered lookup is stale.
    #[inline]
    pub(crate) fn bump(&self) {
        let next = self.version.get().wrapping_add(VERSION_STEP);
        if next == 0 {
            self.wrap();
        } else {
            self.version.set(next);
        }
    }

    /// Versions wrapped (after 2³² switches and writes): forget every slot,
    /// so that none from the last round can match again.
    #[cold]
    #[inline(never)]
    fn wrap(&self) {
        for slot in &self.slots {
            slot.set(Cached::NONE);
        }
        self.version.set(FIRST_VERSION);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(n: usize) -> Option<NonNull<()>> {
        // A pointer never dereferenced: an address without provenance.
        NonNull::new(std::ptr::without_provenance_mut(n))
    }

    #[test]
    fn a_lookup_answers_for_its_id_and_version_only() {
        let cache = ReadCache::new();
        let slot = Slot::of(0x40);
        assert_eq!(cache.get(slot, 7), None, "empty");
        cache.fill(slot, 7, value(8));
        assert_eq!(cache.get(slot, 7), Some(value(8)));
        assert_eq!(cache.get(slot, 9), None, "another id in the same slot");
        cache.fill(slot, 9, None);
        assert_eq!(cache.get(slot, 9), Some(None), "remembered: no value");
        assert_eq!(cache.get(slot, 7), None, "evicted");
        cache.bump();
        assert_eq!(cache.get(slot, 9), None, "stale after a bump");
        cache.fill(slot, 9, value(16));
        cache.forget(slot);
        assert_eq!(cache.get(slot, 9), None, "forgotten");
    }

    /// After 2³² bumps the version wraps; every cached lookup must be
    /// forgotten then, or a slot from the last round could match again.
    #[test]
    fn wrapping_versions_forget_every_cached_lookup() {
        let cache = ReadCache::new();
        cache.version.set(0u64.wrapping_sub(VERSION_STEP));
        let slot = Slot::of(0);
        cache.fill(slot, 3, value(8));
        assert_eq!(cache.get(slot, 3), Some(value(8)));
        cache.bump();
        assert_eq!(cache.version.get(), FIRST_VERSION);
        assert!(cache.slots.iter().all(|s| s.get().tag == 0));
        // The tag filled before the wrap must not match the first version's.
        for _ in 0..3 {
            assert_eq!(cache.get(slot, 3), None);
            cache.bump();
        }
    }

    #[test]
    fn slots_spread_by_address() {
        let used: std::collections::BTreeSet<usize> =
            (0..SLOTS).map(|i| Slot::of(i << 4).0).collect();
        assert_eq!(used.len(), SLOTS);
    }
}
