//! Writing a node: in place when the map holds it alone, else through a
//! copy that replaces it, the old node going to the [`Garbage`].
//!
//! **Invariant:** a node with another handle is never written: it is
//! copied first, and the write goes to the copy.

use super::garbage::Garbage;
use super::node::{Child, Node, build, unique_mut};
use crate::value::Value;

/// Gives mutable access to a node, copying it first if anyone else holds it.
#[inline]
pub(super) fn make_mut<'a>(node: &'a mut Node, garbage: &mut Garbage) -> &'a mut [Child] {
    if !node.is_unique() {
        let copy = build(node.len(), node.iter().cloned());
        garbage.push(std::mem::replace(node, copy));
    }
    unique_mut(node).expect("a fresh copy has one handle")
}

/// Takes the entry at `pos` out of `node`, whose first `len` slots are
/// children, and returns its value. A node this map holds alone closes the
/// gap in place and keeps the freed slot as room for the next insertion; a
/// shared one is replaced by a copy without the entry (and without room).
pub(super) fn take_entry(
    node: &mut Node,
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
pub(super) fn grow(
    node: &mut Node,
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
