//! rayon's `join`, `scope`, `spawn`, `broadcast`, `ThreadPool::install`
//! and parallel iterators, with every closure in a copy of the caller's
//! context (feature `rayon`).
//!
//! The copy is taken on the calling thread when the helper is called; each
//! closure (each `join` half, each `spawn`ed job, each parallel item, each
//! thread of a broadcast) runs in its own copy of it, so workers never
//! contend on one context and no closure's `set` is seen by the caller or by
//! another closure.
//!
//! **Work stealing and plain rayon calls.** A rayon worker that waits (in
//! `join`, at the end of a `scope`, in `yield_now`) runs other jobs on the
//! same stack meanwhile, and they may be unrelated jobs from a plain
//! `rayon::spawn`, `rayon::join` or a plain parallel iterator. Such a job
//! runs in whatever context is current there: the waiting helper
//! closure's. It reads that closure's values, and its `set`s land in that
//! closure's context. Nothing outside rayon can prevent this. A job started
//! through these helpers always enters its own copy first, so a program
//! that starts rayon work only through this module never mixes contexts;
//! every plain rayon call in the same pool is a way in for the mix. The
//! helpers here cover what rayon offers: [`spawn`], [`spawn_fifo`],
//! [`join`], [`scope`], [`scope_fifo`], [`in_place_scope`],
//! [`in_place_scope_fifo`], [`broadcast`], [`spawn_broadcast`],
//! [`ThreadPoolExt`] and [`ParallelIteratorExt`].
//!
//! ```
//! use contextvars::ContextVar;
//! use contextvars::prelude::*;
//! use rayon::prelude::*;
//!
//! static FACTOR: ContextVar<u64> = ContextVar::new("factor");
//!
//! FACTOR.set(10);
//! let (a, b) = contextvars::rayon::join(|| FACTOR.get(), || {
//!     FACTOR.set(0); // this closure's own copy
//!     FACTOR.get()
//! });
//! assert_eq!((a, b), (Ok(10), Ok(0)));
//! let scaled: Vec<u64> = (1..=3u64).into_par_iter().map_in_current_context(|x| x * FACTOR.get().unwrap()).collect();
//! assert_eq!(scaled, [10, 20, 30]);
//! ```
//!
//! **Invariant:** a closure run by a rayon worker through these helpers
//! never runs in the worker thread's own context nor in another closure's.

// One file per part of rayon's API, as rayon lays it out.
// `join`, `spawn`, `spawn_fifo`, `spawn_detached`, `broadcast`, `spawn_broadcast`.
mod jobs;
// The scopes and their handles: `scope`, `in_place_scope` (and FIFO), `Scope`.
mod scope;
// `ThreadPoolExt`.
mod pool;
// `ParallelIteratorExt`.
mod iter;

pub use iter::ParallelIteratorExt;
pub use jobs::{broadcast, join, spawn, spawn_broadcast, spawn_detached, spawn_fifo};
pub use pool::ThreadPoolExt;
pub use scope::{Scope, ScopeFifo, in_place_scope, in_place_scope_fifo, scope, scope_fifo};
