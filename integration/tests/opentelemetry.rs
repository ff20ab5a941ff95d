//! Registered variables through OpenTelemetry: a round trip through the
//! SDK's `BaggagePropagator` and `TraceContextPropagator` together (the
//! trace context untouched, unknown members and their metadata forwarded),
//! and the header OpenTelemetry writes read by this crate's own `extract`.
#![cfg(feature = "opentelemetry")]

use std::collections::HashMap;

use contextvars::ContextVar;
use contextvars::propagation::Propagator;
use opentelemetry::baggage::BaggageExt;
use opentelemetry::propagation::{TextMapCompositePropagator, TextMapPropagator};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};

static REQUEST_ID: ContextVar<u64> = ContextVar::new("request_id");
static USER: ContextVar<String> = ContextVar::new("user");
static TEAM: ContextVar<String> = ContextVar::new("team");

fn otel() -> TextMapCompositePropagator {
    TextMapCompositePropagator::new(vec![
        Box::new(TraceContextPropagator::new()),
        Box::new(BaggagePropagator::new()),
    ])
}

fn span() -> SpanContext {
    SpanContext::new(
        TraceId::from(0x4bf92f3577b34da6a3ce929d0e0e4736),
        SpanId::from(0x00f067aa0ba902b7),
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    )
}

#[test]
fn variables_round_trip_through_the_sdk_propagators_with_the_trace_context() {
    // A and C register all three; B, in the middle, only the request id.
    let a = Propagator::new()
        .with_var(&REQUEST_ID)
        .with_var(&USER)
        .with_var(&TEAM);
    let b = Propagator::new().with_var(&REQUEST_ID);
    let c = a.clone();

    let mut a_to_b = HashMap::new();
    contextvars::Context::new().run(|| {
        REQUEST_ID.set(7);
        USER.set("ada l, 你好;=%".into());
        TEAM.set("blue".into());
        let cx = opentelemetry::Context::new()
            .with_remote_span_context(span())
            .with_baggage([opentelemetry::baggage::KeyValueMetadata::new(
                "vendor", "x", "ttl=3",
            )]);
        otel().inject_context(&a.inject_context(&cx), &mut a_to_b);
    });
    assert!(a_to_b.contains_key("traceparent") && a_to_b.contains_key("baggage"));

    let mut b_to_c = HashMap::new();
    let at_b = otel().extract(&a_to_b);
    b.extract_context(&at_b).run(|| {
        assert_eq!(REQUEST_ID.get(), Ok(7));
        assert!(
            USER.get().is_err() && TEAM.get().is_err(),
            "B registers neither"
        );
        REQUEST_ID.set(8);
        // B keeps the trace going, with no baggage of its own in `cx`.
        let cx = opentelemetry::Context::new()
            .with_remote_span_context(at_b.span().span_context().clone());
        otel().inject_context(&b.inject_context(&cx), &mut b_to_c);
    });

    let at_c = otel().extract(&b_to_c);
    assert_eq!(
        at_c.span().span_context().trace_id(),
        span().trace_id(),
        "trace context intact"
    );
    let ctx = c.extract_context(&at_c);
    assert_eq!(ctx.get(&REQUEST_ID), Some(8));
    assert_eq!(ctx.get(&USER).as_deref(), Some("ada l, 你好;=%"));
    assert_eq!(ctx.get(&TEAM).as_deref(), Some("blue"), "forwarded by B");
    let vendor = at_c.baggage().get_with_metadata("vendor").cloned();
    assert_eq!(
        vendor.map(|(v, m)| (v.as_str().to_string(), m.as_str().to_string())),
        Some(("x".into(), "ttl=3".into())),
        "an unknown member and its metadata, forwarded"
    );
}

#[test]
fn what_opentelemetry_writes_this_crate_reads_and_back() {
    let p = Propagator::new().with_var(&REQUEST_ID).with_var(&USER);
    let mut carrier = HashMap::new();
    contextvars::Context::new().run(|| {
        REQUEST_ID.set(3);
        USER.set("a b".into());
        otel().inject_context(
            &p.inject_context(&opentelemetry::Context::new()),
            &mut carrier,
        );
    });
    let mut headers = http::HeaderMap::new();
    headers.insert("baggage", carrier["baggage"].parse().unwrap());
    let ctx = p.extract(&headers);
    assert_eq!(
        (ctx.get(&REQUEST_ID), ctx.get(&USER).as_deref()),
        (Some(3), Some("a b"))
    );

    let mut back = http::HeaderMap::new();
    ctx.run(|| p.inject(&mut back));
    let carrier: HashMap<String, String> = HashMap::from([(
        "baggage".to_string(),
        back["baggage"].to_str().unwrap().to_string(),
    )]);
    let cx = otel().extract(&carrier);
    assert_eq!(p.extract_context(&cx).get(&USER).as_deref(), Some("a b"));
}

#[test]
fn a_value_that_does_not_parse_is_dropped_and_the_rest_arrive() {
    let p = Propagator::new().with_var(&REQUEST_ID).with_var(&USER);
    let cx = opentelemetry::Context::new().with_baggage([
        opentelemetry::KeyValue::new("request_id", "not-a-number"),
        opentelemetry::KeyValue::new("user", "bo"),
    ]);
    let ctx = p.clone().forward_unknown(false).extract_context(&cx);
    assert_eq!(
        (ctx.get(&REQUEST_ID), ctx.get(&USER).as_deref()),
        (None, Some("bo"))
    );
    assert_eq!(ctx.len(), 1);
}
