//! A generator's own layer of context (PEP 568, which Python deferred): the
//! mechanism behind `isolated()` iterators and streams, and the one place
//! that knows its rules.
//!
//! Each resumption runs in a context of its own whose map is the caller's
//! *current* map with the generator's own values on top. That context keeps
//! the two apart (a [`Frame`]): a `set` records in its token only a value of
//! the generator's own (a value that shows through from the caller is not
//! one), and a reset back to "no value" lets the caller's value show through
//! again. After the resumption, the generator keeps the frame's own values,
//! moved out of it, so a resumption costs O(the generator's own values and
//! changes), whatever the size of the caller's map.
//!
//! **Invariant:** every resumption, and the generator's drop, runs in a
//! context with the generator's one id whose map is exactly the caller's map
//! with the generator's own values on top; so a token made in one resumption
//! resets in a later one, a caller's token is `DifferentContext` inside, and
//! the generator's values (and the destructors of what it replaces) are
//! dropped inside that context, never in the caller's.

use crate::context::{Context, current_map, next_id};
use crate::map::{Garbage, Map, Value, VarId};

/// The values a generator has set, over whatever its caller has.
pub(crate) struct Generator {
    id: u64,
    own: Map,
}

/// A resumption's view of the generator: its own values and the caller's
/// map under them, kept by the resumption's [`Context`].
pub(crate) struct Frame {
    /// The caller's map, as of the resumption.
    outer: Map,
    /// The generator's own values.
    own: Map,
    /// The generator's own values as of the resumption, given back to it if
    /// the resumption panics.
    before: Map,
}

impl Frame {
    /// `set` inside a resumption: `map` (the caller's map with the own
    /// values on top) and the own values both take `value`; the token gets
    /// the generator's own old value, never one of the caller's.
    pub(crate) fn insert(
        &mut self,
        map: &mut Map,
        id: VarId,
        value: Value,
        garbage: &mut Garbage,
    ) -> Option<Value> {
        // Never the last handle to what it replaces: that is either an own
        // value (also in `own`) or the caller's (also in `outer`).
        drop(map.insert(id, value.clone(), garbage));
        self.own.insert(id, value, garbage)
    }

    /// `reset` inside a resumption: gives `id` back the own value `old`, or,
    /// with `None`, lets the caller's value (if any) show through again.
    /// Returns the value that goes, to be dropped by the caller.
    pub(crate) fn restore(
        &mut self,
        map: &mut Map,
        id: VarId,
        old: Option<Value>,
        garbage: &mut Garbage,
    ) -> Option<Value> {
        let shown = old.clone().or_else(|| self.outer.get(id).cloned());
        // Not the last handle to what goes: `own` still holds it.
        drop(match shown {
            Some(shown) => map.insert(id, shown, garbage),
            None => map.remove(id, garbage),
        });
        match old {
            Some(old) => self.own.insert(id, old, garbage),
            None => self.own.remove(id, garbage),
        }
    }
}

impl Generator {
    pub(crate) fn new() -> Generator {
        Generator {
            id: next_id(),
            own: Map::default(),
        }
    }

    /// Runs one resumption of the generator. If it panics, the generator
    /// keeps the values it had before the resumption.
    pub(crate) fn resume<R>(&mut self, f: impl FnOnce() -> R) -> R {
        let mut resumption = Resumption {
            ctx: self.context(),
            generator: self,
            finished: false,
        };
        let result = resumption.ctx.run_exclusive(f);
        resumption.finished = true;
        result
    }

    /// A context for one resumption (or the drop) of the generator, in the
    /// current caller's context.
    fn context(&mut self) -> Context {
        let outer = current_map();
        let mut map = outer.clone();
        // Copies of the caller's nodes along the own values' paths: what the
        // garbage holds is shared with the caller, so dropping it here runs
        // no destructor.
        let mut garbage = Garbage::new();
        for (id, value) in self.own.iter() {
            map.insert(id, value.clone(), &mut garbage);
        }
        let frame = Frame {
            outer,
            before: self.own.clone(),
            own: std::mem::take(&mut self.own),
        };
        Context::for_generator(self.id, map, frame)
    }
}

impl Drop for Generator {
    /// The generator's own values are dropped inside a context of its own
    /// (the context's drop runs their destructors inside it).
    fn drop(&mut self) {
        if !self.own.is_empty() {
            drop(self.context());
        }
    }
}

/// One resumption under way: afterwards (also on unwinding), hands the
/// generator its own values back out of the resumption's context, then
/// drops that context, which drops whatever the generator let go of inside
/// itself.
struct Resumption<'a> {
    generator: &'a mut Generator,
    ctx: Context,
    finished: bool,
}

impl Drop for Resumption<'_> {
    fn drop(&mut self) {
        let frame = self
            .ctx
            .frame_mut()
            .expect("a generator context has a frame");
        let kept = if self.finished {
            &mut frame.own
        } else {
            &mut frame.before
        };
        self.generator.own = std::mem::take(kept);
    }
}
