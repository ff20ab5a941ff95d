//! One context across Python and Rust (feature `python`, PyO3): a Rust
//! [`Context`] that carries the Python caller's `contextvars.Context`, Rust
//! variables that mirror Python ones, and Python callbacks run in the carried
//! context from any Rust thread or task.
//!
//! - [`capture`], at a `#[pyfunction]` boundary: a copy of the current Rust
//!   context that also holds the caller's Python context (one
//!   `contextvars.copy_context()`) and the values of the [mirrored](mirror)
//!   variables, converted. Everything this crate spawns from it (tokio,
//!   threads, rayon, [`wrap`](crate::wrap), channels) inherits both.
//! - [`call`]: runs a Python callable in the Python context carried by the
//!   current Rust context, with the Rust values of the mirrored variables set
//!   in it, as `ctx.run(callback)` does. The call behaves as an inline Python
//!   call: what the callback sets stays for the next call made from the same
//!   Rust context, and its changes to mirrored variables are seen by Rust
//!   afterwards. A copy of a Rust context (a spawned task) copies the Python
//!   context on its first call, so siblings never see each other's changes.
//! - [`attach`]: attaches a Rust thread to the interpreter for one crossing,
//!   and refuses (an error, not a panic or an abort) once the interpreter is
//!   shutting down; shutdown waits for the crossings under way.
//! - [`asyncio`] (feature `pyo3-async-runtimes`): Rust futures awaited from
//!   asyncio and Python coroutines awaited from tokio.
//!
//! **Invariant:** a Python context object is entered by at most one thread
//! at a time: it is run in place only by the Rust context that owns it (on
//! the one thread that has that Rust context entered), and copied by every
//! other.
//!
//! What each crossing costs: a capture is one `contextvars.copy_context()`
//! and one copy of the Rust map with the carried entry, plus, per mirrored
//! variable, one `Context.get` and one conversion (about 1,700 instructions
//! in all without a mirrored variable, ten times a plain `#[pyfunction]`
//! call); a call is one `Context.run` (plus one `Context.copy` on a Rust
//! context's first call) and, per mirrored variable with a Rust value, one
//! conversion and one `Context.run(ContextVar.set)` before, one
//! `Context.get` after (about 1,400 instructions over a plain call without
//! a mirrored variable). The GIL is held only for those steps: a
//! `#[pyfunction]` that works long in Rust releases it with `py.detach`
//! around `ctx.run`.
//!
//! The carried Python context lives in an internal context variable
//! (`contextvars.python.context`), which shows in [`Context::names`] and
//! [`Context::len`].
//!
//! ```no_run
//! use contextvars::{ContextVar, python};
//! use pyo3::prelude::*;
//!
//! static REQUEST_ID: ContextVar<u64> = ContextVar::new("request_id");
//!
//! /// Called from Python: `ext.handle(callback)`.
//! fn handle(py: Python<'_>, callback: Py<PyAny>) -> PyResult<u64> {
//!     let ctx = python::capture(py)?; // the caller's context, Python and Rust
//!     py.detach(|| {
//!         ctx.run(|| {
//!             // On another thread, in a copy of `ctx`.
//!             let worker = contextvars::thread::spawn(move || {
//!                 python::attach(|py| python::call(callback.bind(py), ()).map(drop))
//!             });
//!             worker.join().unwrap()?;
//!             Ok(REQUEST_ID.get_or(0))
//!         })
//!     })
//! }
//! ```

mod mirror;
mod shutdown;

#[cfg(feature = "pyo3-async-runtimes")]
#[cfg_attr(docsrs, doc(cfg(feature = "pyo3-async-runtimes")))]
pub mod asyncio;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyTuple, PyType};
use pyo3::{BoundObject, IntoPyObject, PyTypeInfo, intern};

use crate::map::{Garbage, VarId};
use crate::value::Value;
use crate::{Context, ContextVar};

