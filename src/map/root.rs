//! [`Map`]: its root (flat up to [`FLAT_MAX`] entries, else a branch), its
//! counts, and the operations that start at the root: `get`, `insert` (in
//! place when the whole path is the map's own), `remove`.
//!
//! **Invariant:** `len` and `locals` count the map's entries and those of
//! variables not inherited, and a flat root's first `len` slots are its
//! entries; every write keeps them so.

use super::branch::{find, insert, remove};
use super::copy_on_write::{grow, make_mut, take_entry};
use super::garbage::Garbage;
use super::node::{BITS, Child, Node, bit_at, build, position, unique_mut};
use crate::ids::{VarId, is_local};
use crate::value::Value;

/// Roots with at most this many entries are flat arrays, scanned linearly.
/// Measured (instructions per `get`, sparse ids): a flat scan beats the
/// bitmap walk up to 4 entries (70 vs 78) and loses at 8 (84 vs 78).
pub const FLAT_MAX: usize = 4;

#[cfg(test)]
thread_local! {
    /// Writes on this thread that missed the in-place path (`slot_mut`):
    /// the unit tests count them, as only speed shows them otherwise.
    pub(crate) static SLOW_INSERTS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// A persistent map from [`VarId`] to [`Value`]. `Clone` is O(1).
#[derive(Clone, Default)]
pub struct Map {
    /// The root node: `None` when empty; flat when `bitmap` is 0 (its first
    /// `len` slots are the entries, in no particular order, and the rest are
    /// [`Child::Vacant`]); otherwise a branch.
    pub(super) root: Option<Node>,
    bitmap: u32,
    len: u32,
    /// How many entries belong to variables not inherited by spawned work
    /// (ids with `ids::LOCAL_BIT`), so a spawn copy of a map without any
    /// costs one comparison more than a plain copy.
    locals: u32,
}

impl Map {
    /// An empty map whose flat root has room for `room` entries (at most
    /// [`FLAT_MAX`]): for a map about to be filled with a known number of
    /// entries, which then grows no node on the way (as an emptied map keeps
    /// its room, see `remove`).
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    pub(crate) fn with_room(room: usize) -> Map {
        debug_assert!(room <= FLAT_MAX, "a flat root holds at most FLAT_MAX");
        Map {
            root: (room > 0).then(|| build(room, std::iter::empty())),
            ..Map::default()
        }
    }

    /// How many entries the map has.
    #[inline]
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// How many entries belong to variables not inherited by spawned work.
    /// (Read by a test through `__bench_internals`.)
    #[inline]
    #[cfg_attr(not(feature = "__bench_internals"), allow(dead_code))]
    pub fn locals(&self) -> usize {
        self.locals as usize
    }

    /// This map without the entries of variables not inherited by spawned
    /// work: itself when it has none (one comparison), else a copy without
    /// them.
    #[inline]
    pub fn into_inherited(self) -> Map {
        if self.locals == 0 {
            return self;
        }
        self.without_locals()
    }

    #[cold]
    #[inline(never)]
    fn without_locals(mut self) -> Map {
        let locals: Vec<VarId> = self
            .iter()
            .map(|(id, _)| id)
            .filter(|&id| is_local(id))
            .collect();
        // The removed values stay in the original map, and the copied nodes
        // are shared with it, so this garbage drops no value.
        let mut garbage = Garbage::new();
        for id in locals {
            self.remove(id, &mut garbage);
        }
        self
    }

    /// Whether the map has no entries.
    #[allow(dead_code, reason = "the pair of `len`; used by tests")]
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The value of `id`.
    #[inline]
    pub fn get(&self, id: VarId) -> Option<&Value> {
        lookup(self.root_slots(), self.bitmap, id)
    }

    /// The root's slots a lookup reads: a flat root's entries without the
    /// vacant room after them, or all of a branch.
    #[inline]
    fn root_slots(&self) -> &[Child] {
        match &self.root {
            None => &[],
            Some(root) if self.bitmap == 0 => &root[..self.len as usize],
            Some(root) => root,
        }
    }

    /// Whether `id` has a value.
    #[inline]
    pub fn contains(&self, id: VarId) -> bool {
        self.get(id).is_some()
    }

    /// Sets `id` to `value`; returns the value it replaces.
    #[inline]
    pub fn insert(&mut self, id: VarId, value: Value, garbage: &mut Garbage) -> Option<Value> {
        // The common write replaces a value this map holds alone: in place,
        // with no copy and no garbage.
        match self.slot_mut(id) {
            Some(slot) => Some(std::mem::replace(slot, value)),
            None => self.insert_slow(id, value, garbage),
        }
    }

    /// The value of `id`, if the whole path to it is held by this map alone
    /// (so it can be written in place).
    #[inline]
    fn slot_mut(&mut self, id: VarId) -> Option<&mut Value> {
        let root = unique_mut(self.root.as_mut()?)?;
        if self.bitmap == 0 {
            return root[..self.len as usize]
                .iter_mut()
                .find_map(|child| match child {
                    Child::Entry { id: i, value } if *i == id => Some(value),
                    _ => None,
                });
        }
        let (mut bitmap, mut slots, mut shift) = (self.bitmap, root, 0);
        loop {
            let bit = bit_at(id, shift);
            if bitmap & bit == 0 {
                return None;
            }
            match &mut slots[position(bitmap, bit)] {
                Child::Entry { id: i, value } => return (*i == id).then_some(value),
                Child::Node {
                    bitmap: b,
                    slots: s,
                } => (bitmap, slots, shift) = (*b, unique_mut(s)?, shift + BITS),
                Child::Vacant => return None,
            }
        }
    }

    #[inline(never)]
    fn insert_slow(&mut self, id: VarId, value: Value, garbage: &mut Garbage) -> Option<Value> {
        #[cfg(test)]
        SLOW_INSERTS.with(|n| n.set(n.get() + 1));
        let Some(root) = &mut self.root else {
            self.root = Some(build(1, std::iter::once(Child::Entry { id, value })));
            self.len = 1;
            self.locals = u32::from(is_local(id));
            return None;
        };
        let len = self.len as usize;
        let old = if self.bitmap != 0 {
            insert(&mut self.bitmap, root, id, value, 0, garbage)
        } else if let Some(pos) = root[..len].iter().position(|c| c.is_entry_of(id)) {
            match &mut make_mut(root, garbage)[pos] {
                Child::Entry { value: v, .. } => Some(std::mem::replace(v, value)),
                _ => unreachable!("a flat root's first `len` slots are entries"),
            }
        } else if len < FLAT_MAX {
            let entry = Child::Entry { id, value };
            match unique_mut(root) {
                Some(slots) if len < slots.len() => slots[len] = entry,
                // The root is this map's own and full: double its room, as
                // a map written here is likely written again.
                Some(slots) => {
                    let room = (2 * slots.len()).clamp(1, FLAT_MAX);
                    grow(root, len, len, entry, room, garbage);
                }
                // Shared: a copy with just the room it needs, as most copies
                // differ from their original by a variable or two.
                None => grow(root, len, len, entry, len + 1, garbage),
            }
            None
        } else {
            // The flat root is full: turn it into a branch.
            let (mut bitmap, mut branch) = (0, build(0, std::iter::empty()));
            for child in root[..len].iter().cloned() {
                let Child::Entry { id, value } = child else {
                    unreachable!("a flat root's first `len` slots are entries")
                };
                insert(&mut bitmap, &mut branch, id, value, 0, garbage);
            }
            insert(&mut bitmap, &mut branch, id, value, 0, garbage);
            garbage.push(std::mem::replace(root, branch));
            self.bitmap = bitmap;
            None
        };
        if old.is_none() {
            self.len += 1;
            self.locals += u32::from(is_local(id));
        }
        old
    }

    /// Removes `id`; returns the value it had.
    pub fn remove(&mut self, id: VarId, garbage: &mut Garbage) -> Option<Value> {
        let root = self.root.as_mut()?;
        let len = self.len as usize;
        let old = if self.bitmap != 0 {
            remove(&mut self.bitmap, root, id, 0, garbage)
        } else {
            let pos = root[..len].iter().position(|c| c.is_entry_of(id))?;
            take_entry(root, len, pos, garbage)
        }?;
        self.len -= 1;
        self.locals -= u32::from(is_local(id));
        // An emptied map keeps a flat root's room (for the next `set`), but
        // not a former branch's: that is up to 32 slots held for nothing.
        if self.len == 0
            && self
                .root
                .as_ref()
                .is_some_and(|root| root.is_empty() || root.len() > FLAT_MAX)
        {
            if let Some(root) = self.root.take() {
                garbage.push(root);
            }
            self.bitmap = 0;
        }
        Some(old)
    }
}

/// Looks `id` up under a root node.
#[inline]
fn lookup(root: &[Child], bitmap: u32, id: VarId) -> Option<&Value> {
    if bitmap == 0 {
        return root.iter().find_map(|child| match child {
            Child::Entry { id: i, value } if *i == id => Some(value),
            _ => None,
        });
    }
    find(bitmap, root, id, 0)
}
