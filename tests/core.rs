//! Core guarantees beyond CPython's own test list: thread isolation, no
//! leaks, borrows that survive writes, live reads of a context entered on
//! another thread, run-time variables, and the read cache. (Panics through
//! `run` and `sync_scope`: `tests/panic_safety.rs`; value boxes and spare blocks:
//! unit tests in `src/value.rs` and `src/spare.rs`.)

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, mpsc};
use std::time::Duration;

use contextvars::{
    AlreadyEntered, AlreadyEnteredError, Context, ContextVar, LookupError, ResetError, Token,
    copy_context, wrap,
};

#[path = "common/counted.rs"]
mod counted;
use counted::{Counted, Counter};

fn assert_send_sync<T: Send + Sync + std::fmt::Debug>() {}

#[test]
fn public_types_are_send_sync_and_debug() {
    assert_send_sync::<Context>();
    assert_send_sync::<ContextVar<String>>();
    assert_send_sync::<Token<String>>();
    assert_send_sync::<LookupError>();
    assert_send_sync::<ResetError>();
    assert_send_sync::<AlreadyEnteredError>();
    assert_send_sync::<AlreadyEntered>();
}

#[test]
fn error_accessors_name_the_variable() {
    static USER: ContextVar<u32> = ContextVar::new("user");
    let err = USER.get().unwrap_err();
    assert_eq!(err.var_name(), "user");
    #[allow(deprecated)]
    let former = err.var();
    assert_eq!(former, "user", "the former name still answers");
    assert_eq!(USER.set(1).var_name(), err.var_name());
    let ctx = Context::new();
    let entered: AlreadyEnteredError = ctx.run(|| ctx.try_run(|| ()).unwrap_err());
    let _alias: AlreadyEntered = entered;
}

#[test]
fn ten_threads_setting_and_sleeping_see_only_their_own_values() {
    static ID: ContextVar<usize> = ContextVar::new("id");
    let barrier = Arc::new(Barrier::new(10));
    let handles: Vec<_> = (0..10)
        .map(|i| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                assert!(
                    ID.get().is_err(),
                    "a new thread starts with an empty context"
                );
                barrier.wait();
                for round in 0..20 {
                    let token = ID.set(i * 1000 + round);
                    std::thread::sleep(Duration::from_millis(1));
                    assert_eq!(ID.get(), Ok(i * 1000 + round));
                    if round % 2 == 0 {
                        ID.reset(token).unwrap();
                    }
                }
                ID.get()
            })
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(h.join().unwrap(), Ok(i * 1000 + 19));
    }
    assert!(
        ID.get().is_err(),
        "no thread wrote into the main thread's context"
    );
}

#[test]
fn values_are_dropped_with_the_last_context_holding_them() {
    static V: ContextVar<Counted> = ContextVar::new("counted");
    let live = Counter::new();
    let ctx = Context::new();
    ctx.run(|| {
        V.set(Counted::new(&live));
    });
    let copy = ctx.copy();
    assert_eq!(live.live(), 1, "a copy shares, it does not clone");
    drop(ctx);
    assert_eq!(live.live(), 1, "the copy still holds it");
    copy.run(|| {
        let token = V.set(Counted::new(&live));
        assert_eq!(live.live(), 2, "the token keeps the old value");
        V.reset(token).unwrap();
        assert_eq!(live.live(), 1, "reset dropped the newer value");
        // A dropped token leaves the value set and drops its record.
        drop(V.set(Counted::new(&live)));
        assert_eq!(live.live(), 1);
    });
    drop(copy);
    assert_eq!(live.live(), 0, "nothing leaked");
}

#[test]
fn a_threads_base_context_is_dropped_when_the_thread_exits() {
    static V: ContextVar<Counted> = ContextVar::new("counted");
    let live = Counter::new();
    let l = live.clone();
    std::thread::spawn(move || {
        V.set(Counted::new(&l));
        V.set(Counted::new(&l));
    })
    .join()
    .unwrap();
    assert_eq!(live.live(), 0);
}

#[test]
fn a_borrow_from_with_survives_writes_inside_it() {
    static A: ContextVar<String> = ContextVar::new("a");
    static B: ContextVar<u32> = ContextVar::new("b");
    let token = A.set("first".to_string());
    let seen = A.with(|a| {
        let a = a.unwrap();
        // Overwrite and reset the very value we borrow, then write others.
        let t2 = A.set("second".to_string());
        A.reset(t2).unwrap();
        drop(A.set("third".to_string()));
        for i in 0..100 {
            B.set(i);
        }
        a.clone()
    });
    assert_eq!(seen, "first");
    assert_eq!(A.get().as_deref(), Ok("third"));
    A.reset(token).unwrap();
    assert!(
        A.get().is_err(),
        "the first token still restores \"no value\""
    );
}

