//! Context across process boundaries: registered variables travel in the
//! W3C `baggage` header, and optionally each in a header of its own (feature
//! `http`).
//!
//! A [`Propagator`] lists which variables travel, under which baggage key
//! or header, and how their values are written and read (`Display`/`FromStr`,
//! or JSON with feature `serde`). [`Propagator::inject`] writes the current
//! values into any header carrier (an [`Injector`]: `http::HeaderMap`, a
//! `HashMap<String, String>`, a message's headers);
//! [`Propagator::extract`] builds a fresh [`Context`](crate::Context) from
//! one (an [`Extractor`]). [`Propagator::inject_str`] and
//! [`Propagator::extract_str`] are the same for the baggage value alone.
//! Python stops at the process boundary; this is where we do not.
//!
//! # What travels, what is dropped
//!
//! - A registered variable with a value is sent under its key; one without
//!   a value sends nothing (a member of that key already on the request
//!   stays as it is).
//! - Members on an outgoing request that this propagator does not set are
//!   kept as they were, properties included.
//! - Members of an incoming request that this service does not register are
//!   *forwarded*: kept, as received, in the request's context and sent on
//!   every outgoing request made while handling it (as OpenTelemetry's
//!   baggage propagator does), so a variable that A and C register reaches
//!   C through a B that does not. A service opts out with
//!   [`Propagator::forward_unknown(false)`](Propagator::forward_unknown):
//!   on the server side nothing is kept; on a client, nothing is sent.
//! - Both ends keep to the W3C limits (180 members, 8,192 bytes): a member
//!   that does not fit is dropped and costs only itself. Malformed members
//!   and values that do not parse as their variable's type are dropped too.
//!   Everything one header loses is reported in a single `tracing` warning,
//!   with counts and the first few names.
//!
//! - A variable registered with [`Propagator::with_header`] travels in a
//!   header of its own as well (`x-request-id`), its value as `Display`
//!   writes it. A value that is not a valid header value is not sent; a
//!   received one that is over [`MAX_HEADER_BYTES`] or does not parse is
//!   dropped; each with a warning naming the variable and the header.
//!
//! ```
//! use contextvars::propagation::Propagator;
//! use contextvars::ContextVar;
//!
//! static REQUEST_ID: ContextVar<u64> = ContextVar::new("request_id");
//! let p = Propagator::new().with_var(&REQUEST_ID);
//!
//! // Client side: the current value into the outgoing headers.
//! let mut headers = http::HeaderMap::new();
//! REQUEST_ID.sync_scope(42, || p.inject(&mut headers));
//! assert_eq!(headers["baggage"], "request_id=42");
//! // Server side: a fresh context for the request, from its headers.
//! let ctx = p.extract(&headers);
//! assert_eq!(ctx.run(|| REQUEST_ID.get()), Ok(42));
//! ```
//!
//! **Invariant:** `extract` never fails and never panics on input: a member
//! or header that is malformed or does not parse is dropped, and every other
//! registered value still arrives.

// A file uses only those above it in this list.
// The carrier traits and the `baggage` header's name.
mod carrier;
// What travels: each registered variable, and the forwarded members.
mod registry;
// A variable's own header: which values are sent, which are received.
mod own_header;
// `Propagator` and its configuration.
mod propagator;
// The sending side: `inject`, `inject_str`.
mod inject;
// The receiving side: `extract`, `extract_str`, the seeding of a context.
mod extract;

pub use carrier::{BAGGAGE, Extractor, Injector};
pub use own_header::MAX_HEADER_BYTES;
pub use propagator::Propagator;
