//! `Propagator::inject`/`extract` over each carrier, side by side in one
//! run: `http::HeaderMap` (the peer), a `HashMap<String, String>`, and the
//! string form (`inject_str`/`extract_str`); then a variable in a header of
//! its own (`with_header`) next to the baggage, over a `HeaderMap`.
//!
//! `extract` reads `baggage: request_id=42,user=ada,other=x` (one member
//! forwarded); `inject` writes two variables and that forwarded member
//! into an empty carrier (made outside the timing).

use std::collections::HashMap;
use std::hint::black_box;

use contextvars::ContextVar;
use contextvars::propagation::Propagator;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};

static REQUEST_ID: ContextVar<u64> = ContextVar::new("request_id");
static USER: ContextVar<String> = ContextVar::new("user");

const RECEIVED: &str = "request_id=42,user=ada,other=x";

fn propagator() -> Propagator {
    Propagator::new().with_var(&REQUEST_ID).with_var(&USER)
}

fn extract(c: &mut Criterion) {
    let mut group = c.benchmark_group("carrier_extract");
    let p = propagator();

    let headers =
        http::HeaderMap::from_iter([("baggage".parse().unwrap(), RECEIVED.parse().unwrap())]);
    assert_eq!(p.extract(&headers).get(&REQUEST_ID), Some(42));
    group.bench_function("header_map", |b| b.iter(|| p.extract(black_box(&headers))));

    let map = HashMap::from([("baggage".to_string(), RECEIVED.to_string())]);
    assert_eq!(p.extract(&map).get(&REQUEST_ID), Some(42));
    group.bench_function("hash_map", |b| b.iter(|| p.extract(black_box(&map))));

    assert_eq!(p.extract_str(RECEIVED).get(&REQUEST_ID), Some(42));
    group.bench_function("str", |b| b.iter(|| p.extract_str(black_box(RECEIVED))));

    let own = propagator().with_header("x-request-id", &REQUEST_ID);
    let mut with_header = headers.clone();
    with_header.insert("x-request-id", "42".parse().unwrap());
    assert_eq!(own.extract(&with_header).get(&REQUEST_ID), Some(42));
    group.bench_function("header_map_with_own_header", |b| {
        b.iter(|| own.extract(black_box(&with_header)))
    });
    group.finish();
}

fn inject(c: &mut Criterion) {
    let mut group = c.benchmark_group("carrier_inject");
    let p = propagator();
    let own = propagator().with_header("x-request-id", &REQUEST_ID);
    // The context of a request being handled: two variables and a member
    // to forward.
    let ctx = p.extract_str(RECEIVED);
    ctx.run(|| {
        let mut headers = http::HeaderMap::new();
        p.inject(&mut headers);
        assert_eq!(headers["baggage"], RECEIVED);
        group.bench_function("header_map", |b| {
            b.iter_batched_ref(
                http::HeaderMap::new,
                |headers| p.inject(headers),
                BatchSize::SmallInput,
            )
        });

        let mut map = HashMap::new();
        p.inject(&mut map);
        assert_eq!(map["baggage"], RECEIVED);
        group.bench_function("hash_map", |b| {
            b.iter_batched_ref(
                HashMap::<String, String>::new,
                |map| p.inject(map),
                BatchSize::SmallInput,
            )
        });

        assert_eq!(p.inject_str().as_deref(), Some(RECEIVED));
        group.bench_function("str", |b| b.iter(|| p.inject_str()));

        group.bench_function("header_map_with_own_header", |b| {
            b.iter_batched_ref(
                http::HeaderMap::new,
                |headers| own.inject(headers),
                BatchSize::SmallInput,
            )
        });
    });
    group.finish();
}

mod common;

criterion_group! {
    name = benches;
    config = common::config();
    targets = extract, inject
}
criterion_main!(benches);
