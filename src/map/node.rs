//! A node of the map: one exact-size `Arc<[Child]>` allocation whose first
//! slots are its children and the rest room ([`Child::Vacant`]); the bit
//! arithmetic of a branch's bitmap; and [`unique_mut`], the one way to
//! write a node in place.
//!
//! **Invariant:** `&mut` to a node is handed out only to the holder of its
//! one handle (nodes have no `Weak` handles), so a node reachable from
//! another map is never written through it.

use std::mem::MaybeUninit;
use std::sync::Arc;
#[cfg(not(contextvars_tsan))]
use std::sync::atomic::{Ordering, fence};

use crate::ids::VarId;
use crate::value::Value;

pub(super) const BITS: u32 = 5;
const MASK: u64 = (1 << BITS) - 1;

/// One slot of a node.
#[derive(Clone)]
pub enum Child {
    /// A variable's value.
    Entry { id: VarId, value: Value },
    /// A branch one level down: `slots[i]` belongs to the `i`-th set bit of
    /// `bitmap`, bit `b` standing for the ids whose 5 bits at that level's
    /// shift equal `b`.
    Node { bitmap: u32, slots: Arc<[Child]> },
    /// Room in a node after its children (a branch's children are its first
    /// `bitmap.count_ones()` slots, a flat root's its first `len`), so that
    /// adding a variable and removing it again (a `set` and `reset` of a
    /// variable the context did not hold) need no allocation once the node
    /// is the map's own. Lookups never reach it.
    Vacant,
}

// Entries are as small as the id and the value handle allow, and the third
// variant costs nothing (checked where the figure is known: 64-bit targets;
// a 32-bit one lays the variants out in its own way).
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<Child>() == 24);

#[inline]
pub(super) fn position(bitmap: u32, bit: u32) -> usize {
    (bitmap & (bit - 1)).count_ones() as usize
}

#[inline]
pub(super) fn bit_at(id: VarId, shift: u32) -> u32 {
    1u32 << ((id >> shift) & MASK)
}

/// Gives mutable access to a node that nobody else holds.
#[cfg(not(contextvars_tsan))]
#[inline]
pub(super) fn unique_mut(node: &mut Arc<[Child]>) -> Option<&mut [Child]> {
    if Arc::strong_count(node) != 1 {
        return None;
    }
    // Pairs with the release decrement of whoever dropped the last other
    // handle, so their reads of the node happen before our writes. (`std`
    // offers no acquire load of the count itself; ThreadSanitizer does not
    // see this fence, hence the variant below.)
    fence(Ordering::Acquire);
    // SAFETY: the node has one strong handle, the one we borrow mutably, and
    // nodes never have `Weak` handles (no file of `map` makes one), so nobody
    // else can reach it or make a new handle to it while we hold `&mut`.
    // This is `Arc::get_mut` without its compare-and-swap on the weak count,
    // which only guards against `Weak` upgrades (see BENCHMARKS.md).
    Some(unsafe { &mut *(Arc::as_ptr(node) as *mut [Child]) })
}

/// Under ThreadSanitizer (`build.rs`), which does not model standalone
/// fences: `Arc::get_mut`, whose acquire load of the strong count TSan sees.
/// The same ordering, plus a compare-and-swap on the weak count that only
/// costs time.
#[cfg(contextvars_tsan)]
#[inline]
pub(super) fn unique_mut(node: &mut Arc<[Child]>) -> Option<&mut [Child]> {
    Arc::get_mut(node)
}

/// A new node of `room` slots: `children` first, then room.
///
/// Written slot by slot into one allocation: collecting the chained
/// iterators that feed it into an `Arc<[Child]>` would go through a `Vec`
/// first, a second allocation and a copy (see BENCHMARKS.md).
pub(super) fn build(room: usize, children: impl Iterator<Item = Child>) -> Arc<[Child]> {
    let node = Arc::<[Child]>::new_uninit_slice(room);
    // SAFETY: the node was just made, so this is its one handle and nothing
    // else can read or write it while we fill it.
    let slots = unsafe { &mut *(Arc::as_ptr(&node) as *mut [MaybeUninit<Child>]) };
    let mut children = children.into_iter();
    let mut filled = 0;
    for (slot, child) in slots.iter_mut().zip(&mut children) {
        slot.write(child);
        filled += 1;
    }
    debug_assert!(children.next().is_none(), "more children than room");
    for slot in &mut slots[filled..] {
        slot.write(Child::Vacant);
    }
    // SAFETY: every slot was written just above.
    unsafe { node.assume_init() }
}

impl Child {
    /// The value, if this is an entry.
    #[inline]
    pub(super) fn value(&self) -> Option<&Value> {
        match self {
            Child::Entry { value, .. } => Some(value),
            _ => None,
        }
    }

    /// Moves the child out, leaving room in its place.
    #[inline]
    pub(super) fn take(&mut self) -> Child {
        std::mem::replace(self, Child::Vacant)
    }

    #[inline]
    pub(super) fn is_entry_of(&self, id: VarId) -> bool {
        matches!(self, Child::Entry { id: i, .. } if *i == id)
    }
}
