//! A tour of `contextvars`: run with `cargo run --release --example showcase`.
//!
//! Every number printed is measured while the example runs.

use contextvars::{Context, ContextVar, ResetError, copy_context};

static REQUEST_ID: ContextVar<u64> = ContextVar::new("request_id");
static USER: ContextVar<String> = ContextVar::new("user");
static LEVEL: ContextVar<u32> = ContextVar::with_default("level", 42);

fn section(title: &str) {
    println!("\n== {title}");
}

fn walk_through() {
    section("1. define, set, get, reset (Python's PEP 567, in Rust)");
    match REQUEST_ID.get() {
        Ok(v) => println!("request_id = {v}"),
        Err(e) => println!("REQUEST_ID.get() before any set -> Err: {e}"),
    }
    println!("LEVEL.get() falls back to its default -> {:?}", LEVEL.get());
    println!("REQUEST_ID.get_or(7) -> {}", REQUEST_ID.get_or(7));

    let token = REQUEST_ID.set(1001);
    println!(
        "after REQUEST_ID.set(1001): get() -> {:?}, token.old_value() -> {:?}",
        REQUEST_ID.get(),
        token.old_value()
    );
    let inner = REQUEST_ID.set(1002);
    println!(
        "after a second set: get() -> {:?}, old_value -> {:?}",
        REQUEST_ID.get(),
        inner.old_value()
    );
    REQUEST_ID
        .reset(inner)
        .expect("same variable, same context");
    println!("reset(second token): get() -> {:?}", REQUEST_ID.get());
    REQUEST_ID
        .reset(token)
        .expect("same variable, same context");
    println!(
        "reset(first token): get() -> {:?} (removed again)",
        REQUEST_ID.get().map_err(|e| e.var())
    );

    let seen = REQUEST_ID.scope(7, || format!("inside scope: {:?}", REQUEST_ID.get()));
    println!("{seen}; after scope: {:?}", REQUEST_ID.get().ok());
}

fn contexts() {
    section("2. contexts: O(1) copies that never see each other's changes");
    USER.set("ada".to_string());
    let ctx = copy_context();
    USER.set("grace".to_string());
    println!(
        "copy taken while user=ada; caller now has user={:?}",
        USER.get()
    );
    ctx.run(|| {
        println!("  inside ctx.run: user={:?}", USER.get());
        USER.set("linus".to_string());
    });
    println!(
        "ctx after run keeps its own change: {:?}; caller still {:?}",
        ctx.get(&USER),
        USER.get()
    );
    println!("Debug of the context lists its variables: {ctx:?}");
    let refused = ctx.run(|| ctx.try_run(|| ()).unwrap_err());
    println!("entering it again while entered -> Err: {refused}");
}

fn reset_errors() {
    section("3. the three reset errors");
    static OTHER: ContextVar<u64> = ContextVar::new("other");
    let token = REQUEST_ID.set(5);
    let wrong_var = OTHER.set(1);
    match REQUEST_ID.reset(wrong_var) {
        Err(e @ ResetError::DifferentVar { .. }) => println!("token of another variable -> {e}"),
        other => println!("UNEXPECTED: {other:?}"),
    }
    match Context::new().run(|| REQUEST_ID.reset(token)) {
        Err(e @ ResetError::DifferentContext { .. }) => println!("token of another context -> {e}"),
        other => println!("UNEXPECTED: {other:?}"),
    }
    // Python's third error, "Token has already been used once", cannot
    // happen: `reset` takes the token by value, so reuse is a compile error
    // (a `compile_fail` doctest on `Token` keeps that true).
    println!("a token used twice -> compile error: `reset` takes the token by value");
}

fn threads() {
    section("4. threads each see their own value");
    let handles: Vec<_> = (0..8u64)
        .map(|i| {
            std::thread::spawn(move || {
                // A new thread starts with an empty context of its own.
                let started_empty = REQUEST_ID.get().is_err();
                REQUEST_ID.set(i);
                let mut wrong = 0;
                for _ in 0..10_000 {
                    if REQUEST_ID.get() != Ok(i) {
                        wrong += 1;
                    }
                    std::thread::yield_now();
                }
                (started_empty, wrong)
            })
        })
        .collect();
    let results: Vec<(bool, u32)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let empty = results.iter().filter(|(e, _)| *e).count();
    let wrong: u32 = results.iter().map(|(_, w)| w).sum();
    println!("8 threads x 10,000 reads: {empty}/8 started empty, {wrong} wrong reads");
}

fn main() {
    walk_through();
    contexts();
    reset_errors();
    threads();
}
