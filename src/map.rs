//! The persistent map behind every [`Context`](crate::Context): variable id →
//! [`Value`], with O(1) copies and structural sharing.
//!
//! It is a hash array mapped trie (as CPython's `Python/hamt.c`) keyed by the
//! variable's id itself: ids are unique integers, so there is no hashing and no
//! collision node — two ids always part ways within 64 bits. Maps with at most
//! [`FLAT_MAX`] entries keep a flat root scanned linearly, which is what nearly
//! every real context is. A node that is the map's own keeps room after its
//! last child ([`Child::Vacant`], left by removals, and a flat root grows by
//! doubling), so a variable added and removed again, as `set` and `reset` of
//! a variable the context lacks do, costs no allocation after the first time.
//!
//! Each node is one exact-size allocation, an `Arc<[Child]>`, and a branch's
//! bitmap is kept beside the pointer to it (in its parent's slot, or in the
//! [`Map`] for the root), so a lookup touches one cache line per level and no
//! header. A map entry is 24 bytes: the id and a thin [`Value`] handle.
//!
//! **Invariant:** a node reachable from more than one [`Map`] is never mutated.
//! Writers mutate a node in place only when they hold its sole reference and
//! copy it otherwise, so a copy taken at any time keeps seeing exactly the
//! entries it was taken with. Nodes a writer lets go of are handed back in a
//! [`Garbage`] list rather than dropped on the spot, so that no value's
//! destructor runs while the caller holds the context's write lock.

use std::mem::{ManuallyDrop, MaybeUninit};
use std::sync::Arc;
#[cfg(not(contextvars_tsan))]
use std::sync::atomic::{Ordering, fence};

pub use crate::ids::VarId;
use crate::ids::is_local;
pub use crate::value::Value;

/// Roots with at most this many entries are flat arrays, scanned linearly.
/// Measured (instructions per `get`, sparse ids): a flat scan beats the
/// bitmap walk up to 4 entries (70 vs 78) and loses at 8 (84 vs 78).
pub const FLAT_MAX: usize = 4;

const BITS: u32 = 5;
const MASK: u64 = (1 << BITS) - 1;

/// Nodes (and the values they held) released by a write, to be dropped by the
/// caller once it is safe to run arbitrary destructors.
///
/// Most writes release nothing and most others one node (a copied flat
/// root), so the first node is kept inline and only further ones in a `Vec`:
/// making, filling with one node and dropping the list allocates nothing.
/// (`ManuallyDrop` keeps the compiler from adding out-of-line drops of the
/// fields after `Drop::drop` has emptied them.)
#[derive(Default)]
pub struct Garbage {
    first: ManuallyDrop<Option<Arc<[Child]>>>,
    /// Empty unless `first` is taken.
    rest: ManuallyDrop<Vec<Arc<[Child]>>>,
}

impl Garbage {
    /// An empty list.
    pub const fn new() -> Garbage {
        Garbage {
            first: ManuallyDrop::new(None),
            rest: ManuallyDrop::new(Vec::new()),
        }
    }

    /// Drops everything in the list now.
    #[inline]
    pub fn clear(&mut self) {
        if self.first.is_some() {
            release(self.first.take(), std::mem::take(&mut *self.rest));
        }
    }

    fn push(&mut self, node: Arc<[Child]>) {
        if self.first.is_none() {
            *self.first = Some(node);
        } else {
            self.rest.push(node);
        }
    }
}

