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
//! # With tonic
//!
//! tonic has no baggage of its own; OpenTelemetry's propagators read and
//! write its `MetadataMap` through a small `Injector`/`Extractor` adapter
//! (as in opentelemetry-rust's gRPC example):
//!
//! ```ignore
//! use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
//!
//! struct Meta<'a>(&'a mut tonic::metadata::MetadataMap);
//! impl Injector for Meta<'_> {
//!     fn set(&mut self, key: &str, value: String) {
//!         if let (Ok(k), Ok(v)) = (key.parse::<tonic::metadata::MetadataKey<_>>(), value.parse()) {
//!             self.0.insert(k, v);
//!         }
//!     }
//! }
//! // Client: an interceptor puts the current variables into the request.
//! fn send(mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
//!     let cx = PROPAGATOR.inject_context(&opentelemetry::Context::current());
//!     opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut Meta(req.metadata_mut())));
//!     Ok(req)
//! }
//! // Server: each call runs in a fresh context from the request's metadata
//! // (an `Extractor` over `MetadataMap` reads it the same way).
//! async fn say_hello(&self, req: tonic::Request<HelloRequest>) -> Result<tonic::Response<HelloReply>, tonic::Status> {
//!     let cx = opentelemetry::global::get_text_map_propagator(|p| p.extract(&MetaRead(req.metadata())));
//!     let ctx = PROPAGATOR.extract_context(&cx);
//!     handle(req).in_context(ctx).await // contextvars::prelude::*
//! }
//! ```

use opentelemetry::baggage::{Baggage, BaggageExt};

use crate::Context;
use crate::baggage::{self, Dropped};
use crate::propagation::Propagator;

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

    /// A fresh context from the baggage of `cx` (as an OpenTelemetry
    /// propagator's `extract` returns it); see
    /// [`extract_baggage`](Self::extract_baggage).
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
        self.extract_baggage(cx.baggage())
    }
}
