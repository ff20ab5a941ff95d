//! The crate's one diagnostics sink, and the containment of user code that
//! runs where nothing may unwind.
//!
//! Every warning the crate gives (the misuse check, a snapshot restored in
//! part, an observer switched off, a guard dropped in another context,
//! values that keep refilling a context being dropped, what a header lost
//! on the way in or out) goes through [`warn`]: to `tracing` (target
//! `contextvars`, level `WARN`) when the crate has it (features `tracing`
//! and `http`), else to stderr.
//!
//! **Invariant:** nothing here unwinds. A closed or broken stderr is
//! ignored (`eprintln!` would panic on it), a `tracing` subscriber that
//! panics (user code) is caught, and so is the drop of a caught panic's
//! payload, which is user code too: [`contain`] is the one way the crate
//! runs user code at a point where an unwind would leave its own state
//! half-changed or abort the process (a context switch, a thread-local's
//! destructor, a tokio hook).

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// Reports `msg` once, through `tracing` with the feature on, else on
/// stderr; never unwinds.
pub(crate) fn warn(msg: &str) {
    let _ = contain(|| emit(msg, None));
}

/// [`warn`], with the variable it is about as a structured field where the
/// sink has fields (`tracing`'s `variable`).
pub(crate) fn warn_var(var: &'static str, msg: &str) {
    let _ = contain(|| emit(msg, Some(var)));
}

// `tracing` is a dependency of both features (`http` reports what a header
// lost through it).
#[cfg(any(feature = "tracing", feature = "http"))]
fn emit(msg: &str, var: Option<&'static str>) {
    match var {
        Some(var) => ::tracing::warn!(target: "contextvars", variable = var, "{msg}"),
        None => ::tracing::warn!(target: "contextvars", "{msg}"),
    }
}

#[cfg(not(any(feature = "tracing", feature = "http")))]
fn emit(msg: &str, _var: Option<&'static str>) {
    use std::io::Write;
    // Not `eprintln!`: it panics when stderr is closed (a daemon, a pipe
    // whose reader went away), and a warning is not worth a panic.
    let _ = writeln!(std::io::stderr().lock(), "{msg}");
}

/// Runs `f`, catching a panic: its result, or the panic's message. The
/// payload is dropped inside a catch of its own (its `Drop` is user code
/// and may panic too; a payload that does is leaked).
pub(crate) fn contain<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
        let message = message_of(&*payload);
        drop_payload(payload);
        message
    })
}

/// The text of a panic payload (`&str` or `String`), or a placeholder.
pub(crate) fn message_of(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string payload".to_string())
}

/// Drops a caught panic's payload where its own panic cannot escape. A
/// payload whose drop panics is followed by that panic's payload, which is
/// dropped in turn; only a chain longer than a few (each drop panicking
/// again) is leaked rather than dropped without end.
pub(crate) fn drop_payload(payload: Box<dyn Any + Send>) {
    let mut payload = payload;
    for _ in 0..4 {
        match catch_unwind(AssertUnwindSafe(move || drop(payload))) {
            Ok(()) => return,
            Err(again) => payload = again,
        }
    }
    std::mem::forget(payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A payload whose drop panics.
    struct Bomb;

    impl Drop for Bomb {
        fn drop(&mut self) {
            panic!("the payload's drop");
        }
    }

    #[test]
    fn contain_returns_the_message_of_a_panic_and_none_otherwise() {
        assert_eq!(
            contain(|| -> () { panic!("boom {}", 1) }),
            Err("boom 1".into())
        );
        assert_eq!(contain(|| -> () { panic!("static") }), Err("static".into()));
        assert_eq!(contain(|| 7), Ok(7));
    }

    #[test]
    fn a_payload_whose_drop_panics_does_not_escape() {
        let caught = contain(|| -> () { std::panic::panic_any(Bomb) });
        assert_eq!(caught, Err("a non-string payload".into()));
    }
}
