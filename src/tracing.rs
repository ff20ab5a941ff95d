//! Context variables in every log line (feature `tracing`).
//!
//! [`ContextFormat`] wraps a `tracing-subscriber` event format and writes the
//! registered variables' current values in front of each event. Events are
//! formatted on the thread that emits them, inside its current context, so
//! a request id set once at the edge of a request shows up in every line the
//! request logs — also from tasks, threads and rayon jobs that inherited the
//! context through this crate's helpers.
//!
//! **Invariant:** rendering reads the variables without cloning and never
//! writes a context; a variable with no value (and no default) writes
//! nothing.

use std::fmt::{self, Display, Write};

use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::ContextVar;

type Render = Box<dyn Fn(&mut dyn Write) -> fmt::Result + Send + Sync>;

/// An event format that prefixes each event with context variables.
///
/// ```
/// use contextvars::tracing::ContextFormat;
/// use contextvars::ContextVar;
///
/// static REQUEST_ID: ContextVar<u64> = ContextVar::new("request_id");
///
/// let format = ContextFormat::new(tracing_subscriber::fmt::format().without_time()).with_var(&REQUEST_ID);
/// let subscriber = tracing_subscriber::fmt().event_format(format).finish();
/// tracing::subscriber::with_default(subscriber, || {
///     REQUEST_ID.scope(42, || tracing::info!("handled")); // "request_id=42  INFO ...: handled"
/// });
/// ```
pub struct ContextFormat<F> {
    inner: F,
    vars: Vec<Render>,
}

impl<F> ContextFormat<F> {
    /// Wraps `inner` (e.g. `tracing_subscriber::fmt::format()`), with no
    /// variables yet.
    ///
    /// ```
    /// let _f = contextvars::tracing::ContextFormat::new(tracing_subscriber::fmt::format());
    /// ```
    pub fn new(inner: F) -> ContextFormat<F> {
        ContextFormat {
            inner,
            vars: Vec::new(),
        }
    }

    /// Adds `var`, rendered as `name=value` with its `Display`.
    ///
    /// ```
    /// use contextvars::ContextVar;
    /// static TENANT: ContextVar<String> = ContextVar::new("tenant");
    /// let _f = contextvars::tracing::ContextFormat::new(tracing_subscriber::fmt::format()).with_var(&TENANT);
    /// ```
    #[must_use]
    pub fn with_var<T: Display + Send + Sync + 'static>(
        self,
        var: &'static ContextVar<T>,
    ) -> ContextFormat<F> {
        self.with_var_fmt(var, |value, out| write!(out, "{value}"))
    }

    /// Adds `var`, rendered as `name=` followed by what `render` writes.
    ///
    /// ```
    /// use contextvars::ContextVar;
    /// static DEADLINE_MS: ContextVar<u64> = ContextVar::new("deadline");
    /// let _f = contextvars::tracing::ContextFormat::new(tracing_subscriber::fmt::format())
    ///     .with_var_fmt(&DEADLINE_MS, |ms, out| write!(out, "{}s", ms / 1000));
    /// ```
    #[must_use]
    pub fn with_var_fmt<T, R>(mut self, var: &'static ContextVar<T>, render: R) -> ContextFormat<F>
    where
        T: Send + Sync + 'static,
        R: Fn(&T, &mut dyn Write) -> fmt::Result + Send + Sync + 'static,
    {
        self.vars.push(Box::new(move |out| {
            var.with(|value| match value {
                Some(value) => {
                    write!(out, "{}=", var.name())?;
                    render(value, out)?;
                    out.write_char(' ')
                }
                None => Ok(()),
            })
        }));
        self
    }
}

impl<S, N, F> FormatEvent<S, N> for ContextFormat<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        for render in &self.vars {
            render(&mut writer)?;
        }
        self.inner.format_event(ctx, writer, event)
    }
}

impl<F> fmt::Debug for ContextFormat<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContextFormat")
            .field("vars", &self.vars.len())
            .finish_non_exhaustive()
    }
}
