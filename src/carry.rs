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
#[derive(Clone)]
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

/// A [`Carried`] entered by one call and left by another: tokio's
/// before- and after-poll hooks are two functions, so no guard can span
/// them. It holds what leaving needs (the span's id and its subscriber, the
/// OpenTelemetry guard), not a borrow of the [`Carried`].
#[cfg(all(feature = "tokio", tokio_unstable, not(loom)))]
#[cfg_attr(not(feature = "tracing"), allow(dead_code))]
pub(crate) struct Split {
    #[cfg(feature = "tracing")]
    span: Option<(tracing::Id, tracing::Dispatch)>,
    // Declared after `span`, dropped after the span is exited: the reverse
    // of entering, as in `Carried::run`.
    #[cfg(feature = "opentelemetry")]
    _otel: Option<opentelemetry::ContextGuard>,
}

#[cfg(all(feature = "tokio", tokio_unstable, not(loom)))]
impl Carried {
    /// Attaches the OpenTelemetry context and enters the span, until
    /// [`Split::exit`]: what [`Carried::run`] does around `f`.
    pub(crate) fn enter_split(&self) -> Split {
        #[cfg(feature = "opentelemetry")]
        let _otel = self.otel.as_ref().map(|cx| cx.clone().attach());
        Split {
            // What `Span::enter` does, with what `exit` needs kept apart.
            #[cfg(feature = "tracing")]
            span: self.span.with_subscriber(|(id, dispatch)| {
                dispatch.enter(id);
                (id.clone(), dispatch.clone())
            }),
            #[cfg(feature = "opentelemetry")]
            _otel,
        }
    }
}

#[cfg(all(feature = "tokio", tokio_unstable, not(loom)))]
impl Split {
    /// Exits the span, then detaches the OpenTelemetry context.
    pub(crate) fn exit(self) {
        #[cfg(feature = "tracing")]
        if let Some((id, dispatch)) = &self.span {
            dispatch.exit(id);
        }
    }
}

#[cfg(feature = "tokio")]
thread_local! {
    /// Set while a helper spawns a task whose span is not the spawn hook's
    /// to carry: a [`Carrying`] task carries its own (the hook would enter
    /// it a second time), a detached task carries none.
    static NOT_FOR_HOOKS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `spawn` (a spawn of a [`Carrying`] task) with the task hooks told
/// that the task carries its span itself.
#[cfg(feature = "tokio")]
#[inline]
pub(crate) fn spawning_carrying<R>(spawn: impl FnOnce() -> R) -> R {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            NOT_FOR_HOOKS.with(|c| c.set(self.0));
        }
    }
    let _reset = Reset(NOT_FOR_HOOKS.with(|c| c.replace(true)));
    spawn()
}

/// Runs `spawn` (of a detached task) with the task hooks told to carry
/// nothing into it; with the switch off, just runs it.
#[cfg(feature = "tokio")]
#[inline]
pub(crate) fn spawning_detached<R>(spawn: impl FnOnce() -> R) -> R {
    #[cfg(feature = "tracing")]
    if ON.load(std::sync::atomic::Ordering::Relaxed) {
        return spawning_carrying(spawn);
    }
    spawn()
}

/// [`capture`], for tokio's spawn hook: nothing for a task spawned through
/// [`spawning_carrying`] or [`spawning_detached`].
#[cfg(all(feature = "tokio", tokio_unstable, not(loom)))]
#[inline]
pub(crate) fn capture_for_hook() -> Option<Carried> {
    #[cfg(feature = "tracing")]
    if !ON.load(std::sync::atomic::Ordering::Relaxed)
        || NOT_FOR_HOOKS
            .try_with(std::cell::Cell::get)
            .unwrap_or(false)
    {
        return None;
    }
    capture()
}
