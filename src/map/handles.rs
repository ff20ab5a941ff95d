//! A map's handle on its root: whether two maps are the same version,
//! whether dropping one may drop a value, and letting go of a shared root
//! without deciding, racily, which handle is the last.
//!
//! **Invariant:** a map is told it has nothing left to drop only when the
//! handle it let go of was not its root's last, decided atomically: even
//! when two maps sharing a root are dropped at once, the values never go
//! with a decrement the caller did not see.

use std::sync::Arc;

use super::node::Child;
use super::root::{FLAT_MAX, Map};

impl Map {
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
