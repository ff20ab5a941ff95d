//! The persistent map behind every [`Context`](crate::Context): variable id →
//! type-erased value, with O(1) copies and structural sharing.
//!
//! It is a hash array mapped trie (as CPython's `Python/hamt.c`) keyed by the
//! variable's id itself: ids are unique integers, so there is no hashing and no
//! collision node — two ids always part ways within 64 bits. Maps with at most
//! [`FLAT_MAX`] entries keep a flat root scanned linearly, which is what nearly
//! every real context is.
//!
//! **Invariant:** a node reachable from more than one [`Map`] is never mutated.
//! Writers mutate a node in place only when they hold its sole reference
//! (`Arc::get_mut`) and copy it otherwise, so a copy taken at any time keeps
//! seeing exactly the entries it was taken with. Nodes a writer lets go of are
//! handed back in a [`Garbage`] list rather than dropped on the spot, so that no
//! value's destructor runs while the caller holds the context's write lock.

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::{Ordering, fence};

/// A variable's identity: unique for the life of the process, never 0.
pub type VarId = u64;

/// What a context stores for one variable: the value and the name of the
/// variable it belongs to (so a context can list its variables by name).
pub struct Slot<T> {
    pub name: &'static str,
    pub value: T,
}

/// A type-erased [`Slot`].
pub trait Erased: Any + Send + Sync {
    fn name(&self) -> &'static str;
}

impl<T: Send + Sync + 'static> Erased for Slot<T> {
    fn name(&self) -> &'static str {
        self.name
    }
}

/// A shared, type-erased value.
pub type Value = Arc<dyn Erased>;

/// Downcasts a stored value to the slot of the variable's type.
#[inline]
pub fn downcast<T: 'static>(value: &Value) -> Option<&Slot<T>> {
    let any: &dyn Any = &**value;
    any.downcast_ref::<Slot<T>>()
}

/// Downcasts a stored value without checking its type (checked in debug
/// builds).
///
/// # Safety
///
/// `value` must be a `Slot<T>`. Within this crate that holds for any value a
/// context stores under a variable's id: only that variable writes under its
/// id (ids are unique, see `var`), and it writes `Slot<T>` for its own `T`.
#[inline]
pub(crate) unsafe fn downcast_unchecked<T: 'static>(value: &Value) -> &Slot<T> {
    debug_assert!((&**value as &dyn Any).is::<Slot<T>>());
    // SAFETY: the caller guarantees the concrete type; the data pointer of an
    // `Arc<dyn Erased>` points at the `Slot<T>` itself.
    unsafe { &*(Arc::as_ptr(value) as *const Slot<T>) }
}

/// Whether two values are the same allocation (not merely equal).
#[inline]
pub fn same_value(a: &Value, b: &Value) -> bool {
    std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b))
}

/// Roots with at most this many entries are flat arrays, scanned linearly.
/// Measured (instructions per `get`, sparse ids): a flat scan beats the
/// bitmap walk up to 4 entries (70 vs 78) and loses at 8 (84 vs 78).
pub const FLAT_MAX: usize = 4;

const BITS: u32 = 5;
const MASK: u64 = (1 << BITS) - 1;

/// Nodes (and the values they held) released by a write, to be dropped by the
/// caller once it is safe to run arbitrary destructors.
pub type Garbage = Vec<Arc<Node>>;

#[derive(Clone)]
pub struct Entry {
    id: VarId,
    value: Value,
}

#[derive(Clone)]
pub enum Child {
    Entry(Entry),
    Node(Arc<Node>),
}

#[derive(Clone)]
pub enum Node {
    /// Root only: up to `FLAT_MAX` entries in no particular order.
    Flat(Vec<Entry>),
    /// `slots[i]` belongs to the `i`-th set bit of `bitmap`; bit `b` stands for
    /// the ids whose 5 bits at this level's shift equal `b`.
    Branch { bitmap: u32, slots: Vec<Child> },
}

