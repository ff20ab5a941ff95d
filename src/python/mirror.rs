//! Mirrored variables: the registry that pairs a Rust [`ContextVar`] with a
//! Python `contextvars.ContextVar`, and the two conversions of its value
//! (Python into Rust when a context is captured or a callback returns; Rust
//! into Python when a callback is made).
//!
//! **Invariant:** a Rust variable mirrors at most one Python variable and a
//! Python variable is mirrored by at most one Rust variable, so a value never
//! has two sources on either side.

use std::any::type_name;
use std::sync::{Arc, RwLock};

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;
use pyo3::{BoundObject, FromPyObject, IntoPyObject};

use crate::ContextVar;
use crate::map::VarId;
use crate::value::Value;

/// One mirrored pair, its value type erased.
pub(super) trait Mirror: Send + Sync {
    /// The Python `ContextVar`.
    fn py_var(&self) -> &Py<PyAny>;
    /// The Rust variable's name, for messages.
    fn name(&self) -> &'static str;
    /// The Rust variable's id, under which its values are stored.
    fn id(&self) -> VarId;
    /// A Python value, converted to the Rust variable's type.
    fn convert(&self, value: &Bound<'_, PyAny>) -> PyResult<Value>;
    /// The current Rust value, converted; `None` if the current Rust context
    /// has none (the variable's default is not a value of the context).
    fn push<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>>;
}

struct Mirrored<T: Send + Sync + 'static> {
    var: &'static ContextVar<T>,
    py_var: Py<PyAny>,
}

impl<T> Mirror for Mirrored<T>
where
    T: Clone + Send + Sync + 'static + for<'a, 'py> FromPyObject<'a, 'py>,
    for<'py> T: IntoPyObject<'py>,
{
    fn py_var(&self) -> &Py<PyAny> {
        &self.py_var
    }

    fn name(&self) -> &'static str {
        self.var.name()
    }

    fn id(&self) -> VarId {
        self.var.id()
    }

    fn convert(&self, value: &Bound<'_, PyAny>) -> PyResult<Value> {
        let converted: T = value
            .extract::<T>()
            .map_err(Into::<PyErr>::into)
            .map_err(|err| {
                let py = value.py();
                let ty = value
                    .get_type()
                    .name()
                    .map_or_else(|_| "?".to_owned(), |n| n.to_string());
                let new = PyTypeError::new_err(format!(
                    "contextvars: the Python value of the mirrored variable `{}` is a `{ty}`, \
                     which does not convert to the Rust type `{}` ({err}); set it to a value \
                     of that type, or mirror it with a Rust type that accepts it",
                    self.var.name(),
                    type_name::<T>(),
                ));
                new.set_cause(py, Some(err));
                new
            })?;
        Ok(Value::new(converted))
    }

    fn push<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let var = self.var;
        // The context's own value: a variable's default is not pushed.
        let value = crate::context::read_current(
            var.id(),
            var.addr(),
            || var.id(),
            |v| v.and_then(|v| v.downcast::<T>()).cloned(),
        );
        let Some(value) = value else {
            return Ok(None);
        };
        match value.into_pyobject(py) {
            Ok(obj) => Ok(Some(obj.into_bound().into_any())),
            Err(err) => {
                let err: PyErr = err.into();
                let new = PyTypeError::new_err(format!(
                    "contextvars: the Rust value of the mirrored variable `{}` (a `{}`) does not \
                     convert to a Python object ({err})",
                    self.var.name(),
                    type_name::<T>(),
                ));
                new.set_cause(py, Some(err));
                Err(new)
            }
        }
    }
}

/// Every mirrored pair, in the order declared. Read at every crossing,
/// written once per declaration.
static MIRRORS: RwLock<Vec<Arc<dyn Mirror>>> = RwLock::new(Vec::new());

