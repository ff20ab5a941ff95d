//! Registered variables through OpenTelemetry's propagation (feature
//! `opentelemetry`): to and from `opentelemetry::baggage::Baggage` and
//! `opentelemetry::Context`, so they ride whatever propagators a service
//! already runs — W3C `baggage` and `traceparent` over HTTP, gRPC metadata
//! with tonic, message headers — instead of a parallel mechanism.
//!
//! The same [`Propagator`] decides what travels as over HTTP: its variables
//! under their keys, and (unless [`Propagator::forward_unknown`] is off) the
//! baggage members the service does not register, forwarded with their
//! metadata.
//!
//! ```
//! use contextvars::propagation::Propagator;
//! use contextvars::ContextVar;
//! use opentelemetry::baggage::BaggageExt;
//!
//! static REQUEST_ID: ContextVar<u64> = ContextVar::new("request_id");
//! let p = Propagator::new().with_var(&REQUEST_ID);
//!
//! // Out: the current values into an OpenTelemetry context's baggage.
//! let cx = REQUEST_ID.sync_scope(7, || p.inject_context(&opentelemetry::Context::new()));
//! assert_eq!(cx.baggage().get("request_id").map(|v| v.as_str()), Some("7"));
//! // In: a fresh context from it, on the receiving side.
//! let ctx = p.extract_context(&cx);
//! assert_eq!(ctx.get(&REQUEST_ID), Some(7));
//! ```
//!
//! **Invariant:** a boundary crossed through OpenTelemetry carries exactly
//! what [`Propagator::inject`]/[`Propagator::extract`] would carry: a value
//! that does not parse is dropped with one warning, never a panic.
//!
//! # As one of OpenTelemetry's propagators
//!
//! [`Propagator`] is a `TextMapPropagator`: in a
//! `TextMapCompositePropagator` set as the global propagator, every
//! instrumentation that already calls it (HTTP clients and servers, gRPC,
//! Kafka and NATS injectors) carries the variables with no code of its own.
//!
//! - **inject** writes one `baggage` header: the baggage of the
//!   OpenTelemetry context being injected (what OpenTelemetry's
//!   `BaggagePropagator` writes), with the registered variables' current
//!   values replacing members of the same keys, then the forwarded members
//!   whose keys are free; then each variable's own header
//!   ([`Propagator::with_header`]). Placed *after* OpenTelemetry's
//!   `BaggagePropagator`, it rewrites that propagator's header with the
//!   variables merged in. Placed before it, OpenTelemetry's propagator
//!   overwrites the header whenever the context has baggage of its own (its
//!   injector cannot be read back), and the variables are lost: put this
//!   one last.
//! - **extract** reads the registered variables from the `baggage` header
//!   and their own headers into a fresh [`Context`], kept in the returned
//!   OpenTelemetry context for [`Propagator::extract_context`] to hand
//!   out; it leaves the OpenTelemetry baggage to `BaggagePropagator`, in
//!   either order.
//!
//! ```
//! use contextvars::propagation::Propagator;
//! use contextvars::ContextVar;
//! use opentelemetry::propagation::{TextMapCompositePropagator, TextMapPropagator};
//! use std::collections::HashMap;
//!
//! static REQUEST_ID: ContextVar<u64> = ContextVar::new("request_id");
//! let ours = Propagator::new().with_var(&REQUEST_ID);
//! // In a service: opentelemetry::global::set_text_map_propagator(composite).
//! let composite = TextMapCompositePropagator::new(vec![Box::new(ours.clone())]);
//!
//! let mut carrier = HashMap::new();
//! REQUEST_ID.sync_scope(7, || composite.inject_context(&opentelemetry::Context::current(), &mut carrier));
//! assert_eq!(carrier["baggage"], "request_id=7");
//!
//! let cx = composite.extract(&carrier);
//! assert_eq!(ours.extract_context(&cx).get(&REQUEST_ID), Some(7));
//! ```

use std::borrow::Cow;

use opentelemetry::baggage::{Baggage, BaggageExt};
use opentelemetry::propagation::text_map_propagator::FieldIter;
use opentelemetry::propagation::{self as otel, TextMapPropagator};

use crate::Context;
use crate::baggage::{self, Dropped};
use crate::propagation::{BAGGAGE, Extractor, Injector, Propagator};

