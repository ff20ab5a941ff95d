//! [`Garbage`]: the nodes (and the values they held) a write lets go of,
//! handed back to its caller.
//!
//! **Invariant:** a node a write lets go of is dropped only when the
//! caller clears or drops the list, after any lock it holds, never inside
//! the write; a list of one node allocates nothing.

use super::node::Node;
use std::mem::ManuallyDrop;

/// Nodes (and the values they held) released by a write, to be dropped by the
/// caller once it is safe to run arbitrary destructors.
///
/// Most writes release nothing and most others one node (a copied flat
/// root), so the first node is kept inline and only further ones in a `Vec`:
/// making, filling with one node and dropping the list allocates nothing.
/// Every write makes a list, so an empty one is two null words to write
/// (the rare write that lets go of more nodes boxes their `Vec`).
/// (`ManuallyDrop` keeps the compiler from adding out-of-line drops of the
/// fields after `Drop::drop` has emptied them.)
#[derive(Default)]
pub struct Garbage {
    first: ManuallyDrop<Option<Node>>,
    /// `None` unless `first` is taken and another node came.
    rest: ManuallyDrop<Rest>,
}

/// The nodes after the first: boxed, so that an empty list writes one null
/// word for them rather than an empty `Vec`'s three.
type Rest = Option<Box<Vec<Node>>>;

impl Garbage {
    /// An empty list.
    pub const fn new() -> Garbage {
        Garbage {
            first: ManuallyDrop::new(None),
            rest: ManuallyDrop::new(None),
        }
    }

    /// Drops everything in the list now.
    #[inline]
    pub fn clear(&mut self) {
        if self.first.is_some() {
            self.release();
        }
    }

    /// Taken out first, so that the rest still goes if a value in the
    /// first node panics in its `drop`.
    #[cold]
    #[inline(never)]
    fn release(&mut self) {
        let (first, rest) = (self.first.take(), self.rest.take());
        drop(first);
        drop(rest);
    }

    pub(super) fn push(&mut self, node: Node) {
        if self.first.is_none() {
            *self.first = Some(node);
        } else {
            self.rest.get_or_insert_default().push(node);
        }
    }
}

impl Drop for Garbage {
    #[inline]
    fn drop(&mut self) {
        self.clear();
    }
}