impl Drop for Garbage {
    #[inline]
    fn drop(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
thread_local! {
    /// Writes on this thread that missed the in-place path (`slot_mut`):
    /// the unit tests count them, as only speed shows them otherwise.
    pub(crate) static SLOW_INSERTS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

#[cold]
#[inline(never)]
fn release(first: Option<Arc<[Child]>>, rest: Vec<Arc<[Child]>>) {
    drop(first);
    drop(rest);
}

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

/// A persistent map from [`VarId`] to [`Value`]. `Clone` is O(1).
#[derive(Clone, Default)]
pub struct Map {
    /// The root node: `None` when empty; flat when `bitmap` is 0 (its first
    /// `len` slots are the entries, in no particular order, and the rest are
    /// [`Child::Vacant`]); otherwise a branch.
    root: Option<Arc<[Child]>>,
    bitmap: u32,
    len: u32,
    /// How many entries belong to variables not inherited by spawned work
    /// (ids with `ids::LOCAL_BIT`), so a spawn copy of a map without any
    /// costs one comparison more than a plain copy.
    locals: u32,
}

#[inline]
fn position(bitmap: u32, bit: u32) -> usize {
    (bitmap & (bit - 1)).count_ones() as usize
}

#[inline]
fn bit_at(id: VarId, shift: u32) -> u32 {
    1u32 << ((id >> shift) & MASK)
}

/// Gives mutable access to a node, copying it first if anyone else holds it.
#[inline]
fn make_mut<'a>(node: &'a mut Arc<[Child]>, garbage: &mut Garbage) -> &'a mut [Child] {
    if Arc::strong_count(node) != 1 {
        let copy: Arc<[Child]> = node.iter().cloned().collect();
        garbage.push(std::mem::replace(node, copy));
    }
    unique_mut(node).expect("a fresh copy has one handle")
}

/// Gives mutable access to a node that nobody else holds.
#[cfg(not(contextvars_tsan))]
#[inline]
fn unique_mut(node: &mut Arc<[Child]>) -> Option<&mut [Child]> {
    if Arc::strong_count(node) != 1 {
        return None;
    }
    // Pairs with the release decrement of whoever dropped the last other
    // handle, so their reads of the node happen before our writes. (`std`
    // offers no acquire load of the count itself; ThreadSanitizer does not
    // see this fence, hence the variant below.)
    fence(Ordering::Acquire);
    // SAFETY: the node has one strong handle, the one we borrow mutably, and
    // nodes never have `Weak` handles (this module makes none), so nobody
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
fn unique_mut(node: &mut Arc<[Child]>) -> Option<&mut [Child]> {
    Arc::get_mut(node)
}

/// A new node of `room` slots: `children` first, then room.
///
/// Written slot by slot into one allocation. (Collecting the chained
/// iterators that feed it into an `Arc<[Child]>` went through a `Vec` first:
/// a second allocation and a copy, about 45 of the 150 ns a copy-and-insert
/// took at 10 entries; see BENCHMARKS.md.)
fn build(room: usize, children: impl Iterator<Item = Child>) -> Arc<[Child]> {
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

/// Takes the entry at `pos` out of `node`, whose first `len` slots are
/// children, and returns its value. A node this map holds alone closes the
/// gap in place and keeps the freed slot as room for the next insertion; a
/// shared one is replaced by a copy without the entry (and without room).
fn take_entry(
    node: &mut Arc<[Child]>,
    len: usize,
    pos: usize,
    garbage: &mut Garbage,
) -> Option<Value> {
    let Some(slots) = unique_mut(node) else {
        let old = node[pos].value().cloned();
        let rest = build(
            len - 1,
            node[..pos].iter().chain(&node[pos + 1..len]).cloned(),
        );
        garbage.push(std::mem::replace(node, rest));
        return old;
    };
    slots[pos..len].rotate_left(1);
    match slots[len - 1].take() {
        Child::Entry { value, .. } => Some(value),
        _ => unreachable!("`pos` holds an entry"),
    }
}

/// Replaces `node`, whose first `len` slots are children, by a node with
/// `entry` put at `pos` among them and room for `room` children in all.
fn grow(
    node: &mut Arc<[Child]>,
    len: usize,
    pos: usize,
    entry: Child,
    room: usize,
    garbage: &mut Garbage,
) {
    let Some(slots) = unique_mut(node) else {
        let grown = build(
            room,
            node[..pos]
                .iter()
                .cloned()
                .chain(std::iter::once(entry))
                .chain(node[pos..len].iter().cloned()),
        );
        garbage.push(std::mem::replace(node, grown));
        return;
    };
    // The map's own node: move the children over rather than clone them (a
    // clone and a drop are two atomic operations per child). What is left
    // is room alone, so it is freed here: no value's `Drop` runs.
    let (head, tail) = slots[..len].split_at_mut(pos);
    let grown = build(
        room,
        head.iter_mut()
            .map(Child::take)
            .chain(std::iter::once(entry))
            .chain(tail.iter_mut().map(Child::take)),
    );
    drop(std::mem::replace(node, grown));
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
            self.root = Some(Arc::new([Child::Entry { id, value }]));
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
            let (mut bitmap, mut branch): (u32, Arc<[Child]>) = (0, Arc::new([]));
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

    /// Every entry, in no particular order.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            stack: self.root.iter().map(|root| root.iter()).collect(),
        }
    }

    /// The ids whose values differ between two versions (set to another
    /// value, added, or removed), found by value identity.
    pub fn changed_ids(before: &Map, after: &Map) -> Vec<VarId> {
        if before.ptr_eq(after) {
            return Vec::new();
        }
        let mut ids: Vec<VarId> = after
            .iter()
            .filter(|(id, v)| before.get(*id).is_none_or(|b| !Value::ptr_eq(b, v)))
            .map(|(id, _)| id)
            .collect();
        ids.extend(
            before
                .iter()
                .map(|(id, _)| id)
                .filter(|id| !after.contains(*id)),
        );
        ids
    }

    /// Whether dropping this map may drop a value or a node: only when no
    /// other map shares its root (otherwise a drop is one decrement).
    #[inline]
    pub(crate) fn owns_root(&self) -> bool {
        self.root
            .as_ref()
            .is_some_and(|root| Arc::strong_count(root) == 1)
    }

    /// Lets go of this map's handle on its root if another map still holds
    /// the root, deciding atomically which handle is the last: `true` if
    /// nothing is left here to drop (the handle is gone and dropped no
    /// node, or the map is empty); `false` if this map holds the root's last
    /// handle, which the caller then drops where the values must go.
    ///
    /// A count read and a drop would not do: two maps sharing a root and
    /// dropped at once on two threads could both read 2, and the values
    /// would go with whichever decrement came last, unseen. `Arc::into_inner`
    /// is std's atomic "was this the last handle", for sized types only, so
    /// a root of up to [`LAST_CHECKED`] slots (every flat root) is seen as
    /// the array it is. A larger one is reported
    /// as maybe the last (`false`): the caller's drop is then correct
    /// whoever holds the last handle, only slower.
    #[inline]
    pub(crate) fn let_go_shared(&mut self) -> bool {
        let Some(root) = self.root.take() else {
            return true;
        };
        if Arc::strong_count(&root) == 1 {
            self.root = Some(root);
            return false;
        }
        match last_handle(root) {
            None => true,
            Some(root) => {
                self.root = Some(root);
                false
            }
        }
    }

    /// Whether both maps are the same version (one is an unchanged copy of
    /// the other).
    pub fn ptr_eq(&self, other: &Map) -> bool {
        match (&self.root, &other.root) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

/// The largest root [`Map::let_go_shared`] decides on atomically: every
/// flat root (the root of nearly every context).
const LAST_CHECKED: usize = FLAT_MAX;

/// Drops `root` unless it is the last handle to its node, which it hands
/// back (see [`Map::let_go_shared`]); a node of more than
/// [`LAST_CHECKED`] slots is handed back as it is.
#[inline]
fn last_handle(root: Arc<[Child]>) -> Option<Arc<[Child]>> {
    /// For a node of `N` slots: one atomic decrement, and the node back
    /// (moved into a new allocation, a rare path) if it was the last.
    #[inline]
    fn sized<const N: usize>(root: Arc<[Child]>) -> Option<Arc<[Child]>> {
        match Arc::<[Child; N]>::try_from(root) {
            Ok(sized) => Arc::into_inner(sized).map(Arc::from),
            Err(root) => Some(root),
        }
    }
    match root.len() {
        1 => sized::<1>(root),
        2 => sized::<2>(root),
        3 => sized::<3>(root),
        LAST_CHECKED => sized::<LAST_CHECKED>(root),
        _ => Some(root),
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

impl Child {
    /// The value, if this is an entry.
    #[inline]
    fn value(&self) -> Option<&Value> {
        match self {
            Child::Entry { value, .. } => Some(value),
            _ => None,
        }
    }

    /// Moves the child out, leaving room in its place.
    #[inline]
    fn take(&mut self) -> Child {
        std::mem::replace(self, Child::Vacant)
    }

    #[inline]
    fn is_entry_of(&self, id: VarId) -> bool {
        matches!(self, Child::Entry { id: i, .. } if *i == id)
    }
}

/// Looks `id` up in the branch `(bitmap, slots)` at `shift`.
#[inline]
fn find(mut bitmap: u32, mut slots: &[Child], id: VarId, mut shift: u32) -> Option<&Value> {
    loop {
        let bit = bit_at(id, shift);
        if bitmap & bit == 0 {
            return None;
        }
        match &slots[position(bitmap, bit)] {
            Child::Entry { id: i, value } => return (*i == id).then_some(value),
            Child::Node {
                bitmap: b,
                slots: s,
            } => (bitmap, slots, shift) = (*b, s, shift + BITS),
            // Room follows a node's children, and positions point at
            // children: never reached.
            Child::Vacant => return None,
        }
    }
}

/// Inserts into the branch `(bitmap, slots)` at `shift`; returns the replaced
/// value.
fn insert(
    bitmap: &mut u32,
    slots: &mut Arc<[Child]>,
    id: VarId,
    value: Value,
    shift: u32,
    garbage: &mut Garbage,
) -> Option<Value> {
    let bit = bit_at(id, shift);
    let pos = position(*bitmap, bit);
    if *bitmap & bit == 0 {
        let count = bitmap.count_ones() as usize;
        *bitmap |= bit;
        let entry = Child::Entry { id, value };
        match unique_mut(slots) {
            // Room left by a removal: shift the later children up into it.
            Some(node) if count < node.len() => {
                node[pos..=count].rotate_right(1);
                node[pos] = entry;
            }
            _ => grow(slots, count, pos, entry, count + 1, garbage),
        }
        return None;
    }
    let node = make_mut(slots, garbage);
    match &mut node[pos] {
        Child::Entry { id: i, value: v } if *i == id => Some(std::mem::replace(v, value)),
        Child::Entry { .. } => {
            // Two ids share this level's bits: a branch one level down
            // holds both.
            let existing = node[pos].take();
            node[pos] = pair(existing, Child::Entry { id, value }, shift + BITS);
            None
        }
        Child::Node {
            bitmap: b,
            slots: s,
        } => insert(b, s, id, value, shift + BITS, garbage),
        Child::Vacant => unreachable!("a branch's first slots are its children"),
    }
}

/// A branch at `shift` holding two entries with different ids.
fn pair(a: Child, b: Child, shift: u32) -> Child {
    let id = |c: &Child| match c {
        Child::Entry { id, .. } => *id,
        _ => unreachable!("pairs are made of entries"),
    };
    let (bit_a, bit_b) = (bit_at(id(&a), shift), bit_at(id(&b), shift));
    if bit_a == bit_b {
        return Child::Node {
            bitmap: bit_a,
            slots: Arc::new([pair(a, b, shift + BITS)]),
        };
    }
    let slots: Arc<[Child]> = if bit_a < bit_b {
        Arc::new([a, b])
    } else {
        Arc::new([b, a])
    };
    Child::Node {
        bitmap: bit_a | bit_b,
        slots,
    }
}

/// Removes `id` from the branch `(bitmap, slots)` at `shift`, collapsing a
/// child left holding a single entry into that entry (so the trie stays as
/// shallow as its contents require). A miss copies nothing.
fn remove(
    bitmap: &mut u32,
    slots: &mut Arc<[Child]>,
    id: VarId,
    shift: u32,
    garbage: &mut Garbage,
) -> Option<Value> {
    let bit = bit_at(id, shift);
    if *bitmap & bit == 0 {
        return None;
    }
    let pos = position(*bitmap, bit);
    match &slots[pos] {
        Child::Entry { id: i, .. } if *i == id => {
            let count = bitmap.count_ones() as usize;
            *bitmap &= !bit;
            return take_entry(slots, count, pos, garbage);
        }
        Child::Entry { .. } | Child::Vacant => return None,
        // Look first: a miss must not copy a shared path.
        Child::Node {
            bitmap: b,
            slots: s,
        } => {
            find(*b, s, id, shift + BITS)?;
        }
    }
    let node = make_mut(slots, garbage);
    let Child::Node {
        bitmap: b,
        slots: s,
    } = &mut node[pos]
    else {
        unreachable!("matched above")
    };
    let old = remove(b, s, id, shift + BITS, garbage);
    if b.count_ones() == 1 && matches!(s[0], Child::Entry { .. }) {
        let (only, moved) = match unique_mut(s) {
            Some(emptied) => (emptied[0].take(), true),
            None => (s[0].clone(), false),
        };
        if let Child::Node { slots: emptied, .. } = std::mem::replace(&mut node[pos], only) {
            if moved {
                // Nothing but room is left in it: no value's `Drop` runs.
                drop(emptied);
            } else {
                garbage.push(emptied);
            }
        }
    }
    old
}

/// Iterator over a map's entries as `(id, value)`.
pub struct Iter<'a> {
    stack: Vec<std::slice::Iter<'a, Child>>,
}

impl<'a> Iterator for Iter<'a> {
    type Item = (VarId, &'a Value);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let top = self.stack.last_mut()?;
            match top.next() {
                None => {
                    self.stack.pop();
                }
                Some(Child::Entry { id, value }) => return Some((*id, value)),
                Some(Child::Node { slots, .. }) => self.stack.push(slots.iter()),
                Some(Child::Vacant) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests;
