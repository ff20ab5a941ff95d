//! The receiving side: [`Propagator::extract`] from a carrier and
//! [`Propagator::extract_str`], which build a fresh context from the
//! received members ([`Seeder`]): registered ones into their variables,
//! the rest kept to forward.
//!
//! **Invariant:** `extract` never fails and never panics on input: a member
//! or header that is malformed or does not parse is dropped, and every
//! other registered value still arrives.

use super::carrier::{BAGGAGE, Extractor};
use super::own_header::decode_header;
use super::propagator::Propagator;
use super::registry::FORWARDED;
use crate::Context;
use crate::baggage::{self, Dropped};

impl Propagator {
    /// A fresh context holding the registered variables found in
    /// `carrier`'s `baggage` header(s) and in their own headers
    /// ([`with_header`](Self::with_header)), and (unless
    /// [`forward_unknown(false)`](Self::forward_unknown)) the baggage
    /// members it does not register, for [`inject`](Self::inject) to
    /// forward. Members and values that are bad, do not fit the limits or
    /// do not parse are dropped, with a warning; nothing panics.
    ///
    /// `carrier` is any [`Extractor`]: an `http::HeaderMap`, a
    /// `HashMap<String, String>`, a message's headers.
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
    pub fn extract<E: Extractor + ?Sized>(&self, carrier: &E) -> Context {
        let received = carrier.get(BAGGAGE);
        if received.is_none() && self.reg.headers.is_empty() {
            return Context::new();
        }
        let mut dropped = Dropped::default();
        let ctx = self.seed(|seeder| {
            if let Some(received) = &received {
                baggage::each_member(received, &mut dropped, |m, dropped| {
                    seeder.member(m.key, &m.value, || m.raw, dropped);
                });
            }
            // After the baggage: a variable's own header wins over its member.
            for travel in &self.reg.headers {
                if let Some(value) = carrier.get(travel.key) {
                    decode_header(travel, &value);
                }
            }
        });
        dropped.warn("received");
        ctx
    }

    /// A fresh context from a received `baggage` value, as
    /// [`extract`](Self::extract) builds it from the header.
    ///
    /// ```
    /// use contextvars::propagation::Propagator;
    /// use contextvars::ContextVar;
    ///
    /// static USER: ContextVar<String> = ContextVar::new("user");
    /// let p = Propagator::new().with_var(&USER);
    /// assert_eq!(p.extract_str("user=ada%20l,team=blue").get(&USER).as_deref(), Some("ada l"));
    /// ```
    pub fn extract_str(&self, baggage: &str) -> Context {
        let mut dropped = Dropped::default();
        let ctx = self.seed(|seeder| {
            baggage::each_member(baggage.as_bytes(), &mut dropped, |m, dropped| {
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
        let most = self.reg.vars.len() + self.reg.headers.len() + usize::from(self.forward);
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
        match self.propagator.reg.vars.iter().find(|t| t.key == key) {
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
