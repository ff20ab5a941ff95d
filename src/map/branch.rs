//! The trie under a branch: lookup, insertion and removal of an id, five
//! bits of it at each level (`(bitmap, slots)` pairs, a slot per set bit).
//!
//! **Invariant:** a branch's first `bitmap.count_ones()` slots are its
//! children, in bit order, and the rest is room; a child left with a
//! single entry is collapsed into it, so the trie is as shallow as its ids
//! require; a removal that misses copies nothing.

use super::copy_on_write::{grow, make_mut, take_entry};
use super::garbage::Garbage;
use super::node::{BITS, Child, Node, bit_at, build, position, unique_mut};
use crate::ids::VarId;
use crate::value::Value;

/// Looks `id` up in the branch `(bitmap, slots)` at `shift`.
#[inline]
pub(super) fn find(
    mut bitmap: u32,
    mut slots: &[Child],
    id: VarId,
    mut shift: u32,
) -> Option<&Value> {
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
pub(super) fn insert(
    bitmap: &mut u32,
    slots: &mut Node,
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
            slots: build(1, std::iter::once(pair(a, b, shift + BITS))),
        };
    }
    let (first, second) = if bit_a < bit_b { (a, b) } else { (b, a) };
    let slots = build(2, [first, second].into_iter());
    Child::Node {
        bitmap: bit_a | bit_b,
        slots,
    }
}

/// Removes `id` from the branch `(bitmap, slots)` at `shift`, collapsing a
/// child left holding a single entry into that entry (so the trie stays as
/// shallow as its contents require). A miss copies nothing.
pub(super) fn remove(
    bitmap: &mut u32,
    slots: &mut Node,
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
