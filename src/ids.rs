//! Identities: context ids, variable ids, and the registry of variable names
//! by id.
//!
//! Context ids are handed out in blocks per thread, so making a context does
//! not contend on a shared counter; variable ids come from one process-wide
//! counter, once per variable. Values do not carry their variable's name,
//! which keeps a context small; [`name_of`] finds it here.
//!
//! **Invariant:** no id is handed out twice, a variable id stays below 2³²
//! (the read cache packs one into 32 bits), and every variable id a context
//! can hold has its name recorded before the id is published.

use std::cell::Cell;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::map::VarId;

/// A fresh context id.
/// not contend on a shared counter.
#[inline]
pub(crate) fn next_id() -> u64 {
    const BLOCK: u64 = 1024;
    static NEXT_BLOCK: AtomicU64 = AtomicU64::new(1);
    thread_local! {
        static IDS: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
    }
    IDS.with(|ids| {
        let (next, end) = ids.get();
        if next < end {
            ids.set((next + 1, end));
            next
        } else {
            let start = NEXT_BLOCK.fetch_add(BLOCK, Ordering::Relaxed);
            ids.set((start + 1, start + BLOCK));
            start
        }
    })
}

static NEXT_VAR: AtomicU64 = AtomicU64::new(1);

/// Variable ids are below this (the read cache packs one into 32 bits).
const MAX_VARS: u64 = 1 << 32;

/// Every variable's name, by id, for `Context::names`; 16 bytes per variable
/// ever given an id.
static NAMES: RwLock<Vec<&'static str>> = RwLock::new(Vec::new());

/// A fresh variable id for the variable named `name`, its name recorded.
///
/// # Panics
///
/// After 2³² variables, naming the one that cannot get an id.
pub(crate) fn new_var_id(name: &'static str) -> VarId {
    let fresh = NEXT_VAR.fetch_add(1, Ordering::Relaxed);
    assert!(
        fresh < MAX_VARS,
        "contextvars: more than {MAX_VARS} context variables were created; \
         `{name}` cannot get an id"
    );
    // Named before it is published, so any id a context holds has a name.
    let mut names = NAMES.write().unwrap_or_else(|e| e.into_inner());
    let i = usize::try_from(fresh).expect("variable ids fit in usize");
    if names.len() <= i {
        names.resize(i + 1, "");
    }
    names[i] = name;
    fresh
}

/// The name of the variable with id `id`.
pub(crate) fn name_of(id: VarId) -> &'static str {
    let names = NAMES.read().unwrap_or_else(|e| e.into_inner());
    usize::try_from(id)
        .ok()
        .and_then(|i| names.get(i).copied())
        .unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ids are never handed out twice, also when two threads make thousands
    /// of contexts and variables at once.
    #[test]
    fn ids_never_repeat_across_threads() {
        let take = || {
            let contexts: Vec<u64> = (0..5_000).map(|_| next_id()).collect();
            let vars: Vec<VarId> = (0..500).map(|_| new_var_id("v")).collect();
            (contexts, vars)
        };
        let other = std::thread::spawn(take);
        let (mut contexts, mut vars) = take();
        let (c2, v2) = other.join().unwrap();
        contexts.extend(c2);
        vars.extend(v2);
        let (n, m) = (contexts.len(), vars.len());
        contexts.sort_unstable();
        contexts.dedup();
        vars.sort_unstable();
        vars.dedup();
        assert_eq!((contexts.len(), vars.len()), (n, m), "an id was repeated");
        assert!(vars.iter().all(|&id| id != 0 && name_of(id) == "v"));
    }
}
