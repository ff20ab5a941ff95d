//! Context variables in every log line and on every span (feature
//! `tracing`).
//!
//! [`ContextFormat`] wraps a `tracing-subscriber` event format and writes the
//! registered variables' current values with each event: in front of a text
//! line, or as top-level fields of a JSON line (`fmt().json()`). Events are
//! formatted on the thread that emits them, inside its current context, so a
//! request id set once at the edge of a request shows up in every line the
//! request logs — also from tasks, threads and rayon jobs that inherited the
//! context through this crate's helpers. [`ContextSpanFields`] is a `Layer`
//! that records the variables onto each new span that declares them, for any
//! subscriber or exporter to see.
//!
//! [`carry_spans`] switches on, once for the process, the carrying of the
//! span current at spawn into the work this crate's helpers start (and,
//! with feature `opentelemetry`, of OpenTelemetry's current `Context`).
//!
//! ```
//! use std::io::Write;
//! use std::sync::{Arc, Mutex};
//! use contextvars::tracing::ContextFormat;
//! use contextvars::ContextVar;
//!
//! static REQUEST_ID: ContextVar<u64> = ContextVar::new("request_id");
//!
//! #[derive(Clone, Default)]
//! struct Lines(Arc<Mutex<Vec<u8>>>);
//! impl Write for Lines {
//!     fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> { self.0.lock().unwrap().write(buf) }
//!     fn flush(&mut self) -> std::io::Result<()> { Ok(()) }
//! }
//!
//! let lines = Lines::default();
//! let writer = lines.clone();
//! let subscriber = tracing_subscriber::fmt()
//!     .event_format(ContextFormat::new(tracing_subscriber::fmt::format().without_time()).with_var(&REQUEST_ID))
//!     .with_writer(move || writer.clone())
//!     .finish();
//! tracing::subscriber::with_default(subscriber, || {
//!     REQUEST_ID.sync_scope(42, || tracing::info!("handled"));
//! });
//! let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
//! assert!(text.starts_with("request_id=42 ") && text.contains("handled"), "{text}");
//! ```
//!
//! **Invariant:** one event stays one line: a value reaches the output only
//! escaped (control characters, C0 and C1, never raw; JSON strings escaped
//! per RFC 8259), since values arrive from other services' baggage
//! (CWE-117). Rendering reads the variables without cloning and never
//! writes a context; a variable with no value (and no default) writes
//! nothing.

use std::any::Any;
use std::fmt::{self, Display, Write};
use std::sync::OnceLock;

use tracing::dispatcher::WeakDispatch;
use tracing::field::{Field, Value};
use tracing::span::{Attributes, Id, Record};
use tracing::{Dispatch, Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::ContextVar;

/// A variable's value, as the most specific kind it can be: integers,
/// floats and bools as themselves (numbers and bools in JSON, typed fields
/// on spans), anything else by `Display`.
#[derive(Clone, Copy)]
enum Typed<'a> {
    U(u64),
    I(i64),
    F(f64),
    B(bool),
    D(&'a dyn Display),
}

impl Typed<'_> {
    fn of<T: Display + 'static>(value: &T) -> Typed<'_> {
        let any = value as &dyn Any;
        macro_rules! as_ {
            ($($t:ty => $kind:ident as $as:ty),*) => {$(
                if let Some(v) = any.downcast_ref::<$t>() {
                    return Typed::$kind(*v as $as);
                }
            )*};
        }
        as_!(u64 => U as u64, u32 => U as u64, u16 => U as u64, u8 => U as u64, usize => U as u64,
             i64 => I as i64, i32 => I as i64, i16 => I as i64, i8 => I as i64, isize => I as i64,
             f64 => F as f64, f32 => F as f64, bool => B as bool);
        Typed::D(value)
    }

    /// Shows the value to `f` as a `tracing` value.
    fn as_value(self, f: impl FnOnce(&dyn Value)) {
        match self {
            Typed::U(v) => f(&v),
            Typed::I(v) => f(&v),
            Typed::F(v) => f(&v),
            Typed::B(v) => f(&v),
            Typed::D(v) => f(&tracing::field::display(v)),
        }
    }

    fn text(self, out: &mut dyn Write) -> fmt::Result {
        match self {
            Typed::U(v) => write!(out, "{v}"),
            Typed::I(v) => write!(out, "{v}"),
            Typed::F(v) => write!(out, "{v}"),
            Typed::B(v) => write!(out, "{v}"),
            Typed::D(v) => write!(Escaped(out), "{v}"),
        }
    }

    fn json(self, out: &mut String) -> fmt::Result {
        match self {
            Typed::U(v) => write!(out, "{v}"),
            Typed::I(v) => write!(out, "{v}"),
            // JSON has no NaN or infinity: those go as strings.
            Typed::F(v) if !v.is_finite() => json_string(out, &v.to_string()),
            Typed::F(v) => write!(out, "{v}"),
            Typed::B(v) => write!(out, "{v}"),
            Typed::D(v) => json_string(out, &v.to_string()),
        }
    }
}