/// A persistent map from [`VarId`] to [`Value`]. `Clone` is O(1).
#[derive(Clone, Default)]
pub struct Map {
    root: Option<Arc<Node>>,
    len: usize,
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
fn make_mut<'a>(node: &'a mut Arc<Node>, garbage: &mut Garbage) -> &'a mut Node {
    if Arc::strong_count(node) != 1 {
        let copy = Arc::new(Node::clone(node));
        garbage.push(std::mem::replace(node, copy));
    }
    // Pairs with the release decrement of whoever dropped the last other
    // handle, so their reads of the node happen before our writes.
    fence(Ordering::Acquire);
    // SAFETY: the node has one strong handle, the one we borrow mutably, and
    // nodes never have `Weak` handles (this module makes none), so nobody
    // else can reach it or make a new handle to it while we hold `&mut`.
    // This is `Arc::get_mut` without its compare-and-swap on the weak count,
    // which only guards against `Weak` upgrades (see BENCHMARKS.md).
    unsafe { &mut *(Arc::as_ptr(node) as *mut Node) }
}

impl Map {
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    pub fn get(&self, id: VarId) -> Option<&Value> {
        match self.root.as_deref()? {
            Node::Flat(entries) => entries.iter().find(|e| e.id == id).map(|e| &e.value),
            Node::Branch { bitmap, slots } => {
                let (mut bitmap, mut slots, mut shift) = (*bitmap, slots, 0);
                loop {
                    let bit = bit_at(id, shift);
                    if bitmap & bit == 0 {
                        return None;
                    }
                    match &slots[position(bitmap, bit)] {
                        Child::Entry(e) => return (e.id == id).then_some(&e.value),
                        Child::Node(node) => match &**node {
                            Node::Branch {
                                bitmap: b,
                                slots: s,
                            } => {
                                (bitmap, slots, shift) = (*b, s, shift + BITS);
                            }
                            Node::Flat(_) => unreachable!("flat nodes are roots"),
                        },
                    }
                }
            }
        }
    }

    #[inline]
    pub fn contains(&self, id: VarId) -> bool {
        self.get(id).is_some()
    }

    /// Sets `id` to `value`; returns the value it replaces.
    pub fn insert(&mut self, id: VarId, value: Value, garbage: &mut Garbage) -> Option<Value> {
        let entry = Entry { id, value };
        let Some(root) = &mut self.root else {
            self.root = Some(Arc::new(Node::Flat(vec![entry])));
            self.len = 1;
            return None;
        };
        let node = make_mut(root, garbage);
        let old = match node {
            Node::Flat(entries) => {
                if let Some(e) = entries.iter_mut().find(|e| e.id == id) {
                    Some(std::mem::replace(&mut e.value, entry.value))
                } else if entries.len() < FLAT_MAX {
                    // Exact capacity: most nodes are copies that gain one
                    // entry (a child context's root), and a doubling `Vec`
                    // would carry its slack into every one of them.
                    entries.reserve_exact(1);
                    entries.push(entry);
                    None
                } else {
                    let full = std::mem::take(entries);
                    let mut branch = Node::Branch {
                        bitmap: 0,
                        slots: Vec::with_capacity(FLAT_MAX + 1),
                    };
                    for e in full.into_iter().chain(std::iter::once(entry)) {
                        branch.insert(e, 0, garbage);
                    }
                    *node = branch;
                    None
                }
            }
            branch => branch.insert(entry, 0, garbage),
        };
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// Removes `id`; returns the value it had.
    pub fn remove(&mut self, id: VarId, garbage: &mut Garbage) -> Option<Value> {
        // Look first: a miss must not copy a shared path.
        if !self.contains(id) {
            return None;
        }
        let root = self.root.as_mut().expect("non-empty map has a root");
        let old = match make_mut(root, garbage) {
            Node::Flat(entries) => {
                let i = entries
                    .iter()
                    .position(|e| e.id == id)
                    .expect("looked up above");
                Some(entries.swap_remove(i).value)
            }
            branch => branch.remove(id, 0, garbage),
        };
        debug_assert!(old.is_some());
        self.len -= 1;
        if self.len == 0 {
            garbage.extend(self.root.take());
        }
        old
    }

    /// Every entry, in no particular order.
    pub fn iter(&self) -> Iter<'_> {
        let mut iter = Iter {
            flat: [].iter(),
            stack: Vec::new(),
        };
        match self.root.as_deref() {
            None => {}
            Some(Node::Flat(entries)) => iter.flat = entries.iter(),
            Some(Node::Branch { slots, .. }) => iter.stack.push(slots.iter()),
        }
        iter
    }

