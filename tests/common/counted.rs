//! `Counted`: a test value that counts itself, for the tests that check
//! when, and how many times, the crate drops what it holds.
//!
//! Each `Counted` is made from a [`Counter`], which tells how many of its
//! values were dropped and how many are alive; a drop missed and a drop
//! made twice both show. The unit tests in `src/` include this file too.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Counts the [`Counted`] values made from it: made, and dropped. Clones
/// share the counts.
#[derive(Clone, Default)]
pub struct Counter(Arc<Counts>);

#[derive(Default)]
struct Counts {
    made: AtomicUsize,
    dropped: AtomicUsize,
}

impl Counter {
    /// A counter with nothing counted.
    pub fn new() -> Counter {
        Counter::default()
    }

    /// How many of its values were dropped so far.
    pub fn drops(&self) -> usize {
        self.0.dropped.load(Ordering::SeqCst)
    }

    /// How many of its values are alive (made and not dropped).
    pub fn live(&self) -> usize {
        // `dropped` first: a value is counted made before it can be dropped.
        let dropped = self.0.dropped.load(Ordering::SeqCst);
        self.0.made.load(Ordering::SeqCst) - dropped
    }
}

/// A value counted by a [`Counter`]: one pointer in size, so a test can
/// put it in a value whose size it chooses. A clone is a new value, counted
/// too. (A test that tells values apart pairs each with a number.)
pub struct Counted(Counter);

impl Counted {
    /// A value counted by `counter`.
    pub fn new(counter: &Counter) -> Counted {
        counter.0.made.fetch_add(1, Ordering::SeqCst);
        Counted(counter.clone())
    }
}

impl Clone for Counted {
    fn clone(&self) -> Counted {
        Counted::new(&self.0)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.0.dropped.fetch_add(1, Ordering::SeqCst);
    }
}

// What "one pointer in size" promises the tests that size their values.
const _: () = assert!(std::mem::size_of::<Counted>() == std::mem::size_of::<usize>());
