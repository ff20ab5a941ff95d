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

/// The SDK's trace and baggage propagators with this crate's, in the order
/// the docs ask for (`ours_last`) or the other.
fn composite(ours: &Propagator, ours_last: bool) -> TextMapCompositePropagator {
    let mut all: Vec<Box<dyn TextMapPropagator + Send + Sync>> = vec![
        Box::new(TraceContextPropagator::new()),
        Box::new(BaggagePropagator::new()),
    ];
    all.insert(if ours_last { 2 } else { 1 }, Box::new(ours.clone()));
    TextMapCompositePropagator::new(all)
}

/// An OpenTelemetry context as an instrumentation holds it: a span, and a
/// baggage member of OpenTelemetry's own.
fn instrumented() -> opentelemetry::Context {
    opentelemetry::Context::new()
        .with_remote_span_context(span())
        .with_baggage([opentelemetry::baggage::KeyValueMetadata::new(
            "vendor", "x", "ttl=3",
        )])
}

#[test]
fn as_the_global_propagator_the_variables_travel_with_no_code_per_call() {
    let ours = Propagator::new()
        .with_var(&REQUEST_ID)
        .with_header("x-user", &USER);
    opentelemetry::global::set_text_map_propagator(composite(&ours, true));

    // What an instrumentation does on the way out: the global propagator
    // over the current OpenTelemetry context.
    let mut carrier = HashMap::new();
    let _attached = instrumented().attach();
    contextvars::Context::new().run(|| {
        REQUEST_ID.set(7);
        USER.set("ada".into());
        opentelemetry::global::get_text_map_propagator(|p| {
            p.inject_context(&opentelemetry::Context::current(), &mut carrier)
        });
    });
    assert_eq!(carrier["baggage"], "vendor=x;ttl=3,request_id=7");
    assert_eq!(carrier["x-user"], "ada");
    assert!(carrier["traceparent"].contains("4bf92f3577b34da6a3ce929d0e0e4736"));

    // And on the way in.
    let cx = opentelemetry::global::get_text_map_propagator(|p| p.extract(&carrier));
    assert_eq!(cx.span().span_context().trace_id(), span().trace_id());
    assert_eq!(cx.baggage().get("vendor").map(|v| v.as_str()), Some("x"));
    let ctx = ours.extract_context(&cx);
    assert_eq!(
        (ctx.get(&REQUEST_ID), ctx.get(&USER).as_deref()),
        (Some(7), Some("ada")),
        "the variable of a header of its own too, which baggage does not carry"
    );
}

#[test]
fn placed_after_the_baggage_propagator_ours_merges_into_its_header() {
    let ours = Propagator::new().with_var(&REQUEST_ID).with_var(&USER);
    let mut carrier = HashMap::new();
    contextvars::Context::new().run(|| {
        REQUEST_ID.set(7);
        USER.set("a b".into());
        composite(&ours, true).inject_context(&instrumented(), &mut carrier);
    });
    assert_eq!(
        carrier["baggage"], "vendor=x;ttl=3,request_id=7,user=a%20b",
        "OpenTelemetry's member and ours, in one header"
    );

    // A hop that handles it: OpenTelemetry's baggage holds the received
    // members (ours among them), this crate's context the variables; a
    // variable changed in the handler goes out once, with its new value.
    for ours_last in [true, false] {
        let cx = composite(&ours, ours_last).extract(&carrier);
        assert_eq!(
            cx.baggage().get("request_id").map(|v| v.as_str()),
            Some("7"),
            "OpenTelemetry's baggage keeps every member (ours_last: {ours_last})"
        );
        let mut onward = HashMap::new();
        ours.extract_context(&cx).run(|| {
            assert_eq!(REQUEST_ID.get(), Ok(7), "ours_last: {ours_last}");
            REQUEST_ID.set(8);
            composite(&ours, true).inject_context(&cx, &mut onward);
        });
        assert_eq!(
            onward["baggage"], "vendor=x;ttl=3,request_id=8,user=a%20b",
            "ours_last: {ours_last}"
        );
    }
}

#[test]
fn placed_before_the_baggage_propagator_ours_is_overwritten_when_opentelemetry_has_baggage() {
    let ours = Propagator::new().with_var(&REQUEST_ID);
    let inject = |cx: &opentelemetry::Context| {
        let mut carrier = HashMap::new();
        REQUEST_ID.sync_scope(7, || {
            composite(&ours, false).inject_context(cx, &mut carrier)
        });
        carrier
    };
    // OpenTelemetry's propagator writes last, what its context holds; an
    // injector cannot be read back, so ours cannot merge into it.
    assert_eq!(inject(&instrumented())["baggage"], "vendor=x;ttl=3");
    // With no baggage of its own it writes nothing, and ours stays.
    let carrier = inject(&opentelemetry::Context::new().with_remote_span_context(span()));
    assert_eq!(carrier["baggage"], "request_id=7");
    assert!(carrier.contains_key("traceparent"));
}

#[test]
fn without_our_propagator_in_the_chain_extract_context_reads_the_baggage() {
    let ours = Propagator::new().with_var(&REQUEST_ID);
    let carrier = HashMap::from([("baggage".to_string(), "request_id=5".to_string())]);
    let cx = otel().extract(&carrier);
    assert_eq!(ours.extract_context(&cx).get(&REQUEST_ID), Some(5));
    // Each call hands out a context of its own.
    let cx = composite(&ours, true).extract(&carrier);
    let (a, b) = (ours.extract_context(&cx), ours.extract_context(&cx));
    a.run(|| REQUEST_ID.set(6));
    assert_eq!((a.get(&REQUEST_ID), b.get(&REQUEST_ID)), (Some(6), Some(5)));
}