impl Propagator {
    /// Writes the current values of the registered variables into
    /// `baggage` (replacing members of the same keys), then the members the
    /// current context forwards, where their keys are free. Members that
    /// `Baggage` refuses (its W3C limits) are dropped with one warning.
    ///
    /// ```
    /// use contextvars::propagation::Propagator;
    /// use contextvars::ContextVar;
    ///
    /// static REQUEST_ID: ContextVar<u64> = ContextVar::new("request_id");
    /// let p = Propagator::new().with_var(&REQUEST_ID);
    /// let mut baggage = opentelemetry::baggage::Baggage::new();
    /// REQUEST_ID.sync_scope(7, || p.inject_baggage(&mut baggage));
    /// assert_eq!(baggage.get("request_id").map(|v| v.as_str()), Some("7"));
    /// ```
    pub fn inject_baggage(&self, baggage: &mut Baggage) {
        let mut dropped = Dropped::default();
        let ours = self.current();
        for (key, value) in &ours {
            baggage.remove(key);
            // `insert` answers `None` both when it adds and when it refuses.
            let _ = baggage.insert(*key, value.clone());
            if baggage.get(key).is_none() {
                dropped.over_limits(key);
            }
        }
        self.each_forwarded(|raw| {
            let Ok(member) = baggage::parse_member(raw) else {
                return;
            };
            if baggage.get(&member.key).is_some() {
                return;
            }
            let key = member.key.clone();
            let _ =
                baggage.insert_with_metadata(member.key, member.value, member.properties.join(";"));
            if baggage.get(&key).is_none() {
                dropped.over_limits(raw);
            }
        });
        dropped.warn("sent");
    }

    /// A fresh context from `baggage`: the registered variables decoded from
    /// their members, the other members kept to forward (with their
    /// metadata). Values that do not parse are dropped with one warning.
    ///
    /// ```
    /// use contextvars::propagation::Propagator;
    /// use contextvars::ContextVar;
    ///
    /// static REQUEST_ID: ContextVar<u64> = ContextVar::new("request_id");
    /// let p = Propagator::new().with_var(&REQUEST_ID);
    /// let mut baggage = opentelemetry::baggage::Baggage::new();
    /// baggage.insert("request_id", "7");
    /// assert_eq!(p.extract_baggage(&baggage).get(&REQUEST_ID), Some(7));
    /// ```
    pub fn extract_baggage(&self, baggage: &Baggage) -> Context {
        let mut dropped = Dropped::default();
        let ctx = self.seed(|seeder| {
            for (key, (value, metadata)) in baggage {
                let raw = || {
                    let mut raw =
                        format!("{}={}", key.as_str(), baggage::encode_value(value.as_str()));
                    if !metadata.as_str().is_empty() {
                        raw.push(';');
                        raw.push_str(metadata.as_str());
                    }
                    raw
                };
                seeder.member(key.as_str(), value.as_str(), raw, &mut dropped);
            }
        });
        dropped.warn("received");
        ctx
    }

    /// `cx` with its baggage extended by the current values (see
    /// [`inject_baggage`](Self::inject_baggage)): what to hand to an
    /// OpenTelemetry propagator's `inject_context`.
    ///
    /// ```
    /// use contextvars::propagation::Propagator;
    /// use contextvars::ContextVar;
    /// use opentelemetry::baggage::BaggageExt;
    ///
    /// static REQUEST_ID: ContextVar<u64> = ContextVar::new("request_id");
    /// let p = Propagator::new().with_var(&REQUEST_ID);
    /// let cx = REQUEST_ID.sync_scope(7, || p.inject_context(&opentelemetry::Context::new()));
    /// assert_eq!(cx.baggage().get("request_id").map(|v| v.as_str()), Some("7"));
    /// ```
    pub fn inject_context(&self, cx: &opentelemetry::Context) -> opentelemetry::Context {
        // `Baggage` is not `Clone`: rebuilt entry by entry.
        let mut baggage: Baggage = cx
            .baggage()
            .iter()
            .map(|(k, (v, m))| (k.clone(), (v.clone(), m.clone())))
            .collect();
        self.inject_baggage(&mut baggage);
        cx.with_baggage(baggage)
    }

