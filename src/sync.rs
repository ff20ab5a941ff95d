//! The atomics of a context's `state`, `lock` and `scoped` words: `std`'s normally,
//! loom's under `--cfg loom` (so `tests/loom.rs` can explore the
//! interleavings of two threads entering one context with the real
//! `Context::try_run`). See `RELIABILITY.md` for what loom covers.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
