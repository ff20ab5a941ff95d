//! Crossings into Python from Rust threads, and interpreter shutdown.
//!
//! A thread that takes the GIL while the interpreter finalizes is ended by
//! CPython from inside the C call (`pthread_exit`), which unwinds through
//! Rust frames and may abort the process. So [`attach`] counts the
//! crossings under way, and an `atexit` hook (registered at the first
//! [`capture`](super::capture)) closes the door before finalization: from
//! then on `attach` returns an error instead of attaching, and the hook
//! waits, with the GIL released, for the crossings under way to finish.
//!
//! **Invariant:** once the hook has returned, no thread enters Python
//! through [`attach`].

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyCFunction;

/// Crossings under way, on every thread.
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
/// Set by the `atexit` hook: no new crossing.
static CLOSED: AtomicBool = AtomicBool::new(false);
/// Whether the hook is registered.
static WATCHING: AtomicBool = AtomicBool::new(false);

/// How long shutdown waits for the crossings under way.
const DRAIN: Duration = Duration::from_secs(10);

thread_local! {
    /// Crossings under way on this thread (the hook does not wait for its
    /// own thread's).
    static DEPTH: Cell<usize> = const { Cell::new(0) };
}

/// Counts one crossing for as long as it lives.
struct Crossing;

impl Crossing {
    fn open() -> Option<Crossing> {
        IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
        DEPTH.with(|d| d.set(d.get() + 1));
        let crossing = Crossing;
        // SeqCst on both sides: either the hook sees this crossing, or this
        // crossing sees the door closed.
        (!CLOSED.load(Ordering::SeqCst)).then_some(crossing)
    }
}

impl Drop for Crossing {
    fn drop(&mut self) {
        DEPTH.with(|d| d.set(d.get() - 1));
        IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Attaches the current thread to the Python interpreter for `f` (taking the
/// GIL), as `Python::attach` does, but returns an error rather than attach
/// when the interpreter is shutting down, finalized, or not initialized:
/// the way to call back into Python from a Rust thread or task that may
/// outlive the interpreter.
///
/// The GIL is held for `f` only. The current Rust context stays current, so
/// [`call`](super::call) inside `f` runs in its Python half.
///
/// # Errors
///
/// `RuntimeError` if the interpreter cannot be entered; otherwise what `f`
/// returns.
///
/// ```no_run
/// use pyo3::prelude::*;
///
/// fn notify(callback: Py<PyAny>) -> PyResult<()> {
///     std::thread::spawn(contextvars::wrap(move || {
///         contextvars::python::attach(|py| {
///             contextvars::python::call(callback.bind(py), ()).map(drop)
///         })
///     }))
///     .join()
///     .unwrap()
/// }
/// ```
pub fn attach<R>(f: impl for<'py> FnOnce(Python<'py>) -> PyResult<R>) -> PyResult<R> {
    let closed = || {
        PyRuntimeError::new_err(
            "contextvars: the Python interpreter is shutting down or not running; \
             the call into Python was not made",
        )
    };
    let Some(crossing) = Crossing::open() else {
        return Err(closed());
    };
    let result = Python::try_attach(f).unwrap_or_else(|| Err(closed()));
    drop(crossing);
    result
}

/// Registers the `atexit` hook, once.
pub(super) fn watch(py: Python<'_>) -> PyResult<()> {
    if WATCHING.load(Ordering::Acquire) {
        return Ok(());
    }
    let hook = PyCFunction::new_closure(
        py,
        Some(c"contextvars_close"),
        Some(c"Refuses new crossings from Rust and waits for those under way."),
        |args, _kwargs| -> PyResult<()> {
            close(args.py());
            Ok(())
        },
    )?;
    py.import("atexit")?.call_method1("register", (hook,))?;
    WATCHING.store(true, Ordering::Release);
    Ok(())
}

/// Closes the door and waits (GIL released) for the other threads'
/// crossings, at most [`DRAIN`].
fn close(py: Python<'_>) {
    CLOSED.store(true, Ordering::SeqCst);
    let own = DEPTH.with(Cell::get);
    py.detach(|| {
        let start = Instant::now();
        while IN_FLIGHT.load(Ordering::SeqCst) > own && start.elapsed() < DRAIN {
            std::thread::sleep(Duration::from_millis(1));
        }
    });
}
