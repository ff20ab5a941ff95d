//! Context variables as OpenTelemetry span attributes (feature
//! `opentelemetry_sdk`): [`VarAttributes`] is a `SpanProcessor` that, as
//! each span starts, sets one attribute per chosen variable from the
//! current context. No span declares a field for them, and every span the
//! SDK starts gets them: spans started with the OpenTelemetry API, and
//! those a bridge such as `tracing-opentelemetry` starts for tracing's
//! spans.
//!
//! ```
//! use contextvars::ContextVar;
//! use contextvars::opentelemetry_sdk::VarAttributes;
//! use opentelemetry::trace::{Tracer, TracerProvider};
//!
//! static REQUEST_ID: ContextVar<u64> = ContextVar::new("request_id");
//!
//! let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
//!     .with_span_processor(VarAttributes::new().with_var(&REQUEST_ID))
//!     // .with_batch_exporter(exporter) — the exporter sees the attributes
//!     .build();
//! let tracer = provider.tracer("app");
//! REQUEST_ID.sync_scope(7, || tracer.in_span("handle", |_cx| { /* ... */ }));
//! ```
//!
//! The processor reads the variables on the thread that starts the span,
//! in the context current there, as OpenTelemetry calls `on_start`
//! synchronously from the span's start: register it *before* the
//! exporting processors, which OpenTelemetry calls in order. A bridge that
//! starts the OpenTelemetry span later than its own span (some versions of
//! `tracing-opentelemetry` start it when the tracing span closes) gets the
//! values current at that moment.
//!
//! **Invariant:** the processor only reads: it never writes a context, and
//! a variable with no value (and no default) sets no attribute.

use std::any::Any;
use std::fmt::{self, Display};
use std::time::Duration;

use ::opentelemetry::trace::Span as _;
use ::opentelemetry::{Context as OtelContext, Key, KeyValue, Value};
use ::opentelemetry_sdk::error::OTelSdkResult;
use ::opentelemetry_sdk::trace::{Span, SpanData, SpanProcessor};

use crate::ContextVar;

/// Reads one variable as an attribute value, if it has one.
type Read = Box<dyn Fn() -> Option<Value> + Send + Sync>;

/// A `SpanProcessor` that sets chosen context variables as attributes of
/// every span, as it starts.
///
/// A value becomes an attribute of the most specific kind it can be:
/// integers as `i64` (a `u64` or `usize` above `i64::MAX` as its decimal
/// string), floats as `f64`, bools as `bool`, anything else by `Display`
/// as a string.
///
/// ```
/// use contextvars::ContextVar;
/// use contextvars::opentelemetry_sdk::VarAttributes;
///
/// static TENANT: ContextVar<String> = ContextVar::new("tenant");
/// static RETRY: ContextVar<bool> = ContextVar::with_default("retry", false);
///
/// let processor = VarAttributes::new()
///     .with_var_as(&TENANT, "app.tenant")
///     .with_var(&RETRY);
/// assert_eq!(processor.keys().collect::<Vec<_>>(), ["app.tenant", "retry"]);
/// ```
#[derive(Default)]
pub struct VarAttributes {
    attrs: Vec<(Key, Read)>,
}

impl VarAttributes {
    /// A processor that sets no attribute yet.
    ///
    /// ```
    /// assert_eq!(contextvars::opentelemetry_sdk::VarAttributes::new().keys().count(), 0);
    /// ```
    pub fn new() -> VarAttributes {
        VarAttributes::default()
    }

    /// Sets `var` as an attribute named after the variable.
    ///
    /// ```
    /// use contextvars::ContextVar;
    /// use contextvars::opentelemetry_sdk::VarAttributes;
    ///
    /// static USER_ID: ContextVar<u64> = ContextVar::new("user_id");
    /// let p = VarAttributes::new().with_var(&USER_ID);
    /// assert_eq!(p.keys().collect::<Vec<_>>(), ["user_id"]);
    /// ```
    pub fn with_var<T: Display + Send + Sync + 'static>(
        self,
        var: &'static ContextVar<T>,
    ) -> VarAttributes {
        self.with_var_as(var, var.name())
    }

    /// Sets `var` as an attribute named `key` (for OpenTelemetry's
    /// semantic conventions, e.g. `enduser.id`, or a namespace of your
    /// own). A key already set by an earlier call is replaced.
    ///
    /// ```
    /// use contextvars::ContextVar;
    /// use contextvars::opentelemetry_sdk::VarAttributes;
    ///
    /// static USER: ContextVar<String> = ContextVar::new("user");
    /// let p = VarAttributes::new().with_var_as(&USER, "enduser.id");
    /// assert_eq!(p.keys().collect::<Vec<_>>(), ["enduser.id"]);
    /// ```
    pub fn with_var_as<T: Display + Send + Sync + 'static>(
        mut self,
        var: &'static ContextVar<T>,
        key: impl Into<Key>,
    ) -> VarAttributes {
        let key = key.into();
        self.attrs.retain(|(k, _)| *k != key);
        self.attrs
            .push((key, Box::new(move || var.with(|v| v.map(attribute)))));
        self
    }

    /// The attribute keys it sets, in order.
    ///
    /// ```
    /// assert_eq!(contextvars::opentelemetry_sdk::VarAttributes::new().keys().count(), 0);
    /// ```
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.attrs.iter().map(|(k, _)| k.as_str())
    }
}

/// `value` as an attribute value: see [`VarAttributes`].
fn attribute<T: Display + 'static>(value: &T) -> Value {
    let any = value as &dyn Any;
    macro_rules! as_i64 {
        ($($t:ty),*) => {$(
            if let Some(v) = any.downcast_ref::<$t>() {
                return match i64::try_from(*v) {
                    Ok(v) => Value::I64(v),
                    Err(_) => Value::from(v.to_string()),
                };
            }
        )*};
    }
    as_i64!(i64, i32, i16, i8, isize, u64, u32, u16, u8, usize);
    if let Some(v) = any.downcast_ref::<f64>() {
        return Value::F64(*v);
    }
    if let Some(v) = any.downcast_ref::<f32>() {
        return Value::F64(f64::from(*v));
    }
    if let Some(v) = any.downcast_ref::<bool>() {
        return Value::Bool(*v);
    }
    Value::from(value.to_string())
}

impl SpanProcessor for VarAttributes {
    fn on_start(&self, span: &mut Span, _parent: &OtelContext) {
        if !span.is_recording() {
            return;
        }
        for (key, read) in &self.attrs {
            if let Some(value) = read() {
                span.set_attribute(KeyValue::new(key.clone(), value));
            }
        }
    }

    fn on_end(&self, _span: SpanData) {}

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

impl fmt::Debug for VarAttributes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VarAttributes")
            .field("keys", &self.keys().collect::<Vec<_>>())
            .finish()
    }
}
