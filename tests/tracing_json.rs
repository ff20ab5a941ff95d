//! Context variables in structured logs: `ContextFormat` over
//! `tracing_subscriber`'s JSON format (every line valid JSON, each variable
//! a typed field), values from hostile baggage escaped in text lines
//! (CWE-117), and `ContextSpanFields` recording variables onto spans.
#![cfg(all(feature = "tracing", feature = "http"))]

mod common;

use contextvars::ContextVar;
use contextvars::propagation::Propagator;
use contextvars::tracing::{ContextFormat, ContextSpanFields};
use tracing_subscriber::layer::SubscriberExt;

static REQUEST_ID: ContextVar<u64> = ContextVar::new("request_id");
static USER: ContextVar<String> = ContextVar::new("user");
static ADMIN: ContextVar<bool> = ContextVar::new("admin");
static RATIO: ContextVar<f64> = ContextVar::new("ratio");

/// What a forger sends: a fake log line and a terminal escape in a value.
const FORGED: &str =
    "user=mallory%0A2026-01-01T00:00:00Z%20INFO%20app:%20admin%20login%20ok%1B[2K%C2%85";
const FORGED_VALUE: &str = "mallory\n2026-01-01T00:00:00Z INFO app: admin login ok\u{1b}[2K\u{85}";

/// The context a request carrying the forged baggage runs in.
fn forged_request() -> contextvars::Context {
    let mut headers = http::HeaderMap::new();
    headers.insert("baggage", format!("{FORGED},request_id=7").parse().unwrap());
    let ctx = Propagator::new()
        .with_var(&USER)
        .with_var(&REQUEST_ID)
        .extract(&headers);
    assert_eq!(ctx.get(&USER).as_deref(), Some(FORGED_VALUE));
    ctx
}

fn capture(subscriber: impl tracing::Subscriber + Send + Sync, f: impl FnOnce()) {
    tracing::subscriber::with_default(subscriber, f);
}

#[test]
fn forged_values_stay_on_their_line_with_no_raw_escapes() {
    let buf = common::Captured::default();
    let writer = buf.clone();
    let format = ContextFormat::new(tracing_subscriber::fmt::format().without_time())
        .with_var(&REQUEST_ID)
        .with_var(&USER);
    let subscriber = tracing_subscriber::fmt()
        .event_format(format)
        .with_writer(move || writer.clone())
        .finish();
    capture(subscriber, || {
        forged_request().run(|| tracing::info!("handled"))
    });
    let text = buf.text();
    assert_eq!(text.lines().count(), 1, "one event, one line: {text:?}");
    assert!(
        !text.chars().any(|c| c.is_control() && c != '\n'),
        "no raw control characters: {text:?}"
    );
    assert!(
        text.starts_with(
            "request_id=7 user=mallory\\n2026-01-01T00:00:00Z INFO app: admin login ok\\u{1b}[2K\\u{85} "
        ),
        "{text:?}"
    );
}

#[test]
fn json_lines_carry_each_variable_as_a_typed_field() {
    let buf = common::Captured::default();
    let writer = buf.clone();
    let format = ContextFormat::json(tracing_subscriber::fmt::format().json())
        .with_var(&REQUEST_ID)
        .with_var(&USER)
        .with_var(&ADMIN)
        .with_var(&RATIO);
    let subscriber = tracing_subscriber::fmt()
        .json()
        .event_format(format)
        .with_writer(move || writer.clone())
        .finish();
    capture(subscriber, || {
        tracing::info!("outside any request");
        forged_request().run(|| {
            ADMIN.set(false);
            RATIO.set(0.25);
            tracing::info!(n = 1, "handled");
            RATIO.set(f64::NAN);
            tracing::warn!("odd ratio");
        });
    });
    let text = buf.text();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        !text.contains('\u{1b}') && !text.contains('\u{85}'),
        "{text:?}"
    );

    let outside = &lines[0];
    assert_eq!(outside["fields"]["message"], "outside any request");
    assert!(
        outside.get("request_id").is_none() && outside.get("user").is_none(),
        "{outside}"
    );

    let handled = &lines[1];
    assert_eq!(handled["fields"]["message"], "handled");
    assert_eq!(handled["fields"]["n"], 1);
    assert_eq!(handled["level"], "INFO");
    assert_eq!(handled["request_id"], serde_json::json!(7), "a number");
    assert_eq!(
        handled["user"],
        serde_json::json!(FORGED_VALUE),
        "a string, exactly"
    );
    assert_eq!(handled["admin"], serde_json::json!(false), "a bool");
    assert_eq!(handled["ratio"], serde_json::json!(0.25));
    assert_eq!(
        lines[2]["ratio"],
        serde_json::json!("NaN"),
        "JSON has no NaN"
    );
}

#[test]
fn json_is_asked_for_by_its_constructor() {
    let render = |format: ContextFormat<_>| {
        let buf = common::Captured::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .event_format(format.with_var(&REQUEST_ID))
            .with_writer(move || writer.clone())
            .finish();
        capture(subscriber, || {
            REQUEST_ID.sync_scope(5, || tracing::info!("x"))
        });
        buf.text()
    };
    let asked = render(ContextFormat::json(
        tracing_subscriber::fmt::format().json(),
    ));
    let v: serde_json::Value = serde_json::from_str(asked.trim()).unwrap();
    assert_eq!(v["request_id"], 5);
    let asked = render(ContextFormat::json(
        tracing_subscriber::fmt::format().json().flatten_event(true),
    ));
    let v: serde_json::Value = serde_json::from_str(asked.trim()).unwrap();
    assert_eq!(
        (v["request_id"].clone(), v["message"].clone()),
        (5.into(), "x".into())
    );
}

#[test]
fn the_span_layer_records_variables_onto_new_spans_as_typed_fields() {
    let buf = common::Captured::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_writer(move || writer.clone())
        .finish()
        .with(
            ContextSpanFields::new()
                .with_var(&REQUEST_ID)
                .with_var(&USER)
                .with_var(&ADMIN),
        );
    capture(subscriber, || {
        forged_request().run(|| {
            ADMIN.set(true);
            let span = tracing::info_span!(
                "handle",
                request_id = tracing::field::Empty,
                user = tracing::field::Empty,
                admin = "given"
            );
            span.in_scope(|| tracing::info!("inside"));
        });
        let span = tracing::info_span!("idle", request_id = tracing::field::Empty);
        span.in_scope(|| tracing::info!("no request"));
    });
    let text = buf.text();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    let span = &lines[0]["span"];
    assert_eq!(span["name"], "handle");
    assert_eq!(
        span["request_id"],
        serde_json::json!(7),
        "recorded as a number: {span}"
    );
    assert_eq!(span["user"], serde_json::json!(FORGED_VALUE));
    assert_eq!(
        span["admin"], "given",
        "a value given where the span is made wins"
    );
    assert!(
        lines[1]["span"].get("request_id").is_none(),
        "no value, nothing recorded"
    );
}