pub use mirror::{declare, mirror};
pub use shutdown::attach;

/// The Python half of a Rust context.
pub(crate) struct Carried {
    /// The `contextvars.Context`.
    context: Py<PyAny>,
    /// The id of the Rust context that may run `context` in place; any
    /// other copies it first.
    owner: u64,
    /// Whether `context` is entered now (by `owner`, on its thread): a call
    /// made inside a callback runs in it as it is.
    entered: AtomicBool,
    /// The asyncio event loop of the task that captured, if any.
    #[cfg_attr(not(feature = "pyo3-async-runtimes"), allow(dead_code))]
    event_loop: Option<Py<PyAny>>,
}

/// The carried Python context (see [`Carried`]).
static CARRIED: ContextVar<Arc<Carried>> = ContextVar::new("contextvars.python.context");

fn copy_context_fn(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    static F: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    F.import(py, "contextvars", "copy_context")
}

fn context_type(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    static T: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    T.import(py, "contextvars", "Context")
}

/// `contextvars.ContextVar.set`, unbound: `ctx.run(SET, var, value)` sets a
/// variable in a context that is not the current one.
fn var_set_fn(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    static F: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    F.get_or_try_init(py, || {
        mirror::context_var_type(py)?
            .getattr("set")
            .map(Bound::unbind)
    })
    .map(|f| f.bind(py))
}

/// A private object, the "no value" answer of `Context.get`.
fn missing(py: Python<'_>) -> &Bound<'_, PyAny> {
    static M: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    M.get_or_init(py, || {
        pyo3::types::PyAny::type_object(py)
            .call0()
            .map(Bound::unbind)
            .expect("object()")
    })
    .bind(py)
}

/// The value `ctx` holds for `py_var` (not its default), if any.
fn value_in<'py>(
    ctx: &Bound<'py, PyAny>,
    py_var: &Bound<'py, PyAny>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let py = ctx.py();
    let missing = missing(py);
    let v = ctx.call_method1(intern!(py, "get"), (py_var, missing))?;
    Ok((!v.is(missing)).then_some(v))
}

/// Captures the caller's context: a copy of the current Rust context that
/// carries a copy of the current Python context (`contextvars.copy_context()`)
/// and holds, for every [mirrored](mirror) variable, the Python value
/// converted (a variable without a Python value has none here either).
///
/// Call it at a `#[pyfunction]` boundary and run the Rust work in the
/// result; everything spawned from there with this crate's helpers inherits
/// both halves, and [`call`] runs Python callbacks in the Python half.
///
/// # Errors
///
/// A `TypeError` naming the variable when a mirrored variable's Python value
/// does not convert.
///
/// ```no_run
/// use contextvars::{ContextVar, python};
/// use pyo3::prelude::*;
///
/// static TENANT: ContextVar<String> = ContextVar::new("tenant");
///
/// fn tenant_of_caller(py: Python<'_>) -> PyResult<String> {
///     let ctx = python::capture(py)?;
///     Ok(ctx.run(|| TENANT.get().unwrap_or_default()))
/// }
/// ```
pub fn capture(py: Python<'_>) -> PyResult<Context> {
    capture_with(py, None)
}

pub(crate) fn capture_with(py: Python<'_>, event_loop: Option<Py<PyAny>>) -> PyResult<Context> {
    shutdown::watch(py)?;
    let py_ctx = copy_context_fn(py)?.call0()?;
    // The copy's map is built before it is a context: no entry, no write.
    let mut map = crate::context::current_map();
    let mut garbage = Garbage::new();
    // (No lock is held: the values replaced are dropped as they go.)
    for m in mirror::mirrors() {
        drop(match value_in(&py_ctx, m.py_var().bind(py))? {
            Some(value) => map.insert(m.id(), m.convert(&value)?, &mut garbage),
            None => map.remove(m.id(), &mut garbage),
        });
    }
    let owner = crate::ids::next_id();
    let carried = Arc::new(Carried {
        context: py_ctx.unbind(),
        owner,
        entered: AtomicBool::new(false),
        event_loop,
    });
    drop(map.insert(CARRIED.id(), Value::new(carried), &mut garbage));
    Ok(Context::with_id(owner, map))
}

