//! Memory per context (BENCHMARKS.md): 1,000,000 contexts, each a
//! copy of one shared parent that differs from it by one variable, counted
//! by a global allocator that tracks live heap bytes.
//!
//! ```text
//! cargo run --release --example memory [-- COUNT]
//! ```
//!
//! Prints JSON: for parents of 1 and 10 variables, the bytes per context:
//! `heap` (what the copy and its one `set` allocate: map nodes and the
//! value) and `total` (that plus the `Context` itself, held here in a
//! `Vec<Context>`). Requested sizes are counted, not the allocator's rounding.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use contextvars::{Context, ContextVar};

/// The system allocator, counting live bytes.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to `System` unchanged; the counter is only
// bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded with the caller's pointer and layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded with the caller's arguments.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

static CHANGED: ContextVar<u64> = ContextVar::new("changed");

/// Live heap bytes per context for `count` copies of a parent holding
/// `parent_vars` variables, each copy setting one more.
fn bytes_per_context(parent_vars: usize, count: usize) -> f64 {
    let vars: Vec<ContextVar<u64>> = (0..parent_vars)
        .map(|_| ContextVar::new("parent"))
        .collect();
    let parent = Context::new();
    parent.run(|| {
        for var in &vars {
            var.set(1);
        }
    });
    let mut contexts: Vec<Context> = Vec::with_capacity(count);
    let before = LIVE.load(Ordering::Relaxed);
    for i in 0..count {
        let ctx = parent.copy();
        ctx.run(|| CHANGED.set(i as u64));
        contexts.push(ctx);
    }
    let after = LIVE.load(Ordering::Relaxed);
    assert_eq!(contexts.len(), count);
    assert_eq!(contexts[count - 1].get(&CHANGED), Some(count as u64 - 1));
    (after - before) as f64 / count as f64
}

fn main() {
    let count: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("COUNT must be a number"))
        .unwrap_or(1_000_000);
    let context_struct = std::mem::size_of::<Context>();
    let mut rows = Vec::new();
    for parent_vars in [1, 10] {
        let heap = bytes_per_context(parent_vars, count);
        rows.push(format!(
            "  \"parent_{parent_vars}\": {{\"heap\": {heap:.1}, \"total\": {:.1}}}",
            heap + context_struct as f64
        ));
    }
    println!(
        "{{\n  \"contexts\": {count},\n  \"context_struct\": {context_struct},\n{}\n}}",
        rows.join(",\n")
    );
}
