//! The misuse check (`contextvars::set_misuse_policy`): a `set` inside a
//! plain tokio task (no hooks, no helper) writes the worker's base context
//! and would leak into the next task; it is reported as the policy says, in
//! release builds too, and never for what cannot leak.
//!
//! The policy is process-wide, so these tests take turns (`POLICY_LOCK`).

use std::sync::Mutex;

use contextvars::{ContextVar, Misuse, set_misuse_policy};

static POLICY_LOCK: Mutex<()> = Mutex::new(());

fn with_policy(policy: Misuse, f: impl FnOnce()) {
    let _turn = POLICY_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    set_misuse_policy(policy);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    set_misuse_policy(if cfg!(debug_assertions) {
        Misuse::Panic
    } else {
        Misuse::Warn
    });
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

#[cfg(feature = "tokio")]
mod tokio_tasks {
    use super::*;

    fn plain_runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap()
    }

    fn panic_message(err: tokio::task::JoinError) -> String {
        let panic = err.into_panic();
        match panic.downcast::<String>() {
            Ok(s) => *s,
            Err(p) => p.downcast::<&str>().map(|s| s.to_string()).unwrap(),
        }
    }

    #[test]
    fn panic_policy_names_the_variable_and_the_fixes() {
        static LEAKY: ContextVar<u32> = ContextVar::new("leaky_in_panic_test");
        with_policy(Misuse::Panic, || {
            plain_runtime().block_on(async {
                let err = tokio::spawn(async { LEAKY.set(1) }).await.unwrap_err();
                let msg = panic_message(err);
                assert!(msg.contains("`leaky_in_panic_test`"), "{msg}");
                assert!(msg.contains("contextvars::tokio::spawn"), "{msg}");
                assert!(msg.contains("isolate_tasks"), "{msg}");
                assert!(msg.contains("set_misuse_policy"), "{msg}");
                // Nothing was written.
                let after = tokio::spawn(async { LEAKY.get() }).await.unwrap();
                assert!(after.is_err());
            });
        });
    }

    #[test]
    fn a_set_in_a_plain_spawn_blocking_job_is_flagged() {
        static LEAKY: ContextVar<u32> = ContextVar::new("leaky_in_blocking_job");
        with_policy(Misuse::Panic, || {
            plain_runtime().block_on(async {
                let err = tokio::task::spawn_blocking(|| LEAKY.set(1))
                    .await
                    .unwrap_err();
                assert!(panic_message(err).contains("`leaky_in_blocking_job`"));
                // The helper gives the job its own context: not flagged.
                contextvars::tokio::spawn_blocking(|| LEAKY.set(2))
                    .await
                    .unwrap();
            });
        });
    }

    #[test]
    fn scope_inside_a_plain_task_is_not_flagged_but_a_set_within_it_is() {
        static SCOPED: ContextVar<u32> = ContextVar::new("scoped");
        static INNER: ContextVar<u32> = ContextVar::new("set_inside_scope");
        with_policy(Misuse::Panic, || {
            plain_runtime().block_on(async {
                let seen = tokio::spawn(async { SCOPED.sync_scope(1, || SCOPED.get()) })
                    .await
                    .unwrap();
                assert_eq!(seen, Ok(1));
                // The scope is over: nothing left for the next task.
                assert!(tokio::spawn(async { SCOPED.get() }).await.unwrap().is_err());
                // A plain `set` inside a scope's closure is still a misuse.
                let err = tokio::spawn(async { SCOPED.sync_scope(2, || INNER.set(3)) })
                    .await
                    .unwrap_err();
                assert!(panic_message(err).contains("`set_inside_scope`"));
            });
        });
    }

    #[test]
    fn off_policy_lets_the_write_through_silently() {
        static LEAKY: ContextVar<u32> = ContextVar::new("leaky_in_off_test");
        with_policy(Misuse::Off, || {
            plain_runtime().block_on(async {
                tokio::spawn(async { LEAKY.set(5) }).await.unwrap();
                // The leak the check exists for: one worker, so the next
                // plain task reads the previous one's value.
                assert_eq!(tokio::spawn(async { LEAKY.get() }).await.unwrap(), Ok(5));
            });
        });
        #[cfg(feature = "tracing")]
        assert!(!reports().contains("leaky_in_off_test"));
    }

    /// Warn: the write happens, and each variable is reported once,
    /// through `tracing` with feature `tracing`.
    #[cfg(feature = "tracing")]
    #[test]
    fn warn_policy_reports_once_per_variable() {
        static FIRST: ContextVar<u32> = ContextVar::new("warned_first");
        static SECOND: ContextVar<u32> = ContextVar::new("warned_second");
        reports(); // installs the capturing subscriber before any report
        with_policy(Misuse::Warn, || {
            plain_runtime().block_on(async {
                for i in 0..3 {
                    tokio::spawn(async move { FIRST.set(i) }).await.unwrap();
                }
                tokio::spawn(async { SECOND.set(1) }).await.unwrap();
            });
        });
        let logged = reports();
        assert_eq!(logged.matches("`warned_first`").count(), 1, "{logged}");
        assert_eq!(logged.matches("`warned_second`").count(), 1, "{logged}");
        assert!(logged.contains("WARN"), "{logged}");
        assert!(logged.contains("contextvars::tokio::spawn"), "{logged}");
    }

    /// With `RUST_LIB_BACKTRACE=1` the warning shows where the `set` is: a
    /// backtrace, captured once per process, so a child process runs it.
    #[cfg(all(feature = "tracing", not(miri)))]
    #[test]
    fn warn_policy_adds_a_backtrace_when_backtraces_are_asked_for() {
        const NAME: &str =
            "tokio_tasks::warn_policy_adds_a_backtrace_when_backtraces_are_asked_for";
        static TRACED: ContextVar<u32> = ContextVar::new("warned_with_backtrace");
        if std::env::var_os("CONTEXTVARS_BACKTRACE_CHILD").is_none() {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", NAME, "--nocapture", "--test-threads=1"])
                .env("CONTEXTVARS_BACKTRACE_CHILD", "1")
                .env("RUST_LIB_BACKTRACE", "1")
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "the child failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            return;
        }
        reports();
        with_policy(Misuse::Warn, || {
            plain_runtime().block_on(async {
                tokio::spawn(async { TRACED.set(1) }).await.unwrap();
            });
        });
        let logged = reports();
        assert!(logged.contains("`warned_with_backtrace`"), "{logged}");
        assert!(logged.contains("misuse::misuse"), "no backtrace: {logged}");
    }

    /// Everything logged through `tracing` so far in this process.
    #[cfg(feature = "tracing")]
    fn reports() -> String {
        use std::io::Write;
        use std::sync::Once;

        static LOG: Mutex<Vec<u8>> = Mutex::new(Vec::new());
        struct Capture;
        impl Write for Capture {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                LOG.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        static INSTALL: Once = Once::new();
        INSTALL.call_once(|| {
            let subscriber = tracing_subscriber::fmt()
                .with_writer(|| Capture)
                .with_ansi(false)
                .finish();
            tracing::subscriber::set_global_default(subscriber).unwrap();
        });
        String::from_utf8(LOG.lock().unwrap().clone()).unwrap()
    }
}

/// Without feature `tokio`, a tokio thread is recognised by tokio's default
/// thread name; other threads' base contexts are theirs to write.
#[cfg(not(feature = "tokio"))]
#[test]
fn without_feature_tokio_a_thread_named_like_a_tokio_worker_is_checked() {
    static LEAKY: ContextVar<u32> = ContextVar::new("leaky_on_named_thread");
    with_policy(Misuse::Panic, || {
        let on_worker = std::thread::Builder::new()
            .name("tokio-runtime-worker".into())
            .spawn(|| LEAKY.set(1))
            .unwrap()
            .join();
        let panic = on_worker.unwrap_err();
        let msg = panic.downcast::<String>().unwrap();
        assert!(msg.contains("`leaky_on_named_thread`"), "{msg}");
        let on_plain = std::thread::Builder::new()
            .name("my-worker".into())
            .spawn(|| LEAKY.set(2))
            .unwrap()
            .join();
        assert!(on_plain.is_ok());
    });
}

/// Without the `tokio` feature a thread named as tokio names its workers
/// counts as one. There, a write into a context of the caller's own (which
/// cannot leak into the next task) is no misuse; a write into the thread's
/// base context is.
#[cfg(not(feature = "tokio"))]
#[test]
fn on_a_worker_thread_only_a_write_to_the_base_context_is_a_misuse() {
    static ON_WORKER: ContextVar<u32> = ContextVar::new("on_worker");
    with_policy(Misuse::Panic, || {
        std::thread::Builder::new()
            .name("tokio-runtime-worker".into())
            .spawn(|| {
                contextvars::Context::new().run(|| ON_WORKER.set(1));
                let base_write = std::panic::catch_unwind(|| ON_WORKER.set(2));
                assert!(base_write.is_err(), "a base-context write is refused");
            })
            .unwrap()
            .join()
            .unwrap();
    });
}
