//! A job queue over a real `nats-server` (started here on a loopback port,
//! stopped at the end): a job queued from inside an HTTP request carries
//! the request's variables in its message headers; the worker, on another
//! connection, handles it in a fresh context whose log lines carry the
//! producer's request id. Missing, malformed and oversized headers each
//! give a warning, and the job is still handled.
#![cfg(all(feature = "tokio", feature = "tower", feature = "tracing"))]

use std::time::Duration;

use contextvars::ContextVar;
use contextvars::propagation::{MAX_HEADER_BYTES, Propagator};
use contextvars::tower::ServerLayer;
use contextvars::tracing::ContextFormat;
use tower::{Layer, ServiceExt};

#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "../examples/job_queue/nats_server.rs"]
mod nats_server;
#[path = "../examples/job_queue/queue.rs"]
mod queue;

static REQUEST_ID: ContextVar<u64> = ContextVar::new("request_id");
static TENANT: ContextVar<String> = ContextVar::new("tenant");

fn propagator() -> Propagator {
    Propagator::new()
        .with_var(&REQUEST_ID)
        .with_header("x-tenant", &TENANT)
}

/// What this test binary logged, through `ContextFormat`.
fn logs() -> &'static common::Captured {
    common::global_log(|log| {
        tracing_subscriber::fmt()
            .event_format(
                ContextFormat::new(tracing_subscriber::fmt::format().without_time())
                    .with_var(&REQUEST_ID)
                    .with_var(&TENANT),
            )
            .with_writer(move || log.clone())
            .finish()
    })
}

/// The log lines written since `mark` (a length of the log).
fn logged_since(mark: usize) -> String {
    logs().since(mark)
}

