//! A node of the map: [`Node`], a handle to one exact-size allocation
//! whose first slots are its children and the rest room
//! ([`Child::Vacant`]); the bit arithmetic of a branch's bitmap; and
//! [`unique_mut`], the one way to write a node in place.
//!
//! **Invariant:** `&mut` to a node's slots is handed out only to the holder
//! of its one handle (there are no weak handles), so a node reachable from
//! another map is never written through it; and of the handles to a node,
//! exactly one, the last let go of, drops its children
//! ([`Node::let_go`] says which, atomically).

use std::alloc::{Layout, alloc, dealloc, handle_alloc_error};
use std::mem::ManuallyDrop;
use std::ptr::{self, NonNull};

use crate::ids::VarId;
use crate::refcount;
use crate::sync::{AtomicUsize, Ordering};
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
    Node { bitmap: u32, slots: Node },
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
#[inline]
pub(super) fn unique_mut(node: &mut Node) -> Option<&mut [Child]> {
    if !node.is_unique() {
        return None;
    }
    // SAFETY: the node has one handle, the one we borrow mutably, and there
    // are no weak handles, so nobody else can reach it or make a new handle
    // to it while we hold `&mut`; the acquire load in `is_unique` ordered
    // the accesses of the handles dropped before ours.
    Some(unsafe { std::slice::from_raw_parts_mut(node.slots(), node.len()) })
}

/// A new node of `room` slots: `children` first, then room.
///
/// Written slot by slot into one allocation: collecting the chained
/// iterators that feed it into a slice first would allocate twice and copy
/// (see BENCHMARKS.md).
pub(super) fn build(room: usize, children: impl Iterator<Item = Child>) -> Node {
    let layout = Node::layout(room);
    // SAFETY: the layout is never zero-sized (it holds the header).
    let raw = unsafe { alloc(layout) };
    let Some(header) = NonNull::new(raw.cast::<Header>()) else {
        handle_alloc_error(layout)
    };
    // SAFETY: the allocation is fresh, sized and aligned for the header and
    // `room` slots after it (`Node::layout`), and nobody else has it; every
    // slot is written before the handle exists. A panic part way (none of
    // the iterators that feed this can panic) would leak the allocation,
    // not expose it.
    unsafe {
        header.as_ptr().write(Header {
            strong: AtomicUsize::new(1),
            len: room,
        });
        let slots = raw.add(SLOTS_OFFSET).cast::<Child>();
        let mut children = children.into_iter();
        let mut filled = 0;
        while filled < room {
            let Some(child) = children.next() else { break };
            slots.add(filled).write(child);
            filled += 1;
        }
        debug_assert!(children.next().is_none(), "more children than room");
        for i in filled..room {
            slots.add(i).write(Child::Vacant);
        }
    }
    Node { header }
}

/// What a node's allocation starts with; its slots follow at
/// [`SLOTS_OFFSET`].
#[repr(C)]
struct Header {
    /// The live handles (see `refcount`).
    strong: AtomicUsize,
    /// How many slots follow.
    len: usize,
}

/// Where a node's slots start in its allocation: after the header, aligned
/// for a `Child`.
const SLOTS_OFFSET: usize = size_of::<Header>().next_multiple_of(align_of::<Child>());

/// A handle to a node: as `Arc<[Child]>`, one pointer wide (the length is in
/// the header) and without a weak count, so that letting go of a shared
/// node is one atomic decrement that says whether it was the last
/// ([`Node::let_go`]), which `std`'s `Arc` offers only for sized contents.
pub struct Node {
    header: NonNull<Header>,
}

// SAFETY: a node hands out `&Child` to every holder and `&mut` only to the
// holder of its one handle, and drops its children on whichever thread lets
// go of it last, as `Arc<[Child]>` does, which is `Send + Sync` because
// `Child` is (its values are `Send + Sync`).
unsafe impl Send for Node {}
// SAFETY: as above.
unsafe impl Sync for Node {}

