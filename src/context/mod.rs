//! The core: contexts, each thread's current one, and the paths that read,
//! write and switch it. Everything else in the crate is built on what this
//! module exports.
//!
//! It is a stack of layers, each a file holding one mechanism, each using
//! only the layers below it:
//!
//! 1. `sharing`: the shared-context protocol (who has a context entered,
//!    the polls that wait their turn, the lock readers and writers take);
//! 2. `scoped`, `frame`: data only, the list of `scope`d values and a
//!    generator's frame;
//! 3. `state`: the `Context` struct itself, and how an access to its map
//!    is opened;
//! 4. `thread`: what each thread keeps of its current context;
//! 5. `read`: the read path, through the thread's read cache;
//! 6. `observers`: the observers' engine, which reads through `read`;
//! 7. `switch`: entering and leaving contexts, the thread's base context;
//! 8. `write`: the write path, `scope` included;
//! 9. `api`: the public `Context` and the functions that copy the current
//!    context;
//! 10. `release`: dropping a context, its values inside it.
//!
//! The invariants each layer keeps are in its own file; how a `get`, a
//! `set` and a `run` flow through them, in ARCHITECTURE.md.

mod api;
mod frame;
pub(crate) mod observers;
mod read;
mod release;
mod scoped;
mod sharing;
mod state;
mod switch;
mod thread;
mod write;

pub use api::{copy_context, inherited_context, wrap};
pub(crate) use frame::Frame;
#[cfg(test)]
pub(crate) use read::LOOK_UPS;
pub(crate) use read::{current_fork, current_id, read_current};
pub use state::Context;
pub(crate) use state::ForkLink;
pub(crate) use switch::current_id_or_base;
pub(crate) use write::{current_map, scoped, scoped_lent, write_current, write_current_in};
#[cfg(all(feature = "tokio", tokio_unstable, not(loom)))]
pub(crate) use {
    switch::{Entered, enter_raw, leave_raw},
    write::inherited_map,
};