/// Renders one variable: calls back with its name and value, if it has one.
type Render = Box<dyn Fn(&mut dyn FnMut(&'static str, Typed<'_>)) + Send + Sync>;

fn render<T: Display + Send + Sync + 'static>(var: &'static ContextVar<T>) -> Render {
    Box::new(move |f| {
        var.with(|value| {
            if let Some(value) = value {
                f(var.name(), Typed::of(value));
            }
        })
    })
}

/// An event format that writes context variables with each event: in front
/// of a text line, or as fields of a JSON line.
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
///     REQUEST_ID.sync_scope(42, || tracing::info!("handled")); // "request_id=42  INFO ...: handled"
/// });
/// ```
///
/// With `tracing_subscriber`'s JSON format (feature `json` of that crate)
/// the variables become top-level fields — numbers, bools or strings as the
/// variable's type allows — and every line stays valid JSON:
///
/// ```
/// # use contextvars::tracing::ContextFormat;
/// # use contextvars::ContextVar;
/// # static REQUEST_ID: ContextVar<u64> = ContextVar::new("request_id");
/// let subscriber = tracing_subscriber::fmt()
///     .json()
///     .event_format(ContextFormat::json(tracing_subscriber::fmt::format().json()).with_var(&REQUEST_ID))
///     .finish();
/// tracing::subscriber::with_default(subscriber, || {
///     // {"request_id":42,"timestamp":"…","level":"INFO","fields":{"message":"handled"},"target":"…"}
///     REQUEST_ID.sync_scope(42, || tracing::info!("handled"));
/// });
/// ```
pub struct ContextFormat<F> {
    inner: F,
    vars: Vec<Render>,
    json: bool,
}

impl<F> ContextFormat<F> {
    /// Wraps `inner`, a text format (e.g. `tracing_subscriber::fmt::format()`),
    /// with no variables yet: they are written as a `name=value` prefix of
    /// each line. For a JSON format, use [`json`](Self::json).
    ///
    /// ```
    /// let _f = contextvars::tracing::ContextFormat::new(tracing_subscriber::fmt::format());
    /// ```
    pub fn new(inner: F) -> ContextFormat<F> {
        ContextFormat {
            inner,
            vars: Vec::new(),
            json: false,
        }
    }

    /// Wraps `inner`, a JSON format (e.g. `tracing_subscriber::fmt::format().json()`),
    /// with no variables yet: they are written as top-level fields of the
    /// object `inner` writes, so every line stays valid JSON. Chosen
    /// explicitly: a text prefix would make every JSON line invalid, and the
    /// kind of a format cannot be told reliably from its type.
    ///
    /// ```
    /// let _f = contextvars::tracing::ContextFormat::json(tracing_subscriber::fmt::format().json());
    /// ```
    pub fn json(inner: F) -> ContextFormat<F> {
        ContextFormat {
            inner,
            vars: Vec::new(),
            json: true,
        }
    }

    /// Adds `var`, rendered as `name=value` with its `Display` (in JSON: a
    /// number or bool when its type is one, a string otherwise).
    ///
    /// ```
    /// use contextvars::ContextVar;
    /// static TENANT: ContextVar<String> = ContextVar::new("tenant");
    /// let _f = contextvars::tracing::ContextFormat::new(tracing_subscriber::fmt::format()).with_var(&TENANT);
    /// ```
    #[must_use]
    pub fn with_var<T: Display + Send + Sync + 'static>(
        mut self,
        var: &'static ContextVar<T>,
    ) -> ContextFormat<F> {
        self.vars.push(render(var));
        self
    }

    /// Adds `var`, rendered as `name=` followed by what `render` writes (in
    /// JSON: a string).
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
        struct Custom<'a, T, R>(&'a T, &'a R);
        impl<T, R: Fn(&T, &mut dyn Write) -> fmt::Result> Display for Custom<'_, T, R> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                (self.1)(self.0, f)
            }
        }
        self.vars.push(Box::new(move |f| {
            var.with(|value| {
                if let Some(value) = value {
                    f(var.name(), Typed::D(&Custom(value, &render)));
                }
            })
        }));
        self
    }

    fn write_text(&self, out: &mut dyn Write) -> fmt::Result {
        let mut result = Ok(());
        for render in &self.vars {
            render(&mut |name, value| {
                if result.is_ok() {
                    result = write!(out, "{name}=")
                        .and_then(|()| value.text(out))
                        .and_then(|()| out.write_char(' '));
                }
            });
        }
        result
    }

    fn json_fields(&self) -> Result<String, fmt::Error> {
        let mut fields = String::new();
        let mut result = Ok(());
        for render in &self.vars {
            render(&mut |name, value| {
                if result.is_ok() {
                    if !fields.is_empty() {
                        fields.push(',');
                    }
                    result = json_string(&mut fields, name)
                        .and_then(|()| fields.write_char(':'))
                        .and_then(|()| value.json(&mut fields));
                }
            });
        }
        result.map(|()| fields)
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
        if !self.json {
            self.write_text(&mut writer)?;
            return self.inner.format_event(ctx, writer, event);
        }
        let fields = self.json_fields()?;
        if fields.is_empty() {
            return self.inner.format_event(ctx, writer, event);
        }
        let mut splice = Splice {
            out: &mut writer,
            fields: Some(&fields),
            comma: false,
        };
        self.inner
            .format_event(ctx, Writer::new(&mut splice), event)?;
        // `inner` wrote nothing: the fields are the event.
        match splice.fields {
            Some(fields) => writeln!(splice.out, "{{{fields}}}"),
            None => Ok(()),
        }
    }
}

