//! Context variables for Rust: Python's `contextvars` (PEP 567), native to
//! threads, async tasks on any executor, and thread pools.
//!
//! A [`ContextVar`] is a key, declared once as a `static`. Its value lives in
//! the *current [`Context`]*, which follows the logical flow of the program:
//! every thread has one, [`Context::run`] switches to another for the length of
//! a call, and [`copy_context`] takes an O(1) snapshot to hand to a task,
//! thread or callback ([`wrap`]).
//!
//! ```
//! use contextvars::{ContextVar, copy_context};
//!
//! static REQUEST_ID: ContextVar<u64> = ContextVar::new("request_id");
//!
//! fn log(msg: &str) -> String {
//!     // Deep in the call stack, without a parameter.
//!     format!("[{}] {msg}", REQUEST_ID.get_or(0))
//! }
//!
//! let token = REQUEST_ID.set(42);
//! assert_eq!(log("hello"), "[42] hello");
//!
//! // A copy sees the values of the moment; its own changes stay its own.
//! let ctx = copy_context();
//! ctx.run(|| REQUEST_ID.set(7));
//! assert_eq!(log("still"), "[42] still");
//! assert_eq!(ctx.get(&REQUEST_ID), Some(7));
//!
//! REQUEST_ID.reset(token).unwrap();
//! assert!(REQUEST_ID.get().is_err());
//! ```
//!
//! # Async
//!
//! A value set with [`ContextVar::scope`] holds for a whole future, across
//! every `.await`, whichever worker thread polls it (`tokio::task_local!`'s
//! `scope`; [`ContextVar::sync_scope`] is the closure form). Work spawned
//! with this crate's helpers starts with a copy of the spawner's context;
//! its own writes stay its own. With features `tower` and `http`, each
//! request a server handles runs in a fresh context seeded from its W3C
//! `baggage` header (`tower::ServerLayer`), and outgoing requests carry
//! the current values (`tower::ClientLayer`).
//!
#![cfg_attr(all(feature = "tokio", feature = "tower"), doc = "```")]
#![cfg_attr(not(all(feature = "tokio", feature = "tower")), doc = "```ignore")]
//! use std::convert::Infallible;
//!
//! use contextvars::ContextVar;
//! use contextvars::propagation::Propagator;
//! use contextvars::tower::ServerLayer;
//! use tower::{Layer, ServiceExt};
//!
//! static REQUEST_ID: ContextVar<u64> = ContextVar::new("request_id");
//!
//! async fn log(msg: &str) -> String {
//!     tokio::task::yield_now().await; // any `.await`, any worker thread
//!     format!("[{}] {msg}", REQUEST_ID.get_or(0))
//! }
//!
//! async fn handler(_: http::Request<()>) -> Result<http::Response<String>, Infallible> {
//!     // The id from the request's baggage, without a parameter; a task
//!     // spawned here starts with it, and what it sets stays its own.
//!     let child = contextvars::tokio::spawn(async {
//!         let line = log("child").await;
//!         REQUEST_ID.set(0);
//!         line
//!     });
//!     let child = child.await.unwrap();
//!     Ok(http::Response::new(format!("{child}, {}", log("done").await)))
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! // A scope over a future.
//! let line = REQUEST_ID.scope(7, log("scoped")).await;
//! assert_eq!(line, "[7] scoped");
//! assert!(REQUEST_ID.get().is_err());
//!
//! // A server: every request in its own context.
//! let app = ServerLayer::new(Propagator::new().with_var(&REQUEST_ID))
//!     .layer(tower::service_fn(handler));
//! let request = http::Request::builder().header("baggage", "request_id=42").body(()).unwrap();
//! let response = app.oneshot(request).await.unwrap();
//! assert_eq!(response.into_body().into_inner(), "[42] child, [42] done");
//! # });
//! ```
//!
//! # Features
//!
//! Integrations sit behind features named after what they integrate
//! (`tokio`, `futures`, `rayon`, `tracing`, `http`, `tower`, `serde`,
//! `opentelemetry`; `full` enables them all; the default build has one
//! dependency, the macro-only `pin-project-lite`). The README lists what each adds. How reads, writes and
//! `run` are built, and the invariants they keep: [`docs::architecture`].

#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod baggage;
// The span current at spawn, into spawned work (`tracing::carry_spans`).
mod carry;
pub mod channel;
mod context;
pub mod docs;
mod error;
pub mod future;
mod generator;
mod guard;
mod ids;
pub mod iter;
#[cfg(not(feature = "__bench_internals"))]
mod map;
// Not public API: the map, for the benchmarks only (feature
// `__bench_internals`, outside semver; see Cargo.toml).
#[cfg(feature = "__bench_internals")]
#[doc(hidden)]
pub mod map;
mod merge;
mod misuse;
pub mod observe;
#[cfg(feature = "opentelemetry")]
pub mod opentelemetry;
#[cfg(feature = "opentelemetry_sdk")]
#[cfg_attr(docsrs, doc(cfg(feature = "opentelemetry_sdk")))]
pub mod opentelemetry_sdk;
pub mod prelude;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod propagation;
#[cfg(feature = "python")]
#[cfg_attr(docsrs, doc(cfg(feature = "python")))]
pub mod python;
#[cfg(feature = "rayon")]
#[cfg_attr(docsrs, doc(cfg(feature = "rayon")))]
pub mod rayon;
mod read_cache;
mod refcount;
mod report;
#[cfg(feature = "reqwest")]
#[cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]
pub mod reqwest;
#[cfg(feature = "serde")]
pub mod snapshot;
mod spare;
#[cfg(feature = "futures")]
#[cfg_attr(docsrs, doc(cfg(feature = "futures")))]
pub mod stream;
mod sync;
pub mod thread;
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub mod tokio;
#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub mod tower;
#[cfg(feature = "tracing")]
#[cfg_attr(docsrs, doc(cfg(feature = "tracing")))]
pub mod tracing;
mod value;
mod var;

pub use context::{Context, copy_context, inherited_context, wrap};
pub use error::{AlreadyEntered, AlreadyEnteredError, LookupError, ResetError, ResetFailed};
pub use guard::SetGuard;
pub use merge::{Changes, Fork, MergeError};
pub use misuse::{Misuse, set_misuse_policy};
pub use var::{ContextVar, SyncScopeOutput, Token};

// The drop-counting test value, one file for the unit tests and `tests/`.
#[cfg(test)]
#[path = "../tests/common/counted.rs"]
mod counted;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