#[test]
fn context_get_shows_the_live_state_of_a_context_entered_elsewhere() {
    static V: ContextVar<u32> = ContextVar::new("v");
    let ctx = Arc::new(Context::new());
    let (to_reader, from_owner) = mpsc::channel();
    let (to_owner, from_reader) = mpsc::channel::<()>();
    let owner = {
        let ctx = ctx.clone();
        std::thread::spawn(move || {
            ctx.run(|| {
                for i in 1..=50 {
                    V.set(i);
                    to_reader.send(i).unwrap();
                    from_reader.recv().unwrap();
                }
            })
        })
    };
    for _ in 1..=50 {
        let i = from_owner.recv().unwrap();
        assert_eq!(
            ctx.get(&V),
            Some(i),
            "the reader sees the set that happened before"
        );
        assert!(ctx.try_run(|| ()).is_err(), "entered on the owner thread");
        to_owner.send(()).unwrap();
    }
    owner.join().unwrap();
    assert_eq!(ctx.get(&V), Some(50));
}

#[test]
fn copies_race_with_writes_without_tearing() {
    static V: ContextVar<u64> = ContextVar::new("v");
    static W: ContextVar<u64> = ContextVar::new("w");
    let ctx = Arc::new(Context::new());
    let writer = {
        let ctx = ctx.clone();
        std::thread::spawn(move || {
            ctx.run(|| {
                for i in 0..if cfg!(miri) { 300 } else { 20_000u64 } {
                    // Keep both variables equal at every published version.
                    let _ = V.set(i);
                    let _ = W.set(i);
                }
            })
        })
    };
    let mut copies = 0;
    while !writer.is_finished() || copies == 0 {
        let copy = ctx.copy();
        let (v, w) = (copy.get(&V), copy.get(&W));
        // A copy is a consistent version: W never runs ahead of V.
        if let (Some(v), Some(w)) = (v, w) {
            assert!(w == v || w + 1 == v, "v={v} w={w}");
        }
        copies += 1;
    }
    writer.join().unwrap();
    let last = if cfg!(miri) { 299 } else { 19_999 };
    assert_eq!(ctx.get(&V), Some(last));
    assert_eq!(ctx.get(&W), Some(last));
}

