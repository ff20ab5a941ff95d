//! The tracing span current at spawn — and, with feature `opentelemetry`,
//! OpenTelemetry's current `Context` — carried into the work this crate's
//! helpers start (tasks, blocking jobs, threads, rayon jobs, `wrap`), once
//! switched on with [`carry_spans`](crate::tracing::carry_spans).
//!
//! [`capture`] is called where the helper copies the context, on the
//! spawning thread; [`within`] runs each call of the work, and
//! [`Carrying`] each poll and the drop of a future, with the span entered
//! and the OpenTelemetry context attached, as `tracing::Instrument` does,
//! and exited after. With the switch off, `capture` is one relaxed load
//! and answers `None`, and the helpers spawn exactly what they spawn
//! without this module; without feature `tracing` it is `None` at compile
//! time.
//!
//! **Invariant:** what is carried lives only as long as the work carrying
//! it: a future drops it when it completes, a closure when it is called.

#[cfg(feature = "tokio")]
use std::fmt;
#[cfg(feature = "tokio")]
use std::future::Future;
#[cfg(feature = "tokio")]
use std::pin::Pin;
#[cfg(feature = "tokio")]
use std::task::{Context as TaskContext, Poll};

#[cfg(feature = "tokio")]
use pin_project_lite::pin_project;

/// Whether spawned work carries the span current at spawn.
#[cfg(feature = "tracing")]
pub(crate) static ON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// What one piece of spawned work carries.
#[cfg_attr(not(feature = "tracing"), allow(dead_code))]
pub(crate) struct Carried {
    #[cfg(feature = "tracing")]
    span: tracing::Span,
    #[cfg(feature = "opentelemetry")]
    otel: Option<opentelemetry::Context>,
}

/// The span (and OpenTelemetry context) current now, if carrying is on and
/// there is one to carry.
#[inline]
pub(crate) fn capture() -> Option<Carried> {
    #[cfg(feature = "tracing")]
    {
        if !ON.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        let span = tracing::Span::current();
        // Only a context that holds a span or baggage: attaching one costs
        // more per poll than entering a span, and an empty one carries
        // nothing.
        #[cfg(feature = "opentelemetry")]
        let otel = opentelemetry::Context::map_current(|cx| {
            use opentelemetry::baggage::BaggageExt;
            use opentelemetry::trace::TraceContextExt;
            (cx.has_active_span() || !cx.baggage().is_empty()).then(|| cx.clone())
        });
        #[cfg(feature = "opentelemetry")]
        if span.is_none() && otel.is_none() {
            return None;
        }
        #[cfg(not(feature = "opentelemetry"))]
        if span.is_none() {
            return None;
        }
        Some(Carried {
            span,
            #[cfg(feature = "opentelemetry")]
            otel,
        })
    }
    #[cfg(not(feature = "tracing"))]
    None
}

impl Carried {
    /// Runs `f` with the span entered and the OpenTelemetry context
    /// attached; both are left when `f` returns or unwinds.
    #[inline]
    pub(crate) fn run<R>(&self, f: impl FnOnce() -> R) -> R {
        #[cfg(feature = "opentelemetry")]
        let _attached = self.otel.as_ref().map(|cx| cx.clone().attach());
        #[cfg(feature = "tracing")]
        let _entered = self.span.enter();
        f()
    }
}

/// Runs `f` inside what `carried` holds, if anything.
#[inline]
pub(crate) fn within<R>(carried: &Option<Carried>, f: impl FnOnce() -> R) -> R {
    match carried {
        Some(carried) => carried.run(f),
        None => f(),
    }
}

#[cfg(feature = "tokio")]
pin_project! {
    /// A future polled, and dropped, inside what it carries. Once it
    /// completes, the inner future is dropped (inside it) and then what it
    /// carries. (Only the tokio helpers spawn futures.)
    pub(crate) struct Carrying<F> {
        // `None` once dropped, inside `carried`: at completion or in the
        // drop.
        #[pin]
        inner: Option<F>,
        carried: Option<Carried>,
    }

    impl<F> PinnedDrop for Carrying<F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            let mut inner = this.inner;
            if inner.is_some() {
                within(this.carried, || inner.set(None));
            }
        }
    }
}

#[cfg(feature = "tokio")]
impl<F> Carrying<F> {
    pub(crate) fn new(inner: F, carried: Carried) -> Carrying<F> {
        Carrying {
            inner: Some(inner),
            carried: Some(carried),
        }
    }
}

#[cfg(feature = "tokio")]
impl<F: Future> Future for Carrying<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<F::Output> {
        let this = self.project();
        let mut inner = this.inner;
        assert!(
            inner.is_some(),
            "a spawned future polled after it completed"
        );
        let poll = within(this.carried, || {
            let poll = inner.as_mut().as_pin_mut().expect("checked above").poll(cx);
            if poll.is_ready() {
                // A destructor that panics still leaves `None` behind, so the
                // drop does not drop it again.
                inner.set(None);
            }
            poll
        });
        if poll.is_ready() {
            // Not kept alive past the work: a span closes when its last
            // handle goes.
            *this.carried = None;
        }
        poll
    }
}

#[cfg(feature = "tokio")]
impl<F> fmt::Debug for Carrying<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Carrying")
            .field("carries", &self.carried.is_some())
            .finish_non_exhaustive()
    }
}