/// A snapshot of the registry (a few `Arc`s), so that no lock is held while
/// Python code runs.
pub(super) fn mirrors() -> Vec<Arc<dyn Mirror>> {
    MIRRORS.read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Whether any variable is mirrored (a crossing without one skips the
/// conversions).
pub(super) fn any() -> bool {
    !MIRRORS.read().unwrap_or_else(|e| e.into_inner()).is_empty()
}

pub(super) fn context_var_type(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    static TYPE: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    TYPE.import(py, "contextvars", "ContextVar")
}

/// Declares that the Rust variable `var` mirrors the Python
/// `contextvars.ContextVar` `py_var`: a context captured with
/// [`capture`](super::capture) holds the Python value converted to `T`, and
/// a callback made with [`call`](super::call) sees the Rust value converted
/// to a Python object.
///
/// Each side keeps its own default: a Python default is not a value of the
/// Python context, so Rust reads fall back to `var`'s default.
///
/// # Errors
///
/// `TypeError` if `py_var` is not a `contextvars.ContextVar`; `ValueError`
/// if `var` or `py_var` is already mirrored. Both name the variable.
///
/// ```no_run
/// use contextvars::ContextVar;
/// use pyo3::prelude::*;
///
/// static REQUEST_ID: ContextVar<String> = ContextVar::new("request_id");
///
/// Python::attach(|py| -> PyResult<()> {
///     // The application's own variable, declared in Python.
///     let py_var = py.import("myapp.context")?.getattr("request_id")?;
///     contextvars::python::mirror(&REQUEST_ID, &py_var)
/// })
/// .unwrap();
/// ```
pub fn mirror<T>(var: &'static ContextVar<T>, py_var: &Bound<'_, PyAny>) -> PyResult<()>
where
    T: Clone + Send + Sync + 'static + for<'a, 'py> FromPyObject<'a, 'py>,
    for<'py> T: IntoPyObject<'py>,
{
    let py = py_var.py();
    if !py_var.is_instance(context_var_type(py)?)? {
        let ty = py_var
            .get_type()
            .name()
            .map_or_else(|_| "?".to_owned(), |n| n.to_string());
        return Err(PyTypeError::new_err(format!(
            "contextvars: `{}` can only mirror a contextvars.ContextVar, not a `{ty}`",
            var.name()
        )));
    }
    let mut mirrors = MIRRORS.write().unwrap_or_else(|e| e.into_inner());
    let id = var.id();
    for m in mirrors.iter() {
        if m.py_var().is(py_var) {
            return Err(PyValueError::new_err(format!(
                "contextvars: the Python variable `{}` is already mirrored by the Rust variable \
                 `{}`; mirror it once",
                py_var
                    .getattr("name")
                    .map_or_else(|_| "?".to_owned(), |n| n.to_string()),
                m.name()
            )));
        }
    }
    if MIRRORED_IDS
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .contains(&id)
    {
        return Err(PyValueError::new_err(format!(
            "contextvars: the Rust variable `{}` already mirrors a Python variable; mirror it once",
            var.name()
        )));
    }
    MIRRORED_IDS
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .push(id);
    mirrors.push(Arc::new(Mirrored {
        var,
        py_var: py_var.clone().unbind(),
    }));
    Ok(())
}

/// The Rust variables already mirrored (their ids).
static MIRRORED_IDS: RwLock<Vec<VarId>> = RwLock::new(Vec::new());

/// Creates a Python `contextvars.ContextVar` named as `var` and mirrors it
/// ([`mirror`]): for an extension module that owns the variable and exports
/// it to Python (`m.add("request_id", declare(py, &REQUEST_ID)?)`).
///
/// # Errors
///
/// As [`mirror`]: `ValueError` if `var` is already mirrored.
///
/// ```no_run
/// use contextvars::ContextVar;
/// use pyo3::prelude::*;
///
/// static REQUEST_ID: ContextVar<u64> = ContextVar::new("request_id");
///
/// Python::attach(|py| -> PyResult<()> {
///     let py_var = contextvars::python::declare(py, &REQUEST_ID)?;
///     assert_eq!(py_var.getattr("name")?.extract::<String>()?, "request_id");
///     Ok(())
/// })
/// .unwrap();
/// ```
pub fn declare<'py, T>(py: Python<'py>, var: &'static ContextVar<T>) -> PyResult<Bound<'py, PyAny>>
where
    T: Clone + Send + Sync + 'static + for<'a, 'b> FromPyObject<'a, 'b>,
    for<'b> T: IntoPyObject<'b>,
{
    let py_var = context_var_type(py)?.call1((var.name(),))?;
    mirror(var, &py_var)?;
    Ok(py_var)
}
