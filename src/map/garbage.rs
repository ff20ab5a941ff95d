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
/// (`ManuallyDrop` keeps the compiler from adding out-of-line drops of the
/// fields after `Drop::drop` has emptied them.)
#[derive(Default)]
pub struct Garbage {
    first: ManuallyDrop<Option<Node>>,
    /// Empty unless `first` is taken.
    rest: ManuallyDrop<Vec<Node>>,
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

    pub(super) fn push(&mut self, node: Node) {
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

#[cold]
#[inline(never)]
fn release(first: Option<Node>, rest: Vec<Node>) {
    drop(first);
    drop(rest);
}
