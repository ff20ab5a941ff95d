//! A map's handle on its root: whether two maps are the same version,
//! whether dropping one may drop a value, and letting go of a shared root
//! without deciding, racily, which handle is the last.
//!
//! **Invariant:** a map is told it has nothing left to drop only when the
//! handle it let go of was not its root's last, decided atomically: even
//! when two maps sharing a root are dropped at once, the values never go
//! with a decrement the caller did not see.

use super::node::Node;
use super::root::Map;

impl Map {
    /// Whether dropping this map may drop a value or a node: only when no
    /// other map shares its root (otherwise a drop is one decrement).
    #[inline]
    pub(crate) fn owns_root(&self) -> bool {
        self.root.as_ref().is_some_and(Node::is_unique)
    }

    /// Lets go of this map's handle on its root if another map still holds
    /// the root, deciding atomically which handle is the last: `true` if
    /// nothing is left here to drop (the handle is gone and dropped no
    /// node, or the map is empty); `false` if this map holds the root's last
    /// handle, which the caller then drops where the values must go.
    ///
    /// A count read and a drop would not do: two maps sharing a root and
    /// dropped at once on two threads could both read 2, and the values
    /// would go with whichever decrement came last, unseen.
    #[inline]
    pub(crate) fn let_go_shared(&mut self) -> bool {
        let Some(root) = self.root.take() else {
            return true;
        };
        match root.let_go() {
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
            (Some(a), Some(b)) => Node::ptr_eq(a, b),
            _ => false,
        }
    }
}
