//! Context across process boundaries: registered variables travel in the
//! W3C `baggage` HTTP header (feature `http`).
//!
//! A [`Propagator`] lists which variables travel, under which baggage key,
//! and how their values are written and read (`Display`/`FromStr`, or JSON
//! with feature `serde`). [`Propagator::inject`] writes the current values
//! into a `HeaderMap`; [`Propagator::extract`] builds a fresh [`Context`]
//! from one. Python stops at the process boundary; this is where we do not.
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
//! that is malformed or does not parse is dropped, and every other
//! registered member still arrives.

use std::borrow::Cow;
use std::fmt::{self, Display};
use std::str::FromStr;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::baggage::{self, Budget, Dropped};

use crate::{Context, ContextVar};

/// The header name: `baggage`.
pub const BAGGAGE: &str = "baggage";

/// [`BAGGAGE`] as a `HeaderName`: a lookup by `&str` parses the name first,
/// on every request, with or without baggage.
static BAGGAGE_NAME: HeaderName = HeaderName::from_static(BAGGAGE);

type Encode = Arc<dyn Fn() -> Option<String> + Send + Sync>;
type Decode = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// The members of the incoming baggage that the receiving service does not
/// register, as received and joined with `,`: what its outgoing requests
/// forward. Internal: a context's listing leaves it out.
static FORWARDED: ContextVar<String> = ContextVar::new("baggage (forwarded)").internal();

#[derive(Clone)]
struct Travel {
    key: &'static str,
    encode: Encode,
    decode: Decode,
}

/// Which context variables travel between services, and how.
///
/// ```
/// use contextvars::propagation::Propagator;
/// use contextvars::ContextVar;
///
/// static REQUEST_ID: ContextVar<u64> = ContextVar::new("request_id");
/// let propagator = Propagator::new().with_var(&REQUEST_ID);
///
/// // Client side: current values into the outgoing headers.
/// let mut headers = http::HeaderMap::new();
/// REQUEST_ID.sync_scope(42, || propagator.inject(&mut headers));
/// assert_eq!(headers["baggage"], "request_id=42");
///
/// // Server side: a fresh context seeded from the incoming headers.
/// let ctx = propagator.extract(&headers);
/// assert_eq!(ctx.get(&REQUEST_ID), Some(42));
/// ```
///
/// A propagator is cheap to clone, and a clone can be configured further
/// without affecting the original:
///
/// ```
/// use contextvars::propagation::Propagator;
/// use contextvars::ContextVar;
///
/// static REQUEST_ID: ContextVar<u64> = ContextVar::new("request_id");
/// static TENANT: ContextVar<String> = ContextVar::new("tenant");
/// let base = Propagator::new().with_var(&REQUEST_ID);
/// let wider = base.clone().with_var(&TENANT);
/// assert_eq!((base.keys(), wider.keys()), (vec!["request_id"], vec!["request_id", "tenant"]));
/// ```
#[derive(Clone)]
pub struct Propagator {
    vars: Arc<Vec<Travel>>,
    forward: bool,
}

impl Default for Propagator {
    fn default() -> Propagator {
        Propagator {
            vars: Arc::default(),
            forward: true,
        }
    }
}

impl Propagator {
    /// A propagator with no variables.
    ///
    /// ```
    /// let p = contextvars::propagation::Propagator::new();
    /// assert!(p.keys().is_empty());
    /// ```
    pub fn new() -> Propagator {
        Propagator::default()
    }

