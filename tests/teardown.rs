//! Thread teardown never aborts the process: a `SetGuard` kept in a
//! `thread_local!` is dropped by that thread-local's destructor, which may
//! run after the thread's base context is gone. A panic there would abort
//! the process, so the guard's drop reports instead. Each check runs in a
//! child process (an abort would take the test binary down with it).

use std::cell::RefCell;
use std::process::Command;

use contextvars::{ContextVar, SetGuard};

static V: ContextVar<u32> = ContextVar::new("teardown_v");

thread_local! {
    static KEPT: RefCell<Option<SetGuard<'static, u32>>> = const { RefCell::new(None) };
}

/// Runs the test named `name` of this binary in a child process with
/// `CONTEXTVARS_TEARDOWN_CHILD` set, and checks that it ends well.
fn in_child(name: &str) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env("CONTEXTVARS_TEARDOWN_CHILD", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the child ended with {}:\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("child done"), "{stdout}\n{stderr}");
}

fn is_child() -> bool {
    std::env::var_os("CONTEXTVARS_TEARDOWN_CHILD").is_some()
}

#[cfg_attr(miri, ignore = "Miri cannot start a child process")]
#[test]
fn a_guard_kept_in_a_thread_local_dropped_after_the_base_context_does_not_abort() {
    if !is_child() {
        return in_child(
            "a_guard_kept_in_a_thread_local_dropped_after_the_base_context_does_not_abort",
        );
    }
    std::thread::spawn(|| {
        // The thread-local first, so that its destructor runs after the base
        // context's (destructors run in reverse order of registration).
        KEPT.with(|_| ());
        let guard = V.set_scoped(1);
        assert_eq!(V.get(), Ok(1));
        KEPT.with(|kept| *kept.borrow_mut() = Some(guard));
    })
    .join()
    .unwrap();
    println!("child done");
}
