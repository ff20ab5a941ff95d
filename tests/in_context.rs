//! Streams and sinks inside a context (`StreamExt::in_context`,
//! `InContext::new`): every call of the stream or sink, and its drop, runs
//! inside the context, whichever thread makes it; the caller's context is
//! untouched.
#![cfg(feature = "futures")]

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll, Waker};

use contextvars::future::InContext;
use contextvars::stream::StreamExt as _;
use contextvars::{Context, ContextVar};
use futures::{Sink, SinkExt as _, Stream, StreamExt as _};

static TENANT: ContextVar<&'static str> = ContextVar::new("tenant");
static COUNT: ContextVar<u32> = ContextVar::with_default("count", 0);

fn tenant_context(tenant: &'static str) -> Context {
    let ctx = Context::new();
    ctx.run(|| TENANT.set(tenant));
    ctx
}

fn poll_next<S: Stream + Unpin>(s: &mut S) -> Poll<Option<S::Item>> {
    Pin::new(s).poll_next(&mut TaskContext::from_waker(Waker::noop()))
}

#[test]
fn a_stream_is_polled_in_its_context_on_every_thread_that_polls_it() {
    let stream = futures::stream::repeat_with(|| TENANT.get()).in_context(tenant_context("acme"));
    let stream = Mutex::new(Box::pin(stream));
    let seen: Vec<_> = std::thread::scope(|s| {
        let polls: Vec<_> = (0..4)
            .map(|_| s.spawn(|| poll_next(&mut *stream.lock().unwrap())))
            .collect();
        polls.into_iter().map(|p| p.join().unwrap()).collect()
    });
    assert!(
        seen.iter().all(|p| *p == Poll::Ready(Some(Ok("acme")))),
        "{seen:?}"
    );
    assert!(TENANT.get().is_err());
}

#[test]
fn a_streams_writes_persist_in_a_shared_context_and_stay_out_of_the_callers() {
    let ctx = Arc::new(Context::new());
    let counting = futures::stream::iter(0..5).map(|_| {
        let n = COUNT.get().unwrap() + 1;
        COUNT.set(n);
        n
    });
    let counted: Vec<u32> = futures::executor::block_on(counting.in_context(ctx.clone()).collect());
    assert_eq!(counted, [1, 2, 3, 4, 5]);
    assert_eq!(ctx.get(&COUNT), Some(5));
    assert_eq!(COUNT.get(), Ok(0));
}

#[test]
fn in_current_context_takes_the_copy_when_called() {
    let caller = tenant_context("before");
    let mut stream = caller.run(|| {
        let stream = futures::stream::repeat_with(|| TENANT.get()).in_current_context();
        TENANT.set("after");
        stream
    });
    assert_eq!(poll_next(&mut stream), Poll::Ready(Some(Ok("before"))));
    assert_eq!(caller.get(&TENANT), Some("after"));
}

/// Each call by name, with the tenant it read.
type Calls = Arc<Mutex<Vec<(&'static str, Option<&'static str>)>>>;

/// Records `TENANT` as read by each call made of it, by name.
#[derive(Default)]
struct Recorder {
    calls: Calls,
}

impl Recorder {
    fn record(&self, call: &'static str) {
        self.calls.lock().unwrap().push((call, TENANT.get().ok()));
    }
}

impl Sink<u32> for Recorder {
    type Error = std::convert::Infallible;
    fn poll_ready(self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.record("poll_ready");
        Poll::Ready(Ok(()))
    }
    fn start_send(self: Pin<&mut Self>, _: u32) -> Result<(), Self::Error> {
        self.record("start_send");
        Ok(())
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.record("poll_flush");
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.record("poll_close");
        Poll::Ready(Ok(()))
    }
}

/// A duplex connection: a stream and a sink at once.
impl Stream for Recorder {
    type Item = ();
    fn poll_next(self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<Option<()>> {
        self.record("poll_next");
        Poll::Ready(Some(()))
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.record("drop");
    }
}

#[test]
fn every_call_of_a_sink_and_its_drop_run_in_its_context() {
    let recorder = Recorder::default();
    let calls = recorder.calls.clone();
    let mut sink = InContext::new(recorder, tenant_context("acme"));
    futures::executor::block_on(async {
        sink.send(1).await.unwrap();
        sink.close().await.unwrap();
    });
    drop(sink);
    let acme = Some("acme");
    assert_eq!(
        *calls.lock().unwrap(),
        [
            ("poll_ready", acme),
            ("start_send", acme),
            ("poll_flush", acme),
            ("poll_close", acme),
            ("drop", acme),
        ]
    );
    assert!(TENANT.get().is_err());
}

#[test]
fn a_sink_in_a_shared_context_writes_it() {
    struct Counting;
    impl Sink<u32> for Counting {
        type Error = std::convert::Infallible;
        fn poll_ready(
            self: Pin<&mut Self>,
            _: &mut TaskContext<'_>,
        ) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
        fn start_send(self: Pin<&mut Self>, item: u32) -> Result<(), Self::Error> {
            COUNT.set(COUNT.get().unwrap() + item);
            Ok(())
        }
        fn poll_flush(
            self: Pin<&mut Self>,
            _: &mut TaskContext<'_>,
        ) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(
            self: Pin<&mut Self>,
            _: &mut TaskContext<'_>,
        ) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
    }
    let ctx = Arc::new(Context::new());
    let mut sink = InContext::new(Counting, ctx.clone());
    futures::executor::block_on(sink.send_all(&mut futures::stream::iter([Ok(1), Ok(2), Ok(3)])))
        .unwrap();
    assert_eq!(ctx.get(&COUNT), Some(6));
    assert_eq!(COUNT.get(), Ok(0));
}

#[test]
fn a_stream_that_is_also_a_sink_is_both_in_its_context() {
    let recorder = Recorder::default();
    let calls = recorder.calls.clone();
    let mut duplex = recorder.in_context(tenant_context("acme"));
    assert_eq!(poll_next(&mut duplex), Poll::Ready(Some(())));
    futures::executor::block_on(duplex.feed(7)).unwrap();
    drop(duplex);
    let names: Vec<_> = calls.lock().unwrap().iter().map(|c| c.0).collect();
    assert_eq!(names, ["poll_next", "poll_ready", "start_send", "drop"]);
    assert!(calls.lock().unwrap().iter().all(|c| c.1 == Some("acme")));
}

#[test]
fn a_stream_dropped_unfinished_is_dropped_in_its_context() {
    let recorder = Recorder::default();
    let calls = recorder.calls.clone();
    let stream = recorder.in_context(tenant_context("acme"));
    drop(stream);
    assert_eq!(*calls.lock().unwrap(), [("drop", Some("acme"))]);
}