/// Sets (or, with `None`, removes) a value in the current Rust context.
fn set_current(id: VarId, value: Option<Value>) {
    // The value replaced is dropped after the write is closed; observers
    // see it as the write it is.
    let cause = match value {
        Some(_) => crate::observe::Cause::Set,
        None => crate::observe::Cause::Reset,
    };
    drop(crate::context::write_current(
        None,
        Some((id, cause)),
        |mut w| w.restore(id, value),
    ));
}

/// Clears `entered` when the call is over, also on unwinding.
struct Leave<'a>(&'a AtomicBool);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Calls `callable(*args)` in the Python context carried by the current Rust
/// context, with the Rust values of the [mirrored](mirror) variables set in
/// it: Python's `ctx.run(callable, *args)`, done for the caller.
///
/// As an inline Python call: what the callback sets stays in the carried
/// context for the next call from the same Rust context, and its changes to
/// mirrored variables are set in the current Rust context when it returns. A
/// Rust context that carries no Python context (one not made by
/// [`capture`], nor copied from one) runs each call in a new, empty Python
/// context holding the mirrored values, as a new Python thread starts empty.
///
/// A mirrored variable that has no value in the current Rust context (a
/// variable declared [`not_inherited`](ContextVar::not_inherited), in a
/// spawned task) keeps in the Python context the value it had there: Python
/// removes a value only with the token of the `set` that made it.
///
/// # Errors
///
/// What the callable raised; a `TypeError` naming the variable when a
/// mirrored value does not convert.
///
/// ```no_run
/// use pyo3::prelude::*;
///
/// fn log_line(py: Python<'_>, logger: &Bound<'_, PyAny>) -> PyResult<()> {
///     contextvars::python::call(logger, ("work done",))?;
///     Ok(())
/// }
/// ```
pub fn call<'py, A>(callable: &Bound<'py, PyAny>, args: A) -> PyResult<Bound<'py, PyAny>>
where
    A: IntoPyObject<'py, Target = PyTuple>,
{
    let py = callable.py();
    let args = args.into_pyobject(py).map_err(Into::into)?.into_bound();
    let carried = CARRIED.with(|c| c.cloned());
    let id = crate::context::current_id();
    let (py_ctx, _leave, in_place) = match &carried {
        Some(c) if Some(c.owner) == id => {
            if c.entered.swap(true, Ordering::Acquire) {
                // A call from inside a callback of this same context: the
                // carried context is the current Python one.
                return call_entered(callable, &args, c.context.bind(py));
            }
            (c.context.bind(py).clone(), Some(Leave(&c.entered)), true)
        }
        Some(c) => (
            c.context.bind(py).call_method0(intern!(py, "copy"))?,
            None,
            false,
        ),
        None => (context_type(py)?.call0()?, None, false),
    };
    let pushed = push(py, &py_ctx)?;
    let mut run_args = Vec::with_capacity(args.len() + 1);
    run_args.push(callable.clone());
    run_args.extend(args.iter());
    // As after an inline call, what the callback set before it raised
    // stays set.
    let result = py_ctx.call_method1(intern!(py, "run"), PyTuple::new(py, run_args)?);
    pull_back(&py_ctx, &pushed)?;
    if !in_place {
        if let (Some(c), Some(owner)) = (&carried, id) {
            CARRIED.set(Arc::new(Carried {
                context: py_ctx.unbind(),
                owner,
                entered: AtomicBool::new(false),
                event_loop: c.event_loop.as_ref().map(|l| l.clone_ref(py)),
            }));
        }
    }
    result
}

