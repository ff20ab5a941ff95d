//! `SetGuard`: what a guard shows of the value its `set` replaced, through
//! `old_value` and `Debug`, before it is dropped or defused.

use contextvars::{Context, ContextVar};

#[test]
fn a_guard_shows_the_value_its_set_replaced() {
    static LEVEL: ContextVar<u32> = ContextVar::new("level");
    Context::new().run(|| {
        let first = LEVEL.set_scoped(1);
        assert_eq!(first.old_value(), None, "nothing was set before");
        assert_eq!(
            format!("{first:?}"),
            r#"SetGuard { var: "level", old_value: None }"#
        );
        let second = LEVEL.set_scoped(2);
        assert_eq!(second.old_value(), Some(&1));
        assert_eq!(
            format!("{second:?}"),
            r#"SetGuard { var: "level", old_value: Some(1) }"#
        );
        drop(second);
        assert_eq!(LEVEL.get(), Ok(1));
        // Defused, the token keeps what the guard showed.
        let token = first.into_token();
        assert_eq!(token.old_value(), None);
        LEVEL.reset(token).unwrap();
        assert!(LEVEL.get().is_err());
    });
}

/// Without `tracing`, the warning of a guard dropped in another context
/// goes to stderr, written directly (the test harness does not capture it),
/// so a child process runs the drop and the parent reads its stderr.
#[cfg(all(not(feature = "tracing"), not(miri)))]
#[test]
fn without_tracing_a_guard_dropped_elsewhere_warns_on_stderr_naming_the_variable() {
    const NAME: &str =
        "without_tracing_a_guard_dropped_elsewhere_warns_on_stderr_naming_the_variable";
    static V: ContextVar<u32> = ContextVar::new("guarded_on_stderr");
    if std::env::var_os("CONTEXTVARS_GUARD_STDERR_CHILD").is_some() {
        let guard = V.set_scoped(1);
        Context::new().run(move || drop(guard));
        assert_eq!(V.get(), Ok(1), "its own context keeps the value");
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", NAME, "--nocapture", "--test-threads=1"])
        .env("CONTEXTVARS_GUARD_STDERR_CHILD", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the child failed: {stderr}");
    assert_eq!(
        stderr.matches("the guard of `guarded_on_stderr`").count(),
        1,
        "{stderr}"
    );
    assert!(stderr.contains("another context"), "{stderr}");
}
