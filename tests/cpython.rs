//! CPython's `Lib/test/test_context.py` (`ContextTest`), restated in Rust.
//! Each test is named after the case it restates; where Python checks a
//! dynamic-typing error (wrong argument types, subclassing, `repr`, pickling)
//! there is no Rust counterpart and the case is left out. Python's
//! "Token has already been used once" is a compile error here (`reset` takes
//! the token by value; see the `compile_fail` doctest on `Token`).
//!
//! Python's `var.get(None)` is `var.get().ok()`, `ctx[var]` raising `KeyError`
//! is `ctx.get(&var) == None`, and `ctx.get(var, d)` is
//! `ctx.get(&var).unwrap_or(d)`.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use contextvars::{Context, ContextVar, ResetError, copy_context};

#[test]
fn test_context_var_new_1() {
    static C: ContextVar<i32> = ContextVar::new("aaa");
    assert_eq!(C.name(), "aaa");
    // Two variables with one name are two variables.
    static D: ContextVar<i32> = ContextVar::new("aaa");
    C.set(1);
    assert!(D.get().is_err());
}

#[test]
fn test_context_var_new_2_default() {
    static C: ContextVar<i32> = ContextVar::with_default("a", 42);
    assert_eq!(C.get(), Ok(42));
    assert_eq!(C.get_or(1), 1, "the given default wins over the variable's");
    C.set(2);
    assert_eq!(C.get(), Ok(2));
}

#[test]
fn test_context_new_1() {
    let ctx = Context::new();
    assert_eq!(ctx.len(), 0);
    assert!(ctx.is_empty());
    assert!(ctx.names().is_empty());
    let ctx = Context::default();
    assert!(ctx.is_empty());
}

#[test]
fn test_context_get_context_1() {
    let ctx: Context = copy_context();
    assert!(ctx.try_run(|| ()).is_ok());
}

#[test]
fn test_context_run_2_returns_the_result() {
    let ctx = Context::new();
    let args = ("bar",);
    let (args, kwargs) = ctx.run(|| {
        let mut kwargs = std::collections::HashMap::new();
        kwargs.insert("spam", "foo");
        ((args.0, "bar"), kwargs)
    });
    assert_eq!(args, ("bar", "bar"));
    assert_eq!(kwargs["spam"], "foo");
}

#[test]
fn test_context_run_3_propagates_panics() {
    let ctx = Context::new();
    let caught = catch_unwind(AssertUnwindSafe(|| ctx.run(|| panic!("division by zero"))));
    let payload = caught.unwrap_err();
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"division by zero"));
}

#[test]
fn test_context_run_4() {
    static VAR: ContextVar<&str> = ContextVar::new("var");
    let ctx1 = Context::new();
    let ctx2 = Context::new();
    let returned = ctx1.run(|| {
        assert_eq!(VAR.get().ok(), None);
        VAR.set("spam");
        ctx2.run(|| assert_eq!(VAR.get().ok(), None));
        assert_eq!(VAR.get().ok(), Some("spam"));
        let cur = copy_context();
        assert_eq!(cur.len(), 1);
        assert_eq!(cur.get(&VAR), Some("spam"));
        cur
    });
    // Python compares ctx1 == returned_ctx as mappings.
    assert_eq!(ctx1.len(), returned.len());
    assert_eq!(ctx1.get(&VAR), returned.get(&VAR));
    assert_eq!(returned.get(&VAR), Some("spam"));
    assert!(returned.contains(&VAR));
}

#[test]
fn test_context_run_5() {
    static VAR: ContextVar<&str> = ContextVar::new("var");
    let ctx = Context::new();
    let caught = catch_unwind(AssertUnwindSafe(|| {
        ctx.run(|| {
            assert_eq!(VAR.get().ok(), None);
            VAR.set("spam");
            panic!("1 / 0");
        })
    }));
    assert!(caught.is_err());
    assert_eq!(VAR.get().ok(), None);
}

#[test]
fn test_context_run_6() {
    static C: ContextVar<i32> = ContextVar::with_default("a", 0);
    let ctx = Context::new();
    ctx.run(|| {
        assert_eq!(C.get(), Ok(0));
        assert_eq!(ctx.get(&C), None);
        C.set(42);
        assert_eq!(C.get(), Ok(42));
        assert_eq!(
            ctx.get(&C),
            Some(42),
            "a context read while entered shows its live state"
        );
    });
}

#[test]
fn test_context_run_7() {
    let ctx = Context::new();
    ctx.run(|| {
        let err = ctx.try_run(|| ()).unwrap_err();
        assert!(err.to_string().contains("already entered"));
        let panic = catch_unwind(AssertUnwindSafe(|| ctx.run(|| ()))).unwrap_err();
        let msg = panic.downcast_ref::<String>().unwrap();
        assert!(msg.contains("already entered"), "{msg}");
    });
}