    /// Registers `var` under its own name, written with `Display` and read
    /// with `FromStr`.
    ///
    /// # Panics
    ///
    /// If the variable's name is not a W3C baggage key (an RFC 7230 token:
    /// no spaces, no non-ASCII letters), which could be sent but never
    /// received: register it with [`with_var_as`](Self::with_var_as) under
    /// a key that is one. The message names the variable.
    ///
    /// ```
    /// use contextvars::propagation::Propagator;
    /// use contextvars::ContextVar;
    ///
    /// static TENANT: ContextVar<String> = ContextVar::new("tenant");
    /// assert_eq!(Propagator::new().with_var(&TENANT).keys(), ["tenant"]);
    /// ```
    #[must_use]
    pub fn with_var<T>(self, var: &'static ContextVar<T>) -> Propagator
    where
        T: Display + FromStr + Send + Sync + 'static,
        T::Err: Display,
    {
        self.with_var_as(var.name(), var)
    }

    /// Registers `var` under the baggage key `key`.
    ///
    /// # Panics
    ///
    /// If `key` is not a W3C baggage key (see [`baggage::is_key`]).
    ///
    /// ```
    /// use contextvars::propagation::Propagator;
    /// use contextvars::ContextVar;
    ///
    /// static REQUEST_ID: ContextVar<u64> = ContextVar::new("request_id");
    /// let p = Propagator::new().with_var_as("rid", &REQUEST_ID);
    /// assert_eq!(p.keys(), ["rid"]);
    /// ```
    #[must_use]
    pub fn with_var_as<T>(self, key: &'static str, var: &'static ContextVar<T>) -> Propagator
    where
        T: Display + FromStr + Send + Sync + 'static,
        T::Err: Display,
    {
        self.register(
            var.name(),
            key,
            Arc::new(move || var.with(|v| v.map(T::to_string))),
            Arc::new(move |s| {
                let value = s.parse::<T>().map_err(|e| e.to_string())?;
                var.set(value);
                Ok(())
            }),
        )
    }

    /// Registers `var` under its own name, travelling as JSON.
    ///
    /// # Panics
    ///
    /// If the variable's name is not a W3C baggage key (see
    /// [`baggage::is_key`]).
    ///
    /// ```
    /// use contextvars::propagation::Propagator;
    /// use contextvars::ContextVar;
    ///
    /// #[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
    /// struct Caller { id: u32, name: String }
    /// static CALLER: ContextVar<Caller> = ContextVar::new("caller");
    ///
    /// let p = Propagator::new().with_var_serde(&CALLER);
    /// let mut headers = http::HeaderMap::new();
    /// CALLER.sync_scope(Caller { id: 1, name: "a b".into() }, || p.inject(&mut headers));
    /// assert_eq!(p.extract(&headers).get(&CALLER), Some(Caller { id: 1, name: "a b".into() }));
    /// ```
    #[cfg(feature = "serde")]
    #[must_use]
    pub fn with_var_serde<T>(self, var: &'static ContextVar<T>) -> Propagator
    where
        T: serde::Serialize + serde::de::DeserializeOwned + Send + Sync + 'static,
    {
        self.register(
            var.name(),
            var.name(),
            Arc::new(move || var.with(|v| v.and_then(|v| serde_json::to_string(v).ok()))),
            Arc::new(move |s| {
                var.set(serde_json::from_str::<T>(s).map_err(|e| e.to_string())?);
                Ok(())
            }),
        )
    }

    fn register(
        mut self,
        name: &'static str,
        key: &'static str,
        encode: Encode,
        decode: Decode,
    ) -> Propagator {
        // Refused here, where the mistake is made: a key that is not a token
        // would be sent and then dropped by every receiver, silently.
        if !baggage::is_key(key) {
            let suggested: String = key
                .chars()
                .map(|c| {
                    if baggage::is_key(c.encode_utf8(&mut [0; 4])) {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            panic!(
                "context variable {name:?} cannot travel as baggage under the key {key:?}: a W3C \
                 baggage key is an RFC 7230 token (ASCII letters, digits and !#$%&'*+-.^_`|~; no \
                 spaces, commas or non-ASCII letters), so every receiver would drop it. Register \
                 it under a key that is one: `Propagator::with_var_as(\"{suggested}\", &VAR)`"
            );
        }
        // A clone shares the list until it is configured: copy it then.
        let vars = Arc::make_mut(&mut self.vars);
        vars.retain(|t| t.key != key);
        vars.push(Travel {
            key,
            encode,
            decode,
        });
        self
    }

    /// Whether members of an incoming request's baggage that this
    /// propagator does not register are forwarded on the outgoing requests
    /// made while handling it (default: yes, as OpenTelemetry's baggage
    /// propagator does).
    ///
    /// On the propagator of a [`ServerLayer`](crate::tower::ServerLayer)
    /// (or whoever calls [`extract`](Self::extract)), `false` keeps nothing
    /// to forward; on a client's, `false` sends nothing forwarded, e.g. for
    /// calls that leave your organisation.
    ///
    /// ```
    /// use contextvars::propagation::Propagator;
    /// use contextvars::ContextVar;
    ///
    /// static REQUEST_ID: ContextVar<u64> = ContextVar::new("request_id");
    /// let mut incoming = http::HeaderMap::new();
    /// incoming.insert("baggage", "request_id=1,team=blue;ttl=3".parse().unwrap());
    ///
    /// for (forward, sent) in [(true, "request_id=1,team=blue;ttl=3"), (false, "request_id=1")] {
    ///     let p = Propagator::new().with_var(&REQUEST_ID).forward_unknown(forward);
    ///     let mut outgoing = http::HeaderMap::new();
    ///     p.extract(&incoming).run(|| p.inject(&mut outgoing));
    ///     assert_eq!(outgoing["baggage"], sent);
    /// }
    /// ```
    pub fn forward_unknown(mut self, forward: bool) -> Propagator {
        self.forward = forward;
        self
    }

    /// The baggage keys that travel.
    ///
    /// ```
    /// assert!(contextvars::propagation::Propagator::new().keys().is_empty());
    /// ```
    pub fn keys(&self) -> Vec<&'static str> {
        self.vars.iter().map(|t| t.key).collect()
    }

    /// Writes the current values of the registered variables into the
    /// `baggage` header, keeping every member it does not set as it was
    /// (properties included), then the members forwarded from the request
    /// being handled. The header keeps to the W3C limits: a member that
    /// does not fit is dropped, with one warning naming it.
    ///
    /// ```
    /// use contextvars::propagation::Propagator;
    /// use contextvars::ContextVar;
    ///
    /// static USER: ContextVar<String> = ContextVar::new("user");
    /// let p = Propagator::new().with_var(&USER);
    /// let mut headers = http::HeaderMap::new();
    /// headers.insert("baggage", "other=1;ttl=3;private".parse().unwrap());
    /// USER.sync_scope("ada l".to_string(), || p.inject(&mut headers));
    /// assert_eq!(headers["baggage"], "other=1;ttl=3;private,user=ada%20l");
    /// ```
    pub fn inject(&self, headers: &mut HeaderMap) {
        let ours = self.current();
        let sets = |key: &str| ours.iter().any(|(k, _)| *k == key);
        let joined = joined(headers).map(Cow::into_owned).unwrap_or_default();
        let mut dropped = Dropped::default();
        // (text as received, key)
        let mut existing = Vec::new();
        baggage::each_member(&joined, &mut dropped, |m, _| existing.push((m.raw, m.key)));
        let mut out = Header::default();
        for (raw, key) in &existing {
            if !sets(key) {
                out.push(raw, &mut dropped);
            }
        }
        for (key, value) in &ours {
            out.push(
                &format!("{key}={}", baggage::encode_value(value)),
                &mut dropped,
            );
        }
        self.each_forwarded(|raw| {
            let key = raw.split_once('=').map_or(raw, |(k, _)| k).trim();
            if !sets(key) && !existing.iter().any(|(_, k)| *k == key) {
                out.push(raw, &mut dropped);
            }
        });
        dropped.warn("sent");
        headers.remove(&BAGGAGE_NAME);
        if out.text.is_empty() {
            return;
        }
        match HeaderValue::from_str(&out.text) {
            Ok(value) => {
                headers.insert(BAGGAGE_NAME.clone(), value);
            }
            Err(_) => {
                tracing::warn!("baggage not sent: the encoded header is not a valid header value")
            }
        }
    }

    /// A fresh context holding the registered variables found in the
    /// `baggage` header(s), and (unless [`forward_unknown(false)`](Self::forward_unknown))
    /// the members it does not register, for [`inject`](Self::inject) to
    /// forward. Members that are bad, do not fit the W3C limits or do not
    /// parse are dropped, reported in one warning; nothing panics.
    ///
    /// ```
    /// use contextvars::propagation::Propagator;
    /// use contextvars::ContextVar;
    ///
    /// static REQUEST_ID: ContextVar<u64> = ContextVar::new("request_id");
    /// let p = Propagator::new().with_var(&REQUEST_ID);
    /// let mut headers = http::HeaderMap::new();
    /// headers.insert("baggage", "request_id=not-a-number".parse().unwrap());
    /// assert!(p.extract(&headers).is_empty());
    /// ```
    pub fn extract(&self, headers: &HeaderMap) -> Context {
        let Some(joined) = joined(headers) else {
            return Context::new();
        };
        let mut dropped = Dropped::default();
        let ctx = self.seed(|seeder| {
            baggage::each_member(&joined, &mut dropped, |m, dropped| {
                seeder.member(m.key, &m.value, || m.raw, dropped);
            });
        });
        dropped.warn("received");
        ctx
    }

    /// A fresh context from the members `feed` hands to its [`Seeder`]:
    /// registered ones decoded into their variables, the rest kept to
    /// forward. `feed` runs inside the fresh context, where the decoded
    /// values are set.
    pub(crate) fn seed(&self, feed: impl FnOnce(&mut Seeder<'_>)) -> Context {
        // Seeding sets at most one entry per registered variable and one for
        // the forwarded members: a root with that much room is filled
        // without being regrown (an allocation and a copy per entry).
        let most = self.vars.len() + usize::from(self.forward);
        let mut ctx = Context::with_room(most.min(crate::map::FLAT_MAX));
        ctx.run_exclusive(|| {
            let mut seeder = Seeder {
                propagator: self,
                forwarded: String::new(),
            };
            feed(&mut seeder);
            if !seeder.forwarded.is_empty() {
                FORWARDED.set(seeder.forwarded);
            }
        });
        ctx
    }

    /// The current values of the registered variables (key, value), each
    /// with a value.
    pub(crate) fn current(&self) -> Vec<(&'static str, String)> {
        self.vars
            .iter()
            .filter_map(|t| Some((t.key, (t.encode)()?)))
            .collect()
    }

    /// Calls `f` with each member the current context forwards (text as
    /// received), unless this propagator does not forward.
    pub(crate) fn each_forwarded(&self, mut f: impl FnMut(&str)) {
        if self.forward {
            FORWARDED.with(|forwarded| {
                forwarded
                    .into_iter()
                    .flat_map(|s| s.split(','))
                    .for_each(&mut f)
            });
        }
    }
}

/// Received members on their way into a fresh context (see
/// [`Propagator::seed`]).
pub(crate) struct Seeder<'a> {
    propagator: &'a Propagator,
    /// The members to forward, as received, joined with `,`.
    forwarded: String,
}

impl Seeder<'_> {
    /// One received member: its key, its decoded value, and its text as
    /// received (asked for only if the member is forwarded). A value that
    /// does not parse is counted in `dropped`.
    pub(crate) fn member<R: AsRef<str>>(
        &mut self,
        key: &str,
        value: &str,
        raw: impl FnOnce() -> R,
        dropped: &mut Dropped,
    ) {
        match self.propagator.vars.iter().find(|t| t.key == key) {
            Some(travel) => {
                if let Err(why) = (travel.decode)(value) {
                    dropped.unparsed(key, &why);
                }
            }
            None if self.propagator.forward => {
                if !self.forwarded.is_empty() {
                    self.forwarded.push(',');
                }
                self.forwarded.push_str(raw().as_ref());
            }
            None => {}
        }
    }
}

/// An outgoing header being built within the W3C limits.
#[derive(Default)]
struct Header {
    text: String,
    budget: Budget,
}

impl Header {
    fn push(&mut self, member: &str, dropped: &mut Dropped) {
        if !self.budget.take(member.len()) {
            dropped.over_limits(member);
            return;
        }
        if !self.text.is_empty() {
            self.text.push(',');
        }
        self.text.push_str(member);
    }
}

/// Every `baggage` header as one list (several headers are one list);
/// `None` if there is none. One header, the usual case, is borrowed.
fn joined(headers: &HeaderMap) -> Option<Cow<'_, [u8]>> {
    let mut values = headers.get_all(&BAGGAGE_NAME).iter();
    let first = values.next()?;
    let Some(second) = values.next() else {
        return Some(Cow::Borrowed(first.as_bytes()));
    };
    let mut all = first.as_bytes().to_vec();
    for value in std::iter::once(second).chain(values) {
        all.push(b',');
        all.extend_from_slice(value.as_bytes());
    }
    Some(Cow::Owned(all))
}

impl fmt::Debug for Propagator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Propagator")
            .field("keys", &self.keys())
            .field("forward_unknown", &self.forward)
            .finish()
    }
}