    /// A fresh context from `cx` (as an OpenTelemetry propagator's `extract`
    /// returns it): a copy of the one this crate's `TextMapPropagator`
    /// extracted into it, if one did; otherwise from its baggage (see
    /// [`extract_baggage`](Self::extract_baggage)).
    ///
    /// ```
    /// use contextvars::propagation::Propagator;
    /// use contextvars::ContextVar;
    /// use opentelemetry::baggage::BaggageExt;
    ///
    /// static REQUEST_ID: ContextVar<u64> = ContextVar::new("request_id");
    /// let p = Propagator::new().with_var(&REQUEST_ID);
    /// let cx = opentelemetry::Context::new().with_baggage([opentelemetry::KeyValue::new("request_id", "7")]);
    /// assert_eq!(p.extract_context(&cx).get(&REQUEST_ID), Some(7));
    /// ```
    pub fn extract_context(&self, cx: &opentelemetry::Context) -> Context {
        match cx.get::<Extracted>() {
            Some(extracted) => extracted.0.copy(),
            None => self.extract_baggage(cx.baggage()),
        }
    }
}

/// The context this crate's `TextMapPropagator` extracted, carried in the
/// OpenTelemetry context it returns. Never entered: handed out as copies.
struct Extracted(Context);

/// `cx`'s baggage as a `baggage` header: what OpenTelemetry's
/// `BaggagePropagator` writes for it.
fn baggage_header(cx: &opentelemetry::Context) -> String {
    let mut text = String::new();
    for (key, (value, metadata)) in cx.baggage() {
        if !text.is_empty() {
            text.push(',');
        }
        text.push_str(key.as_str());
        text.push('=');
        text.push_str(&baggage::encode_value(value.as_str()));
        if !metadata.as_str().is_empty() {
            text.push(';');
            text.push_str(metadata.as_str());
        }
    }
    text
}

/// An OpenTelemetry injector as this crate's: what it "already holds" is
/// the context's baggage, which OpenTelemetry's `BaggagePropagator`
/// writes (its injector cannot be read back).
struct ToOpenTelemetry<'a> {
    injector: &'a mut dyn otel::Injector,
    existing: String,
}

impl Extractor for ToOpenTelemetry<'_> {
    fn get(&self, name: &str) -> Option<Cow<'_, [u8]>> {
        (name == BAGGAGE && !self.existing.is_empty())
            .then_some(Cow::Borrowed(self.existing.as_bytes()))
    }
}

impl Injector for ToOpenTelemetry<'_> {
    fn set(&mut self, name: &str, value: String) {
        self.injector.set(name, value);
    }

    fn remove(&mut self, _name: &str) {
        // An OpenTelemetry injector cannot remove; nothing was written
        // through this one yet, so there is nothing to remove.
    }
}

/// An OpenTelemetry extractor as this crate's: several values of one
/// header are one list.
struct FromOpenTelemetry<'a>(&'a dyn otel::Extractor);

impl Extractor for FromOpenTelemetry<'_> {
    fn get(&self, name: &str) -> Option<Cow<'_, [u8]>> {
        match self.0.get_all(name) {
            Some(values) if values.len() > 1 => Some(Cow::Owned(values.join(",").into_bytes())),
            _ => self
                .0
                .get(name)
                .map(|value| Cow::Borrowed(value.as_bytes())),
        }
    }
}

/// The registered variables as one of OpenTelemetry's propagators (see the
/// [module docs](self) for how it shares `baggage` with OpenTelemetry's
/// `BaggagePropagator`).
///
/// ```
/// use contextvars::propagation::Propagator;
/// use contextvars::ContextVar;
/// use opentelemetry::propagation::TextMapPropagator;
/// use std::collections::HashMap;
///
/// static REQUEST_ID: ContextVar<u64> = ContextVar::new("request_id");
/// let p = Propagator::new().with_var(&REQUEST_ID).with_header("x-request-id", &REQUEST_ID);
/// let mut carrier = HashMap::new();
/// REQUEST_ID.sync_scope(7, || p.inject(&mut carrier));
/// assert_eq!((carrier["baggage"].as_str(), carrier["x-request-id"].as_str()), ("request_id=7", "7"));
/// assert_eq!(TextMapPropagator::fields(&p).collect::<Vec<_>>(), ["baggage", "x-request-id"]);
/// ```
impl TextMapPropagator for Propagator {
    fn inject_context(&self, cx: &opentelemetry::Context, injector: &mut dyn otel::Injector) {
        Propagator::inject(
            self,
            &mut ToOpenTelemetry {
                injector,
                existing: baggage_header(cx),
            },
        );
    }

    fn extract_with_context(
        &self,
        cx: &opentelemetry::Context,
        extractor: &dyn otel::Extractor,
    ) -> opentelemetry::Context {
        cx.with_value(Extracted(Propagator::extract(
            self,
            &FromOpenTelemetry(extractor),
        )))
    }

    fn fields(&self) -> FieldIter<'_> {
        FieldIter::new(Propagator::fields(self))
    }
}
