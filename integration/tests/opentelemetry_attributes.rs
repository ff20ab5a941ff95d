//! `contextvars::opentelemetry_sdk::VarAttributes` in a real
//! `SdkTracerProvider`: every span the SDK starts gets the chosen variables
//! of the context current at its start as attributes, typed; spans started
//! in other contexts (threads, a request restored from its headers) get
//! theirs; a variable with no value sets none.
#![cfg(all(feature = "opentelemetry_sdk", feature = "http"))]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use contextvars::ContextVar;
use contextvars::opentelemetry_sdk::VarAttributes;
use contextvars::propagation::Propagator;
use opentelemetry::trace::{Tracer, TracerProvider};
use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanProcessor};

static REQUEST_ID: ContextVar<u64> = ContextVar::new("request_id");
static USER: ContextVar<String> = ContextVar::new("user");
static RETRY: ContextVar<bool> = ContextVar::with_default("retry", false);
static SHARD: ContextVar<u64> = ContextVar::new("shard");

/// Keeps every ended span, as an exporter would receive it.
#[derive(Clone, Debug, Default)]
struct Recorder(Arc<Mutex<Vec<SpanData>>>);

impl SpanProcessor for Recorder {
    fn on_start(&self, _: &mut opentelemetry_sdk::trace::Span, _: &opentelemetry::Context) {}
    fn on_end(&self, span: SpanData) {
        self.0.lock().unwrap().push(span);
    }
    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }
    fn shutdown_with_timeout(&self, _: Duration) -> OTelSdkResult {
        Ok(())
    }
}

impl Recorder {
    /// The attributes of the ended span named `name`, sorted by key.
    fn attributes_of(&self, name: &str) -> Vec<(String, Value)> {
        let spans = self.0.lock().unwrap();
        let span = spans
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no span {name}"));
        let mut attrs: Vec<_> = span
            .attributes
            .iter()
            .map(|kv: &KeyValue| (kv.key.to_string(), kv.value.clone()))
            .collect();
        attrs.sort_by(|a, b| a.0.cmp(&b.0));
        attrs
    }
}

fn provider() -> (SdkTracerProvider, Recorder) {
    let recorder = Recorder::default();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(
            VarAttributes::new()
                .with_var(&REQUEST_ID)
                .with_var_as(&USER, "enduser.id")
                .with_var(&RETRY)
                .with_var(&SHARD),
        )
        .with_span_processor(recorder.clone())
        .build();
    (provider, recorder)
}

#[test]
fn each_span_gets_the_variables_current_at_its_start_typed() {
    let (provider, recorder) = provider();
    let tracer = provider.tracer("test");
    contextvars::Context::new().run(|| {
        REQUEST_ID.set(7);
        USER.set("ada".to_string());
        tracer.in_span("outer", |_| {
            RETRY.set(true);
            SHARD.set(u64::MAX);
            tracer.in_span("inner", |_| {});
            // Another thread, in a copy of this context.
            contextvars::thread::spawn({
                let tracer = provider.tracer("test");
                move || {
                    REQUEST_ID.set(8);
                    tracer.in_span("on a thread", |_| {});
                }
            })
            .join()
            .unwrap();
        });
    });
    contextvars::Context::new().run(|| tracer.in_span("empty context", |_| {}));
    let text = |s: &str| Value::from(s.to_string());
    assert_eq!(
        recorder.attributes_of("outer"),
        [
            ("enduser.id".to_string(), text("ada")),
            ("request_id".to_string(), Value::I64(7)),
            ("retry".to_string(), Value::Bool(false)), // its default
        ]
    );
    assert_eq!(
        recorder.attributes_of("inner"),
        [
            ("enduser.id".to_string(), text("ada")),
            ("request_id".to_string(), Value::I64(7)),
            ("retry".to_string(), Value::Bool(true)),
            // Above i64::MAX: its decimal string.
            ("shard".to_string(), text("18446744073709551615")),
        ]
    );
    assert_eq!(
        recorder.attributes_of("on a thread")[1],
        ("request_id".to_string(), Value::I64(8))
    );
    assert_eq!(
        recorder.attributes_of("empty context"),
        [("retry".to_string(), Value::Bool(false))]
    );
}

#[test]
fn a_request_restored_from_its_headers_gets_its_variables_on_its_spans() {
    let (provider, recorder) = provider();
    let tracer = provider.tracer("test");
    let mut headers = http::HeaderMap::new();
    headers.insert("baggage", "request_id=42,user=grace".parse().unwrap());
    let request = Propagator::new()
        .with_var(&REQUEST_ID)
        .with_var(&USER)
        .extract(&headers);
    request.run(|| tracer.in_span("handler", |_| {}));
    assert_eq!(
        recorder.attributes_of("handler"),
        [
            ("enduser.id".to_string(), Value::from("grace".to_string())),
            ("request_id".to_string(), Value::I64(42)),
            ("retry".to_string(), Value::Bool(false)),
        ]
    );
}