impl<F> fmt::Debug for ContextFormat<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContextFormat")
            .field("vars", &self.vars.len())
            .field("json", &self.json)
            .finish_non_exhaustive()
    }
}

/// Puts `fields` first in the JSON object written through it: after its
/// opening `{`, with a `,` unless the object is otherwise empty.
struct Splice<'a, 'w> {
    out: &'a mut Writer<'w>,
    fields: Option<&'a str>,
    comma: bool,
}

impl Write for Splice<'_, '_> {
    fn write_str(&mut self, mut s: &str) -> fmt::Result {
        if s.is_empty() {
            return Ok(());
        }
        if let Some(fields) = self.fields.take() {
            match s.strip_prefix('{') {
                Some(rest) => {
                    write!(self.out, "{{{fields}")?;
                    self.comma = true;
                    s = rest;
                }
                // Not a JSON object after all: the fields go first, as one.
                None => write!(self.out, "{{{fields}}} ")?,
            }
        }
        if self.comma && !s.is_empty() {
            self.comma = false;
            if !s.starts_with('}') {
                self.out.write_char(',')?;
            }
        }
        self.out.write_str(s)
    }
}

/// Writes control characters (C0, DEL, C1) escaped, so a value cannot start
/// a line of its own or drive a terminal.
struct Escaped<'a>(&'a mut dyn Write);

impl Write for Escaped<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut rest = s;
        while let Some(at) = rest.find(char::is_control) {
            self.0.write_str(&rest[..at])?;
            let c = rest[at..].chars().next().expect("found above");
            match c {
                '\n' => self.0.write_str("\\n")?,
                '\r' => self.0.write_str("\\r")?,
                '\t' => self.0.write_str("\\t")?,
                c => write!(self.0, "\\u{{{:x}}}", c as u32)?,
            }
            rest = &rest[at + c.len_utf8()..];
        }
        self.0.write_str(rest)
    }
}

/// Writes `s` as a JSON string: quotes, backslashes and every control
/// character (C1 included, which JSON would allow raw) escaped.
fn json_string(out: &mut String, s: &str) -> fmt::Result {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => write!(out, "\\u{:04x}", c as u32)?,
            c => out.push(c),
        }
    }
    out.push('"');
    Ok(())
}

/// A `tracing_subscriber::Layer` that records context variables onto each
/// new span that declares a field of the same name and leaves it empty, so
/// every subscriber and exporter (`fmt`, `tracing-opentelemetry`, …) sees
/// them as ordinary span fields.
///
/// A span's fields are fixed where it is written (`tracing` cannot add a
/// field to a span at run time): declare the slot with
/// `tracing::field::Empty`. Add this layer *after* the layers that should
/// see the values (`registry().with(fmt::layer()).with(ContextSpanFields…)`),
/// so they have seen the span before the values are recorded.
///
/// ```
/// use contextvars::tracing::ContextSpanFields;
/// use contextvars::ContextVar;
/// use tracing_subscriber::layer::SubscriberExt;
///
/// static REQUEST_ID: ContextVar<u64> = ContextVar::new("request_id");
///
/// let subscriber = tracing_subscriber::fmt()
///     .finish()
///     .with(ContextSpanFields::new().with_var(&REQUEST_ID));
/// tracing::subscriber::with_default(subscriber, || {
///     REQUEST_ID.sync_scope(42, || {
///         let span = tracing::info_span!("handle", request_id = tracing::field::Empty);
///         span.in_scope(|| tracing::info!("handled")); // "handle{request_id=42}: handled"
///     });
/// });
/// ```
#[derive(Default)]
pub struct ContextSpanFields {
    vars: Vec<Render>,
    dispatch: OnceLock<WeakDispatch>,
}

