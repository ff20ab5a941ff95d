//! A generator's frame: data only. Each resumption of an `isolated()`
//! iterator or stream runs in a context of its own whose map holds only the
//! generator's own values; the [`Frame`] beside that map keeps the caller's
//! map under them. The rules of the layer are `crate::generator`'s; the read
//! path falls through to [`Frame::outer_value`], and copies take
//! [`Frame::merged`].
//!
//! **Invariant:** a frame's `outer` is the caller's map as of the
//! resumption and is never written through the frame.

use crate::map::{Garbage, Map, Value, VarId};

/// What a resumption's context keeps beside the generator's own values.
pub(crate) struct Frame {
    /// The caller's map, as of the resumption.
    pub(crate) outer: Map,
    /// The generator's own values as of the resumption: given back to it if
    /// the resumption panics; otherwise what the resumption replaced of them
    /// is released from here inside the layer.
    pub(crate) before: Map,
}

impl Frame {
    /// The caller's value of `id`.
    pub(crate) fn outer_value(&self, id: VarId) -> Option<&Value> {
        self.outer.get(id)
    }

    /// The caller's map with `own` on top: what a copy of the resumption's
    /// context holds.
    pub(crate) fn merged(&self, own: &Map) -> Map {
        let mut merged = self.outer.clone();
        // Whatever the inserts copy is shared with the caller's map or with
        // `own`, so dropping it here runs no destructor.
        let mut garbage = Garbage::new();
        for (id, value) in own.iter() {
            merged.insert(id, value.clone(), &mut garbage);
        }
        merged
    }
}