/// The owner of a shared context scopes, sets and resets a variable whose
/// value is on the heap (a `Vec` whose every element is its length), in a
/// loop, while two other threads read and copy the context: every value
/// they see is whole (a read that overlapped the owner's write, or a value
/// freed under a reader, shows as a wrong element, and to Miri and
/// ThreadSanitizer as a race), one the owner had in place, and the context
/// ends with the value it started with. The owner's writes take no locked
/// instruction where the asymmetric barrier is on (`barrier`), so this is
/// the barrier's protocol under real contention: a reader that finds the
/// owner mid-write waits for it, and an owner that finds a reader backs off.
#[test]
fn scopes_and_writes_race_with_two_foreign_readers_and_stay_whole() {
    static V: ContextVar<Vec<u64>> = ContextVar::new("v");
    let rounds: u64 = if cfg!(miri) { 40 } else { 20_000 };
    let whole = |n: u64| vec![n; n as usize % 7 + 1];
    let check = |v: &[u64]| {
        let n = v[0];
        assert!(v.iter().all(|&x| x == n), "a torn value: {v:?}");
        assert_eq!(v.len() as u64, n % 7 + 1, "a torn value: {v:?}");
        n
    };
    let ctx = Arc::new(Context::new());
    ctx.run(|| V.set(whole(0)));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (ctx, done, check) = (ctx.clone(), done.clone(), check);
            std::thread::spawn(move || {
                let mut reads = 0u64;
                while !done.load(Ordering::Acquire) || reads == 0 {
                    let n = check(&ctx.get(&V).expect("set before"));
                    assert!(n == 0 || n % 2 == 1 || n % 4 == 2, "never in place: {n}");
                    let copy = ctx.copy();
                    check(&copy.get(&V).expect("set before"));
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    // An entry per round: a reader that meets the owner marks the context
    // contended until the owner leaves, so each entry is met afresh.
    for i in 1..=rounds {
        ctx.run(|| {
            // Odd: a scoped value; 4k + 2: a set, then reset. (4k: never.)
            V.sync_scope(whole(2 * i - 1), || {
                assert_eq!(V.get().map(|v| check(&v)), Ok(2 * i - 1))
            });
            let token = V.set(whole(4 * i + 2));
            V.reset(token).unwrap();
        });
    }
    done.store(true, Ordering::Release);
    for reader in readers {
        assert!(reader.join().unwrap() > 0);
    }
    assert_eq!(ctx.get(&V), Some(whole(0)));
}

#[test]
fn thousands_of_variables_created_at_run_time() {
    let n = if cfg!(miri) { 300 } else { 5000 };
    let vars: Vec<ContextVar<usize>> = (0..n).map(|_| ContextVar::new("runtime")).collect();
    let ctx = Context::new();
    ctx.run(|| {
        for (i, v) in vars.iter().enumerate() {
            v.set(i);
        }
        for (i, v) in vars.iter().enumerate() {
            assert_eq!(v.get(), Ok(i));
        }
    });
    assert_eq!(ctx.len(), n);
    for (i, v) in vars.iter().enumerate().step_by(7) {
        assert_eq!(ctx.get(v), Some(i));
    }
}

#[test]
fn identity_survives_moves_and_names_do_not_identify() {
    let a: ContextVar<u32> = ContextVar::new("same");
    let b: ContextVar<u32> = ContextVar::new("same");
    a.set(1);
    assert!(b.get().is_err(), "same name, different variable");
    let moved = Box::new(a);
    assert_eq!(moved.get(), Ok(1), "moving the variable keeps its identity");
    let token = moved.set(2);
    assert!(matches!(
        b.reset(token),
        Err(ResetError::DifferentVar {
            var: "same",
            token_var: "same"
        })
    ));
}

#[test]
fn failed_resets_change_nothing() {
    static A: ContextVar<u32> = ContextVar::new("a");
    static B: ContextVar<u32> = ContextVar::new("b");
    A.set(1);
    let token = A.set(2);
    let err = B.reset(token).unwrap_err();
    assert_eq!(
        err,
        ResetError::DifferentVar {
            var: "b",
            token_var: "a"
        }
    );
    assert!(err.to_string().contains("`a`") && err.to_string().contains("`b`"));
    assert_eq!(A.get(), Ok(2));
    let token = A.set(3);
    let err = Context::new().run(|| A.reset(token)).unwrap_err();
    assert_eq!(err, ResetError::DifferentContext { var: "a" });
    assert_eq!(A.get(), Ok(3));
}

/// A token reset on a thread that has no context at all (not even its base
/// context yet) is refused and handed back whole, and still resets where
/// it was made.
#[test]
fn a_reset_on_a_thread_without_a_context_hands_the_token_back() {
    static V: ContextVar<u32> = ContextVar::new("v");
    Context::new().run(|| {
        V.set(1);
        let token = V.set(2);
        let failed = std::thread::spawn(move || V.try_reset(token).unwrap_err())
            .join()
            .unwrap();
        assert_eq!(failed.error(), &ResetError::DifferentContext { var: "v" });
        let token = failed.into_token();
        assert_eq!(token.old_value(), Some(&1));
        assert_eq!(V.get(), Ok(2), "nothing changed");
        V.reset(token).unwrap();
        assert_eq!(V.get(), Ok(1));
    });
}

#[test]
fn wrap_runs_in_the_context_captured_at_wrap_time() {
    static V: ContextVar<u32> = ContextVar::new("v");
    V.set(1);
    let job = wrap(|| {
        let before = V.get();
        V.set(9);
        (before, V.get())
    });
    V.set(2);
    let (before, after) = std::thread::spawn(job).join().unwrap();
    assert_eq!((before, after), (Ok(1), Ok(9)));
    assert_eq!(V.get(), Ok(2), "the job's write stayed in its copy");
}

#[test]
fn context_debug_lists_variable_names() {
    static USER: ContextVar<u32> = ContextVar::new("user");
    static TENANT: ContextVar<u32> = ContextVar::new("tenant");
    let ctx = Context::new();
    ctx.run(|| {
        USER.set(1);
        TENANT.set(2);
    });
    let debug = format!("{ctx:?}");
    // Names sorted; values hidden (`..`) for variables not declared
    // `debuggable`.
    assert!(
        debug.contains(r#"vars: {"tenant": .., "user": ..}"#),
        "{debug}"
    );
    let mut names = ctx.names();
    names.sort();
    assert_eq!(names, ["tenant", "user"]);
}

#[test]
fn copy_context_outside_any_context_is_empty_and_independent() {
    std::thread::spawn(|| {
        static V: ContextVar<u32> = ContextVar::new("v");
        let empty = copy_context();
        assert!(empty.is_empty());
        V.set(1);
        assert!(empty.is_empty());
        assert_eq!(copy_context().len(), 1);
    })
    .join()
    .unwrap();
}

#[test]
fn the_read_cache_answers_only_for_its_own_variable_and_version() {
    // 40 variables side by side share the thread's 16 cache slots; reads,
    // writes and context switches interleave, checked against a plain model.
    let vars: Vec<ContextVar<usize>> = (0..40).map(|_| ContextVar::new("cached")).collect();
    let other = Context::new();
    let mut model: Vec<Option<usize>> = vec![None; vars.len()];
    let mut tokens = Vec::new();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let steps = if cfg!(miri) { 300 } else { 20_000 };
    for step in 0..steps {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let i = (state % vars.len() as u64) as usize;
        match (state >> 32) % 5 {
            0 => {
                tokens.push((i, vars[i].set(step)));
                model[i] = Some(step);
            }
            1 => {
                if let Some((j, token)) = tokens.pop() {
                    model[j] = token.old_value().copied();
                    vars[j].reset(token).unwrap();
                }
            }
            2 => {
                // Another context in between: its (empty) view, then ours.
                assert_eq!(other.run(|| vars[i].get()).ok(), None);
            }
            _ => {}
        }
        assert_eq!(vars[i].get().ok(), model[i], "step {step}, variable {i}");
    }
    while let Some((i, token)) = tokens.pop() {
        vars[i].reset(token).unwrap();
    }
}

#[test]
fn a_new_variable_at_a_dropped_ones_address_starts_empty() {
    // The same storage holds one variable, then another: same address,
    // different identity (the read cache is found by address, keyed by id).
    let mut storage = ContextVar::<u32>::new("old");
    storage.set(1);
    assert_eq!(storage.get(), Ok(1)); // cached now
    let address = std::ptr::from_ref(&storage).addr();
    storage = ContextVar::new("new");
    assert_eq!(std::ptr::from_ref(&storage).addr(), address);
    assert!(storage.get().is_err(), "a new variable has no value");
    storage.set(2);
    assert_eq!(storage.get(), Ok(2));
}

#[test]
fn get_or_else_calls_its_default_only_without_a_value() {
    static USER: ContextVar<String> = ContextVar::with_default("user", String::new());
    let calls = AtomicUsize::new(0);
    let fallback = || {
        calls.fetch_add(1, Ordering::SeqCst);
        "anonymous".to_string()
    };
    Context::new().run(|| {
        // The given default wins over the variable's own, as in `get_or`.
        assert_eq!(USER.get_or_else(fallback), "anonymous");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        USER.set("ada".to_string());
        assert_eq!(USER.get_or_else(fallback), "ada");
        USER.sync_scope("grace".to_string(), || {
            assert_eq!(USER.get_or_else(fallback), "grace")
        });
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "not called while there is a value"
        );
    });
}

#[test]
fn get_or_default_falls_back_to_the_variables_default_then_the_types() {
    static TAGS: ContextVar<Vec<u8>> = ContextVar::new("tags");
    static LEVEL: ContextVar<u32> = ContextVar::with_default("level", 42);
    Context::new().run(|| {
        assert_eq!(TAGS.get_or_default(), Vec::<u8>::new());
        assert_eq!(LEVEL.get_or_default(), 42);
        TAGS.set(vec![1]);
        LEVEL.set(7);
        assert_eq!(
            (TAGS.get_or_default(), LEVEL.get_or_default()),
            (vec![1], 7)
        );
    });
}

#[test]
fn replace_sets_and_returns_the_value_it_replaced_in_this_context() {
    static N: ContextVar<u32> = ContextVar::with_default("n", 5);
    Context::new().run(|| {
        assert_eq!(N.replace(1), None, "a default is not a value");
        assert_eq!(N.replace(2), Some(1));
        assert_eq!(N.get(), Ok(2));
        // A copy taken before keeps the value it had; a scope's value is
        // the one replaced inside the scope, and the scope's end undoes it.
        let before = copy_context();
        N.sync_scope(3, || {
            assert_eq!(N.replace(4), Some(3));
            assert_eq!(N.get(), Ok(4));
        });
        assert_eq!((N.get(), before.get(&N)), (Ok(2), Some(2)));
        assert_eq!(N.replace(6), Some(2));
        assert_eq!(before.get(&N), Some(2));
    });
}