/// A message's headers, as (name, value) pairs.
type Headers = Vec<(&'static str, String)>;

/// What the worker saw of one job: its payload, and its context's values.
#[derive(Debug, PartialEq)]
struct Handled {
    job: String,
    request_id: Option<u64>,
    tenant: Option<String>,
}

// Needs `nats-server` (Debian: `apt-get install nats-server`), which a
// plain `cargo test` on a fresh machine does not have: `.ci/run` installs
// it and runs this with `--ignored`.
#[test]
#[ignore = "needs nats-server; run with --ignored (CI does)"]
fn jobs_carry_the_producers_context_through_a_real_nats_server() {
    logs();
    let server = nats_server::NatsServer::start();
    let rt = common::runtime();
    rt.block_on(async {
        let producer = async_nats::connect(&server.url).await.unwrap();
        let worker = async_nats::connect(&server.url).await.unwrap();
        let subscriber = worker
            .queue_subscribe(queue::SUBJECT, queue::WORKERS.into())
            .await
            .unwrap();
        worker.flush().await.unwrap();
        let (done, mut handled) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(queue::work(subscriber, propagator(), move |message| {
            let done = done.clone();
            async move {
                let job = String::from_utf8_lossy(&message.payload).into_owned();
                tracing::info!("handling job {job}");
                done.send(Handled {
                    job,
                    request_id: REQUEST_ID.get().ok(),
                    tenant: TENANT.get().ok(),
                })
                .unwrap();
            }
        }));
        let mut next = async || {
            tokio::time::timeout(Duration::from_secs(60), handled.recv())
                .await
                .expect("the job was handled within 60 s")
                .unwrap()
        };

        // Queued from inside an HTTP request: its handler runs in the
        // context `ServerLayer` made from the request's headers.
        let client = producer.clone();
        let app = ServerLayer::new(propagator()).layer(tower::service_fn(
            move |_req: http::Request<()>| {
                let client = client.clone();
                async move {
                    queue::enqueue(&client, &propagator(), "resize-42".into())
                        .await
                        .unwrap();
                    Ok::<_, std::convert::Infallible>(http::Response::new(()))
                }
            },
        ));
        let mark = logs().len();
        let req = http::Request::builder()
            .header("baggage", "request_id=42")
            .header("x-tenant", "acme")
            .body(())
            .unwrap();
        app.oneshot(req).await.unwrap();
        assert_eq!(
            next().await,
            Handled {
                job: "resize-42".into(),
                request_id: Some(42),
                tenant: Some("acme".into())
            }
        );
        let out = logged_since(mark);
        let line = out
            .lines()
            .find(|l| l.contains("handling job resize-42"))
            .unwrap_or_else(|| panic!("{out}"));
        assert!(
            line.starts_with("request_id=42 tenant=acme "),
            "the worker's log line carries the producer's request id: {line}"
        );

        // Each bad case: a warning saying what was lost, and the job still
        // handled with what could be read.
        let oversized = "9".repeat(MAX_HEADER_BYTES + 1);
        // (job, the message's headers if any, what the worker sees, warning)
        let cases: Vec<(&str, Option<Headers>, Handled, &str)> = vec![
            (
                "no-headers",
                None,
                Handled { job: "no-headers".into(), request_id: None, tenant: None },
                "carries none of the context headers",
            ),
            (
                "unrelated-headers",
                Some(vec![("content-type", "text/plain".into())]),
                Handled { job: "unrelated-headers".into(), request_id: None, tenant: None },
                "carries none of the context headers",
            ),
            (
                "malformed",
                Some(vec![
                    ("baggage", "request_id=abc,bad key=1".into()),
                    ("x-tenant", "initech".into()),
                ]),
                Handled { job: "malformed".into(), request_id: None, tenant: Some("initech".into()) },
                "baggage received: 2 member(s) dropped",
            ),
            (
                "oversized-baggage",
                Some(vec![(
                    "baggage",
                    format!("big={},request_id=7", "x".repeat(9000)),
                )]),
                Handled { job: "oversized-baggage".into(), request_id: Some(7), tenant: None },
                "over the W3C limits",
            ),
            (
                "oversized-header",
                Some(vec![("baggage", "request_id=8".into()), ("x-tenant", oversized)]),
                Handled { job: "oversized-header".into(), request_id: Some(8), tenant: None },
                "context variable \"tenant\" not received from header x-tenant: 8193 bytes, over the 8192-byte limit",
            ),
        ];
        for (job, headers, expected, warning) in cases {
            let mark = logs().len();
            match headers {
                None => producer.publish(queue::SUBJECT, job.to_string().into()).await.unwrap(),
                Some(headers) => {
                    let mut map = async_nats::HeaderMap::new();
                    for (name, value) in headers {
                        map.insert(name, value.as_str());
                    }
                    producer
                        .publish_with_headers(queue::SUBJECT, map, job.to_string().into())
                        .await
                        .unwrap()
                }
            }
            assert_eq!(next().await, expected, "{job}");
            let out = logged_since(mark);
            assert!(
                out.lines().any(|l| l.contains("WARN") && l.contains(warning)),
                "{job}: no warning containing {warning:?} in:\n{out}"
            );
            assert!(out.contains(&format!("handling job {job}")), "{out}");
        }
    });
    drop(server);
}

#[test]
fn the_carrier_adapters_merge_and_remove_in_a_nats_header_map() {
    let p = Propagator::new().with_var(&REQUEST_ID);
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("baggage", "team=blue");
    headers.insert("other", "1");
    REQUEST_ID.sync_scope(5, || p.inject(&mut queue::NatsHeadersMut(&mut headers)));
    assert_eq!(
        headers.get("baggage").map(|v| v.as_str()),
        Some("team=blue,request_id=5")
    );
    assert_eq!(
        p.extract(&queue::NatsHeaders(&headers)).get(&REQUEST_ID),
        Some(5)
    );

    // Nothing left to send: the header goes, the others stay.
    headers.insert("baggage", "bad key=1");
    contextvars::Context::new().run(|| p.inject(&mut queue::NatsHeadersMut(&mut headers)));
    assert!(headers.get("baggage").is_none());
    assert_eq!(headers.get("other").map(|v| v.as_str()), Some("1"));
}
