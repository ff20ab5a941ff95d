//! Every value set is dropped exactly once, and only when nothing holds it
//! any more, through the map's copy-on-write paths: contexts that share
//! nodes with copies, writes that copy a shared node (`make_mut`), that
//! grow one, that take an entry out of a shared or an owned one, that turn
//! the flat root into a branch, and that empty the map. A node a write lets
//! go of (`Garbage`) that were never released would keep its values alive;
//! one released twice would drop them twice.
//!
//! Pure core (no runtime), so it also runs under Miri (`.ci/miri`).

use std::sync::LazyLock;

use contextvars::{Context, ContextVar};

#[path = "common/counted.rs"]
mod counted;
use counted::{Counted, Counter};

/// Counts the drops of every value this file sets.
static COUNTER: LazyLock<Counter> = LazyLock::new(Counter::new);

/// Enough variables for the root to become a branch (a flat root holds a
/// few), and for branches to hold several entries each.
const N: usize = 48;
static VARS: [ContextVar<(u32, Counted)>; N] = [const { ContextVar::new("counted") }; N];

/// Sets every variable in `ctx`, each value numbered from `*made`.
fn set_all(ctx: &Context, made: &mut u32) {
    ctx.run(|| {
        for var in &VARS {
            var.set((*made, Counted::new(&COUNTER)));
            *made += 1;
        }
    });
}

#[test]
fn every_value_is_dropped_once_through_copies_and_copy_on_write() {
    // The only test of this file, so nothing else counts in `COUNTER`.
    let before = COUNTER.drops();
    let mut made = 0;
    {
        let a = Context::new();
        set_all(&a, &mut made);
        // `b` shares every node with `a`.
        let b = a.copy();
        assert_eq!(COUNTER.drops() - before, 0);
        // Replacing in `a` copies the shared nodes: `b` keeps the old values.
        set_all(&a, &mut made);
        assert_eq!(COUNTER.drops() - before, 0, "b holds them");
        let numbers = |ctx: &Context| -> Vec<Option<usize>> {
            ctx.run(|| {
                VARS.iter()
                    .map(|v| v.with(|c| c.map(|c| c.0 as usize)))
                    .collect()
            })
        };
        assert_eq!(numbers(&b), (0..N).map(Some).collect::<Vec<_>>());
        assert_eq!(numbers(&a), (N..2 * N).map(Some).collect::<Vec<_>>());
        let c = b.copy();
        // Removing from `b`, whose nodes `c` shares: an entry taken out of a
        // shared node, then out of the node `b` now owns alone.
        let tokens: Vec<_> = b.run(|| {
            VARS.iter()
                .map(|var| {
                    let token = var.set((u32::MAX, Counted::new(&COUNTER)));
                    made += 1;
                    token
                })
                .collect()
        });
        b.run(|| {
            for (var, token) in VARS.iter().zip(tokens).rev() {
                var.reset(token).unwrap();
            }
        });
        // The values set and reset in `b` went with their resets.
        assert_eq!(COUNTER.drops() - before, N);
        drop(b);
        assert_eq!(COUNTER.drops() - before, N, "c holds b's values");
        assert_eq!(numbers(&c), (0..N).map(Some).collect::<Vec<_>>());
        drop(c);
        assert_eq!(
            COUNTER.drops() - before,
            2 * N,
            "the first values had no holder left"
        );
        // Replacing in `a` again: `a` owns its nodes now, so in place.
        set_all(&a, &mut made);
        assert_eq!(COUNTER.drops() - before, 3 * N);
        // A context emptied one variable at a time (removals down to an
        // empty root) while a copy shares its nodes, then the copy dropped.
        let d = Context::new();
        let tokens: Vec<_> = d.run(|| {
            VARS.iter()
                .map(|var| {
                    made += 1;
                    var.set((made, Counted::new(&COUNTER)))
                })
                .collect()
        });
        let e = d.copy();
        d.run(|| {
            for (var, token) in VARS.iter().zip(tokens) {
                var.reset(token).unwrap();
            }
        });
        assert!(d.is_empty());
        assert_eq!(e.len(), N);
        assert_eq!(COUNTER.drops() - before, 3 * N, "e holds d's values");
        drop(e);
        assert_eq!(COUNTER.drops() - before, 4 * N);
        drop(d);
    }
    assert_eq!(COUNTER.drops() - before, made as usize, "every value, once");
}