#[test]
fn test_context_getset_1() {
    static C: ContextVar<&str> = ContextVar::new("c");
    // Run on a fresh thread so the base context starts empty, as in Python.
    std::thread::spawn(|| {
        assert_eq!(C.get().unwrap_err().var_name(), "c");
        assert_eq!(C.get().ok(), None);

        let t0 = C.set("42");
        assert_eq!(C.get(), Ok("42"));
        assert_eq!(t0.old_value(), None, "Token.MISSING");
        assert_eq!(t0.var_name(), "c");

        let t = C.set("spam");
        assert_eq!(C.get(), Ok("spam"));
        assert_eq!(t.old_value(), Some(&"42"));
        C.reset(t).unwrap();
        assert_eq!(C.get(), Ok("42"));

        C.set("spam2");
        // (Reusing `t` here is a compile error.)
        assert_eq!(C.get(), Ok("spam2"));
        let ctx1 = copy_context();
        assert!(ctx1.contains(&C));

        C.reset(t0).unwrap();
        assert_eq!(C.get().ok(), None);
        assert!(ctx1.contains(&C));
        assert_eq!(ctx1.get(&C), Some("spam2"));
        assert_eq!(ctx1.get(&C).unwrap_or("aa"), "spam2");
        assert_eq!(ctx1.len(), 1);
        assert_eq!(ctx1.names(), ["c"]);

        let ctx2 = copy_context();
        assert!(!ctx2.contains(&C));
        assert_eq!(ctx2.get(&C), None);
        assert_eq!(ctx2.get(&C).unwrap_or("aa"), "aa");
        assert_eq!(ctx2.len(), 0);
        assert!(ctx2.names().is_empty());
    })
    .join()
    .unwrap();
}

#[test]
fn test_context_getset_2() {
    static V1: ContextVar<i32> = ContextVar::new("v1");
    static V2: ContextVar<i32> = ContextVar::new("v2");
    let t1 = V1.set(42);
    let err = V2.reset(t1).unwrap_err();
    assert!(matches!(
        err,
        ResetError::DifferentVar {
            var: "v2",
            token_var: "v1"
        }
    ));
    assert!(
        err.to_string().contains("created by variable `v1`"),
        "{err}"
    );
}

#[test]
fn test_context_getset_3() {
    static C: ContextVar<i32> = ContextVar::with_default("c", 42);
    let ctx = Context::new();
    ctx.run(|| {
        assert_eq!(C.get(), Ok(42));
        assert_eq!(ctx.get(&C), None);
        assert_eq!(ctx.get(&C).unwrap_or(-1), -1);
        assert!(!ctx.contains(&C));
        assert!(ctx.names().is_empty());
        let t = C.set(1);
        assert_eq!(ctx.names(), ["c"]);
        assert_eq!(ctx.get(&C), Some(1));
        C.reset(t).unwrap();
        assert!(ctx.names().is_empty());
        assert_eq!(ctx.get(&C), None);
    });
}

#[test]
fn test_context_getset_4() {
    static C: ContextVar<i32> = ContextVar::with_default("c", 42);
    let ctx = Context::new();
    let tok = ctx.run(|| C.set(1));
    let err = C.reset(tok).unwrap_err();
    assert_eq!(err, ResetError::DifferentContext { var: "c" });
    assert!(err.to_string().contains("different context"));
}

#[test]
fn test_context_getset_5() {
    use std::sync::Mutex;
    static C: ContextVar<std::sync::Arc<Mutex<Vec<i32>>>> = ContextVar::new("c");
    C.set(Default::default());
    copy_context().run(|| {
        C.set(Default::default());
        C.get().unwrap().lock().unwrap().push(42);
        assert_eq!(*C.get().unwrap().lock().unwrap(), [42]);
    });
    assert!(C.get().unwrap().lock().unwrap().is_empty());
}

#[test]
fn test_context_copy_1() {
    static C: ContextVar<i32> = ContextVar::with_default("c", 42);
    let ctx1 = Context::new();
    ctx1.run(|| {
        C.set(10);
        let ctx2 = ctx1.copy();
        assert_eq!(ctx2.get(&C), Some(10));
        C.set(20);
        assert_eq!(ctx1.get(&C), Some(20));
        assert_eq!(ctx2.get(&C), Some(10));
        ctx2.run(|| {
            assert_eq!(C.get(), Ok(10));
            C.set(30);
            assert_eq!(C.get(), Ok(30));
        });
        assert_eq!(ctx1.get(&C), Some(20));
        assert_eq!(ctx2.get(&C), Some(30));
    });
}

#[test]
fn test_context_threads_1() {
    static CVAR: ContextVar<u64> = ContextVar::new("cvar");
    let handles: Vec<_> = (0..10u64)
        .map(|num| {
            std::thread::spawn(move || {
                for i in 0..10 {
                    CVAR.set(num + i);
                    std::thread::sleep(Duration::from_micros(500 + (num * 7 + i * 13) % 20 * 100));
                    assert_eq!(CVAR.get(), Ok(num + i));
                }
                num
            })
        })
        .collect();
    let results: Vec<u64> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(results, (0..10).collect::<Vec<_>>());
}

#[test]
fn test_token_contextmanager_is_scope() {
    // Python 3.14: `with var.set(v):` resets on exit; Rust's form is `scope`.
    static C: ContextVar<i32> = ContextVar::with_default("c", 42);
    let ctx = Context::new();
    ctx.run(|| {
        C.sync_scope(1, || assert_eq!(C.get(), Ok(1)));
        assert_eq!(C.get(), Ok(42));
        assert!(!ctx.contains(&C), "the scope removed what it added");
    });
}

#[test]
fn test_token_contextmanager_multiple_c_set() {
    static C: ContextVar<i32> = ContextVar::with_default("c", 42);
    let ctx = Context::new();
    ctx.run(|| {
        C.sync_scope(1, || {
            C.set(2);
            C.set(3);
            assert_eq!(C.get(), Ok(3));
        });
        // Resetting the scope's token restores what was there before it.
        assert_eq!(C.get(), Ok(42));
    });
}

#[test]
fn test_token_contextmanager_with_exception() {
    static C: ContextVar<i32> = ContextVar::with_default("c", 42);
    let ctx = Context::new();
    ctx.run(|| {
        let caught = catch_unwind(AssertUnwindSafe(|| {
            C.sync_scope(1, || panic!("Some exception"))
        }));
        assert!(caught.is_err());
        assert_eq!(C.get(), Ok(42));
    });
}
