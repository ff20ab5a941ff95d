//! Walking a map: [`Iter`] over its entries, and the ids whose values
//! differ between two versions.
//!
//! **Invariant:** a walk yields each entry once and nothing else (room is
//! skipped), and borrows the map, so it sees one version throughout.

use super::node::Child;
use super::root::Map;
use crate::ids::VarId;
use crate::value::Value;

impl Map {
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