impl Node {
    /// The allocation of a node of `len` slots.
    fn layout(len: usize) -> Layout {
        let size = size_of::<Child>()
            .checked_mul(len)
            .and_then(|slots| slots.checked_add(SLOTS_OFFSET))
            .expect("a map node of a size that fits in memory");
        Layout::from_size_align(size, align_of::<Header>().max(align_of::<Child>()))
            .expect("a map node of a size that fits in memory")
    }

    #[inline]
    fn header(&self) -> &Header {
        // SAFETY: this handle keeps the allocation alive.
        unsafe { self.header.as_ref() }
    }

    /// The first slot (`len` of them follow).
    #[inline]
    fn slots(&self) -> *mut Child {
        // SAFETY: the slots start `SLOTS_OFFSET` bytes into the allocation
        // (`build`).
        unsafe { self.header.as_ptr().cast::<u8>().add(SLOTS_OFFSET).cast() }
    }

    /// Whether this is the node's only handle (which then may write it).
    #[inline]
    pub(super) fn is_unique(&self) -> bool {
        // Acquire: pairs with the release decrement of whoever dropped the
        // last other handle, so their reads of the node happen before our
        // writes.
        self.header().strong.load(Ordering::Acquire) == 1
    }

    /// Lets go of this handle unless it is the node's last, which is handed
    /// back (then the only handle: the caller decides where the children
    /// are dropped). Decided atomically: of two handles let go of at once,
    /// exactly one is handed back.
    #[inline]
    pub(super) fn let_go(self) -> Option<Node> {
        let this = ManuallyDrop::new(self);
        // A root let go of this way is nearly always shared (a copy's), so
        // the decrement comes without `release`'s load first.
        if !refcount::decrement(&this.header().strong) {
            return None;
        }
        // The handle handed back counts as one, and no other thread looks
        // at the count of a node it cannot reach.
        this.header().strong.store(1, Ordering::Relaxed);
        Some(ManuallyDrop::into_inner(this))
    }

    /// Whether both are handles to the same node.
    #[inline]
    pub(super) fn ptr_eq(a: &Node, b: &Node) -> bool {
        a.header == b.header
    }

    /// The node's address (tests compare versions by it).
    #[cfg(test)]
    pub(super) fn as_ptr(&self) -> *const () {
        self.header.as_ptr().cast_const().cast()
    }
}

impl std::ops::Deref for Node {
    type Target = [Child];

    #[inline]
    fn deref(&self) -> &[Child] {
        // SAFETY: `build` wrote `len` slots there, alive as long as this
        // handle; they are written only through `unique_mut`, which needs
        // the only handle borrowed mutably.
        unsafe { std::slice::from_raw_parts(self.slots(), self.header().len) }
    }
}

impl Clone for Node {
    #[inline]
    fn clone(&self) -> Node {
        refcount::retain(&self.header().strong);
        Node {
            header: self.header,
        }
    }
}

impl Drop for Node {
    #[inline]
    fn drop(&mut self) {
        if refcount::release(&self.header().strong) {
            // SAFETY: this was the last handle.
            unsafe { self.free() }
        }
    }
}

impl Node {
    /// Drops the children and frees the allocation, even if a child's drop
    /// panics.
    ///
    /// # Safety
    ///
    /// This must be the node's last handle, not used again.
    #[cold]
    unsafe fn free(&mut self) {
        /// Frees the allocation when dropped: after the children, or while
        /// a panic from one of their drops unwinds.
        struct Dealloc(NonNull<Header>, Layout);
        impl Drop for Dealloc {
            fn drop(&mut self) {
                // SAFETY: the allocation was made with this layout
                // (`build`), and its contents are dropped.
                unsafe { dealloc(self.0.as_ptr().cast(), self.1) }
            }
        }
        let len = self.header().len;
        let _dealloc = Dealloc(self.header, Node::layout(len));
        // SAFETY: the caller's: nobody else can reach the node. A slice's
        // drop keeps dropping the other slots if one of them panics.
        unsafe {
            ptr::drop_in_place(ptr::slice_from_raw_parts_mut(self.slots(), len));
            ptr::drop_in_place(self.header.as_ptr());
        }
    }
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
