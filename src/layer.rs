//! A generator's own layer of context (PEP 568, which Python deferred): the
//! mechanism behind `isolated()` iterators and streams.
//!
//! Each resumption runs in a fresh context built from the caller's *current*
//! map with the layer's own values on top; afterwards the layer keeps exactly
//! the values the resumption left different from the caller's. So the
//! generator's `set`s persist across its resumptions and never reach the
//! caller, and a reset back to "no value" (or to the caller's value) makes
//! reads fall through to the caller again.
//!
//! **Invariant:** every resumption runs in a context with the layer's one id,
//! so a token made in one resumption resets in a later one, and a caller's
//! token is `DifferentContext` inside the generator.

use crate::context::{Context, current_map, next_id};
use crate::map::{Garbage, Map, Value};

/// The values a generator has set, over whatever its caller has.
pub(crate) struct Layer {
    id: u64,
    own: Map,
}

impl Layer {
    pub(crate) fn new() -> Layer {
        Layer {
            id: next_id(),
            own: Map::default(),
        }
    }

    /// Runs one resumption of the generator. If it panics, the layer keeps
    /// the values it had before the resumption.
    pub(crate) fn resume<R>(&mut self, f: impl FnOnce() -> R) -> R {
        let outer = current_map();
        let mut garbage = Garbage::new();
        let mut merged = outer.clone();
        for (id, value) in self.own.iter() {
            merged.insert(id, value.clone(), &mut garbage);
        }
        let entered = merged.clone();
        let ctx = Context::layered(self.id, merged, outer.clone());
        let result = ctx.run(f);
        let after = ctx.into_map();
        for id in Map::changed_ids(&entered, &after) {
            match after.get(id) {
                Some(v) if outer.get(id).is_none_or(|o| !Value::ptr_eq(o, v)) => {
                    self.own.insert(id, v.clone(), &mut garbage);
                }
                _ => {
                    self.own.remove(id, &mut garbage);
                }
            }
        }
        result
    }
}
