//! Identities: context ids, variable ids, and the registry of variable names
//! by id.
//!
//! Context ids are handed out in blocks per thread, so making a context does
//! not contend on a shared counter; variable ids come from one process-wide
//! counter, once per variable. Values do not carry their variable's name,
//! which keeps a context small; [`name_of`] finds it here.
//!
//! A variable id also carries the variable's inheritance policy: a variable
//! declared not inherited (`ContextVar::not_inherited`) has [`LOCAL_BIT`] set
//! in its id, so a map can count such entries without knowing the variable
//! (see `Map::locals`), and a spawn copy that finds none skips the filter.
//!
//! A variable may be internal (the crate's own state, such as the baggage
//! a request forwards): a context's listing (`names`, `entries`, `len`,
//! `Debug`) leaves it out, as users cannot name it.
//!
//! **Invariant:** no id is handed out twice, a variable id stays below 2³²
//! (the read cache packs one into 32 bits), and every variable id a context
//! can hold has its name (and its debug formatter, if any) recorded before
//! the id is published.

use std::cell::Cell;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// A variable's identity: unique for the life of the process, never 0.
pub type VarId = u64;

/// A fresh context id; ids come in blocks per thread, so making a context
/// does not contend on a shared counter.
#[inline]
pub(crate) fn next_id() -> u64 {
    const BLOCK: u64 = 1024;
    static NEXT_BLOCK: AtomicU64 = AtomicU64::new(1);
    crate::sync::thread_local! {
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

/// The bit of a variable id that marks a variable not inherited by spawned
/// work. Ids count up from 1, so this high bit only ever tells a trie apart
/// at its deepest level, which sequential ids never reach.
pub(crate) const LOCAL_BIT: VarId = 1 << 31;

/// Variable ids are below 2³² (the read cache packs one into 32 bits): the
/// counter stays below this, and [`LOCAL_BIT`] sits above it.
const MAX_VARS: u64 = LOCAL_BIT;

/// Whether the variable with id `id` is not inherited by spawned work.
#[inline]
pub(crate) const fn is_local(id: VarId) -> bool {
    id & LOCAL_BIT != 0
}

/// Formats a value of the variable it was registered for (its `T: Debug`);
/// the value is downcast with a check (listing is not a hot path).
pub(crate) type FmtValue =
    fn(&crate::value::Value, &mut std::fmt::Formatter<'_>) -> std::fmt::Result;

/// What the registry knows of a variable.
#[derive(Clone, Copy)]
struct VarInfo {
    name: &'static str,
    fmt: Option<FmtValue>,
    /// The crate's own state (`ContextVar::internal`): left out of a
    /// context's listing.
    internal: bool,
}

/// Every variable's name and debug formatter, by id without [`LOCAL_BIT`],
/// for `Context::names` and `Context::entries`; 24 bytes per variable ever
/// given an id.
static NAMES: RwLock<Vec<VarInfo>> = RwLock::new(Vec::new());

/// The ids of the internal variables (few: the crate's own), as published.
static INTERNAL: RwLock<Vec<VarId>> = RwLock::new(Vec::new());

/// A fresh variable id for the variable named `name`, its name (and `fmt`,
/// its values' debug formatter; and whether it is `internal`) recorded;
/// with [`LOCAL_BIT`] if `local`.
///
/// # Panics
///
/// After 2³¹ variables, naming the one that cannot get an id.
pub(crate) fn new_var_id(
    name: &'static str,
    local: bool,
    fmt: Option<FmtValue>,
    internal: bool,
) -> VarId {
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
        names.resize(
            i + 1,
            VarInfo {
                name: "",
                fmt: None,
                internal: false,
            },
        );
    }
    names[i] = VarInfo {
        name,
        fmt,
        internal,
    };
    let id = if local { fresh | LOCAL_BIT } else { fresh };
    if internal {
        INTERNAL.write().unwrap_or_else(|e| e.into_inner()).push(id);
    }
    id
}

/// The ids of the internal variables, to leave out of a context's length.
pub(crate) fn internal_ids() -> Vec<VarId> {
    INTERNAL.read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Whether the variable with id `id` is internal, left out of listings.
pub(crate) fn is_internal(id: VarId) -> bool {
    info_of(id).is_some_and(|info| info.internal)
}

fn info_of(id: VarId) -> Option<VarInfo> {
    let names = NAMES.read().unwrap_or_else(|e| e.into_inner());
    usize::try_from(id & !LOCAL_BIT)
        .ok()
        .and_then(|i| names.get(i).copied())
}

/// The name of the variable with id `id`.
pub(crate) fn name_of(id: VarId) -> &'static str {
    info_of(id).map_or("", |info| info.name)
}

/// The name of the variable with id `id`, and its values' debug formatter
/// if it was declared with one.
pub(crate) fn debug_info_of(id: VarId) -> (&'static str, Option<FmtValue>) {
    info_of(id).map_or(("", None), |info| (info.name, info.fmt))
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
            let vars: Vec<VarId> = (0..500)
                .map(|i| new_var_id("v", i % 2 == 0, None, false))
                .collect();
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
        // Half were local: the bit does not make two ids equal once masked.
        let mut masked: Vec<VarId> = vars.iter().map(|id| id & !LOCAL_BIT).collect();
        masked.sort_unstable();
        masked.dedup();
        assert_eq!(masked.len(), m, "a masked id was repeated");
    }
}