/// [`call`] where the carried context is already the current Python context.
fn call_entered<'py>(
    callable: &Bound<'py, PyAny>,
    args: &Bound<'py, PyTuple>,
    py_ctx: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = callable.py();
    let mut pushed = Vec::new();
    for m in mirror::mirrors() {
        if let Some(value) = m.push(py)? {
            m.py_var()
                .bind(py)
                .call_method1(intern!(py, "set"), (&value,))?;
            pushed.push((m, Some(value)));
        } else {
            pushed.push((m, None));
        }
    }
    let result = callable.call1(args);
    pull_back(py_ctx, &pushed)?;
    result
}

type Pushed<'py> = Vec<(Arc<dyn mirror::Mirror>, Option<Bound<'py, PyAny>>)>;

/// Sets the Rust values of the mirrored variables in `py_ctx` (not
/// entered); returns what each got, for [`pull_back`].
fn push<'py>(py: Python<'py>, py_ctx: &Bound<'py, PyAny>) -> PyResult<Pushed<'py>> {
    if !mirror::any() {
        return Ok(Vec::new());
    }
    let set = var_set_fn(py)?;
    let mut pushed = Vec::new();
    for m in mirror::mirrors() {
        let value = m.push(py)?;
        if let Some(value) = &value {
            py_ctx.call_method1(intern!(py, "run"), (set, m.py_var().bind(py), value))?;
        }
        pushed.push((m, value));
    }
    Ok(pushed)
}

/// Sets in the current Rust context the mirrored values a callback changed
/// in `py_ctx`.
fn pull_back<'py>(py_ctx: &Bound<'py, PyAny>, pushed: &Pushed<'py>) -> PyResult<()> {
    let py = py_ctx.py();
    for (m, before) in pushed {
        let now = value_in(py_ctx, m.py_var().bind(py))?;
        let unchanged = match (before, &now) {
            (Some(b), Some(n)) => b.is(n),
            (None, None) => true,
            _ => false,
        };
        if !unchanged {
            set_current(m.id(), now.map(|v| m.convert(&v)).transpose()?);
        }
    }
    Ok(())
}

/// A copy of the carried Python context with the mirrored Rust values set
/// in it (a new empty context where none is carried): where a coroutine
/// awaited from Rust runs.
#[cfg_attr(not(feature = "pyo3-async-runtimes"), allow(dead_code))]
pub(crate) fn prepared_copy(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    let py_ctx = match CARRIED.with(|c| c.map(|c| c.context.clone_ref(py))) {
        Some(c) => c.bind(py).call_method0(intern!(py, "copy"))?,
        None => context_type(py)?.call0()?,
    };
    push(py, &py_ctx)?;
    Ok(py_ctx)
}

/// The event loop carried by the current Rust context.
#[cfg_attr(not(feature = "pyo3-async-runtimes"), allow(dead_code))]
pub(crate) fn carried_loop(py: Python<'_>) -> Option<Py<PyAny>> {
    CARRIED.with(|c| {
        c.and_then(|c| c.event_loop.as_ref())
            .map(|l| l.clone_ref(py))
    })
}

/// The Python context a [`call`] made now would start from: a copy of the
/// carried one, with the mirrored Rust values set in it (a new context if
/// none is carried). For code that hands a context to a Python API itself,
/// such as `loop.call_soon(callback, context=...)`.
///
/// # Errors
///
/// As [`call`]: a mirrored value that does not convert.
///
/// ```no_run
/// use pyo3::prelude::*;
///
/// fn schedule(py: Python<'_>, event_loop: &Bound<'_, PyAny>, cb: &Bound<'_, PyAny>) -> PyResult<()> {
///     let kwargs = pyo3::types::PyDict::new(py);
///     kwargs.set_item("context", contextvars::python::python_context(py)?)?;
///     event_loop.call_method("call_soon_threadsafe", (cb,), Some(&kwargs))?;
///     Ok(())
/// }
/// ```
pub fn python_context(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    prepared_copy(py)
}
