//! The persistent map behind every [`Context`](crate::Context): variable id →
//! [`Value`], with O(1) copies and structural sharing.
//!
//! It is a hash array mapped trie (as CPython's `Python/hamt.c`) keyed by the
//! variable's id itself: ids are unique integers, so there is no hashing and no
//! collision node — two ids always part ways within 64 bits. Maps with at most
//! [`FLAT_MAX`] entries keep a flat root scanned linearly, which is what nearly
//! every real context is. A node that is the map's own keeps room after its
//! last child ([`Child::Vacant`], left by removals, and a flat root grows by
//! doubling), so a variable added and removed again, as `set` and `reset` of
//! a variable the context lacks do, costs no allocation after the first time.
//!
//! Each node is one exact-size allocation behind a thin, reference-counted
//! handle (`node::Node`: a count and the length, then the slots), and a
//! branch's bitmap is kept beside the pointer to it (in its parent's slot,
//! or in the [`Map`] for the root), so a lookup reads no bitmap from the
//! node. A map entry is 24 bytes: the id and a thin [`Value`] handle.
//!
//! **Invariant:** a node reachable from more than one [`Map`] is never mutated.
//! Writers mutate a node in place only when they hold its sole reference and
//! copy it otherwise, so a copy taken at any time keeps seeing exactly the
//! entries it was taken with. Nodes a writer lets go of are handed back in a
//! [`Garbage`] list rather than dropped on the spot, so that no value's
//! destructor runs while the caller holds the context's write lock.

// One mechanism per file; a file uses only those above it in this list.
// A node's layout, and the one way to write a node in place.
mod node;
// The nodes a write lets go of, dropped by the caller.
mod garbage;
// A node written in place when the map holds it alone, else copied.
mod copy_on_write;
// The trie under a branch: lookup, insertion, removal, 5 bits a level.
mod branch;
// `Map`: its root, flat or a branch, and the operations that start there.
mod root;
// A map's handle on its root: shared with other maps, or the last one.
mod handles;
// Walking the entries; the ids that differ between two versions.
mod iter;

pub use crate::ids::VarId;
pub use crate::value::Value;
pub use garbage::Garbage;
pub use root::Map;
// Public with `__bench_internals`; the rest of the crate names them only
// in some builds (`FLAT_MAX` with feature `http`), or not at all.
#[cfg_attr(
    not(feature = "__bench_internals"),
    allow(unused_imports, reason = "the map's API, named by the benchmarks")
)]
pub use {iter::Iter, node::Child, root::FLAT_MAX};

#[cfg(test)]
mod tests;