impl ContextSpanFields {
    /// A layer with no variables yet.
    ///
    /// ```
    /// let _layer = contextvars::tracing::ContextSpanFields::new();
    /// ```
    pub fn new() -> ContextSpanFields {
        ContextSpanFields::default()
    }

    /// Adds `var`, recorded as an integer, float or bool when its type is
    /// one, by `Display` otherwise.
    ///
    /// ```
    /// use contextvars::ContextVar;
    /// static TENANT: ContextVar<String> = ContextVar::new("tenant");
    /// let _layer = contextvars::tracing::ContextSpanFields::new().with_var(&TENANT);
    /// ```
    pub fn with_var<T: Display + Send + Sync + 'static>(
        mut self,
        var: &'static ContextVar<T>,
    ) -> ContextSpanFields {
        self.vars.push(render(var));
        self
    }
}

impl<S: Subscriber> tracing_subscriber::Layer<S> for ContextSpanFields {
    fn on_register_dispatch(&self, dispatch: &Dispatch) {
        // The dispatch the layer belongs to, to record through: inside
        // `on_new_span` the thread's default dispatch is not reachable.
        let _ = self.dispatch.set(dispatch.downgrade());
    }

    fn on_new_span(
        &self,
        attrs: &Attributes<'_>,
        id: &Id,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let Some(dispatch) = self.dispatch.get().and_then(WeakDispatch::upgrade) else {
            return;
        };
        let fields = attrs.metadata().fields();
        // `field::Empty` counts as present for `Attributes::contains`, but
        // records nothing: what was given is what a visit sees.
        let mut given = Given(0);
        attrs.record(&mut given);
        for render in &self.vars {
            render(&mut |name, value| {
                let Some(field) = fields.field(name) else {
                    return;
                };
                if !given.has(&field) {
                    value.as_value(|value| {
                        let values = [(&field, Some(value))];
                        dispatch.record(id, &Record::new(&fields.value_set(&values)));
                    });
                }
            });
        }
    }
}

/// Which fields of a new span were given a value (a bit per field index;
/// `tracing` allows 32 fields a span).
struct Given(u64);

impl Given {
    fn has(&self, field: &Field) -> bool {
        field.index() >= 64 || self.0 & (1 << field.index()) != 0
    }
}

impl tracing::field::Visit for Given {
    fn record_debug(&mut self, field: &Field, _: &dyn fmt::Debug) {
        if field.index() < 64 {
            self.0 |= 1 << field.index();
        }
    }
}

impl fmt::Debug for ContextSpanFields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContextSpanFields")
            .field("vars", &self.vars.len())
            .finish_non_exhaustive()
    }
}

/// Switches on (or off) the carrying of the tracing span current at spawn
/// into the work this crate's helpers start — `contextvars::tokio::spawn`,
/// `spawn_local`, `spawn_blocking`, `JoinSetExt`, `thread::spawn(_scoped)`,
/// every `contextvars::rayon` helper and `ParallelIteratorExt` adapter, and
/// [`wrap`](crate::wrap); plain `tokio::spawn` tasks on a runtime built
/// with `contextvars::tokio::BuilderExt::isolate_tasks` (`--cfg
/// tokio_unstable`), through its task hooks; and the messages of
/// [`channel`](crate::channel) and, in process, `snapshot::Snapshot`s,
/// entered while they are handled — for the whole process. With feature
/// `opentelemetry`, OpenTelemetry's current `Context` is carried too (and
/// attached around each poll or call) when it holds an active span or
/// baggage.
///
/// As `tracing::Instrument` does, the span is entered around every poll of
/// a task (and its drop) and every call of a closure, and exited after; a
/// task drops it when it completes, so a span is not kept open past the
/// work. Detached work (`spawn_detached`) carries none of it, and neither
/// does a plain `tokio::spawn` without the task hooks. Off (the default),
/// spawning costs one relaxed load more than without this switch.
///
/// ```
/// use tracing::Span;
///
/// contextvars::tracing::carry_spans(true); // once, at start-up
///
/// # let dispatch = tracing::Dispatch::new(tracing_subscriber::registry());
/// # tracing::dispatcher::with_default(&dispatch, || {
/// let request = tracing::info_span!("request", id = 7);
/// let job = request.in_scope(|| contextvars::wrap(|| Span::current().metadata().map(|m| m.name())));
/// // Called later, wherever: the request's span is entered around the call.
/// assert_eq!(job(), Some("request"));
/// # });
/// ```
pub fn carry_spans(on: bool) {
    crate::carry::ON.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Whether [`carry_spans`] is on.
///
/// ```
/// contextvars::tracing::carry_spans(true);
/// assert!(contextvars::tracing::carries_spans());
/// ```
pub fn carries_spans() -> bool {
    crate::carry::ON.load(std::sync::atomic::Ordering::Relaxed)
}
