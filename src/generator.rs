//! A generator's own layer of context (PEP 568, which Python deferred): the
//! mechanism behind `isolated()` iterators and streams, and the one place
//! that knows its rules.
//!
//! Each resumption runs in a context of its own whose map holds only the
//! generator's own values; its [`Frame`] keeps the caller's *current* map
//! under them. So `set` and `reset` inside the generator are plain writes
//! of its own map (a token records only a value of the generator's own, and
//! a reset back to "no value" removes it), and a read that finds no own
//! value falls through to the caller's (`Context::outer_value`, on the read
//! cache's miss path). A copy of the resumption's context
//! (`copy_context()`, a spawn) is the caller's map with the own values
//! merged on top ([`Frame::merged`]). A resumption therefore costs
//! O(1) plus its own writes, whatever the size of the caller's map.
//!
//! **Invariant:** every resumption, and the generator's drop, runs in a
//! context with the generator's one id that shows exactly the caller's
//! values with the generator's own on top; so a token made in one
//! resumption resets in a later one, a caller's token is `DifferentContext`
//! inside, and the generator's values (and the destructors of what it
//! replaces) are dropped inside that context, never in the caller's.

use crate::context::{Context, Frame, current_map};
use crate::ids::next_id;
use crate::map::Map;

/// The values a generator has set, over whatever its caller has.
pub(crate) struct Generator {
    id: u64,
    own: Map,
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
        // What the resumption replaced of the generator's own values is
        // released inside the layer, with the layer's values in place: its
        // destructors read them, and what they set stays in the layer. (If
        // the own values are unchanged, `before` shares them: nothing to do.)
        let frame = resumption
            .ctx
            .frame_mut()
            .expect("a generator context has a frame");
        if frame.before.owns_root() {
            let before = std::mem::take(&mut frame.before);
            resumption.ctx.run_exclusive(|| drop(before));
        }
        result
    }

    /// A context for one resumption (or the drop) of the generator, over the
    /// current caller's context; it takes the own values until `Resumption`
    /// gives them back.
    fn context(&mut self) -> Context {
        let frame = Frame {
            outer: current_map(),
            before: self.own.clone(),
        };
        Context::for_generator(self.id, std::mem::take(&mut self.own), frame)
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
        self.generator.own = if self.finished {
            std::mem::take(self.ctx.map_mut())
        } else {
            let frame = self
                .ctx
                .frame_mut()
                .expect("a generator context has a frame");
            std::mem::take(&mut frame.before)
        };
    }
}