    /// The ids whose values differ between two versions (set to another
    /// value, added, or removed), found by value identity.
    pub fn changed_ids(before: &Map, after: &Map) -> Vec<VarId> {
        if before.ptr_eq(after) {
            return Vec::new();
        }
        let mut ids: Vec<VarId> = after
            .iter()
            .filter(|(id, v)| before.get(*id).is_none_or(|b| !same_value(b, v)))
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

impl Node {
    /// Inserts into a branch at `shift`; returns the replaced value.
    fn insert(&mut self, entry: Entry, shift: u32, garbage: &mut Garbage) -> Option<Value> {
        let Node::Branch { bitmap, slots } = self else {
            unreachable!("flat nodes are roots")
        };
        let bit = bit_at(entry.id, shift);
        let pos = position(*bitmap, bit);
        if *bitmap & bit == 0 {
            *bitmap |= bit;
            slots.reserve_exact(1);
            slots.insert(pos, Child::Entry(entry));
            return None;
        }
        match &mut slots[pos] {
            Child::Entry(e) if e.id == entry.id => {
                Some(std::mem::replace(&mut e.value, entry.value))
            }
            Child::Entry(existing) => {
                let existing = existing.clone();
                slots[pos] = Child::Node(Arc::new(Node::pair(existing, entry, shift + BITS)));
                None
            }
            Child::Node(node) => make_mut(node, garbage).insert(entry, shift + BITS, garbage),
        }
    }

    /// A branch at `shift` holding two entries with different ids.
    fn pair(a: Entry, b: Entry, shift: u32) -> Node {
        let (bit_a, bit_b) = (bit_at(a.id, shift), bit_at(b.id, shift));
        if bit_a == bit_b {
            let child = Node::pair(a, b, shift + BITS);
            return Node::Branch {
                bitmap: bit_a,
                slots: vec![Child::Node(Arc::new(child))],
            };
        }
        let slots = if bit_a < bit_b {
            vec![Child::Entry(a), Child::Entry(b)]
        } else {
            vec![Child::Entry(b), Child::Entry(a)]
        };
        Node::Branch {
            bitmap: bit_a | bit_b,
            slots,
        }
    }

    /// Removes a present `id` from a branch at `shift`, collapsing a child
    /// left holding a single entry into that entry (so the trie stays as
    /// shallow as its contents require).
    fn remove(&mut self, id: VarId, shift: u32, garbage: &mut Garbage) -> Option<Value> {
        let Node::Branch { bitmap, slots } = self else {
            unreachable!("flat nodes are roots")
        };
        let bit = bit_at(id, shift);
        if *bitmap & bit == 0 {
            return None;
        }
        let pos = position(*bitmap, bit);
        match &mut slots[pos] {
            Child::Entry(e) if e.id == id => {
                *bitmap &= !bit;
                let Child::Entry(e) = slots.remove(pos) else {
                    unreachable!()
                };
                Some(e.value)
            }
            Child::Entry(_) => None,
            Child::Node(node) => {
                let child = make_mut(node, garbage);
                let old = child.remove(id, shift + BITS, garbage);
                if let Node::Branch {
                    slots: child_slots, ..
                } = child
                {
                    if child_slots.len() == 1 && matches!(child_slots[0], Child::Entry(_)) {
                        let only = child_slots.pop().expect("one slot");
                        let emptied = std::mem::replace(&mut slots[pos], only);
                        let Child::Node(emptied) = emptied else {
                            unreachable!()
                        };
                        garbage.push(emptied);
                    }
                }
                old
            }
        }
    }
}

/// Iterator over a map's entries as `(id, value)`.
pub struct Iter<'a> {
    flat: std::slice::Iter<'a, Entry>,
    stack: Vec<std::slice::Iter<'a, Child>>,
}

impl<'a> Iterator for Iter<'a> {
    type Item = (VarId, &'a Value);

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.flat.next() {
            return Some((e.id, &e.value));
        }
        loop {
            let top = self.stack.last_mut()?;
            match top.next() {
                None => {
                    self.stack.pop();
                }
                Some(Child::Entry(e)) => return Some((e.id, &e.value)),
                Some(Child::Node(node)) => match &**node {
                    Node::Branch { slots, .. } => self.stack.push(slots.iter()),
                    Node::Flat(_) => unreachable!("flat nodes are roots"),
                },
            }
        }
    }
}
