//! The sending side: [`Propagator::inject`] into a carrier and
//! [`Propagator::inject_str`], the current values merged into the
//! `baggage` header already there, then the forwarded members, then the
//! variables' own headers.
//!
//! **Invariant:** `inject` keeps to the W3C limits (a member that does not
//! fit is dropped and costs only itself, with one warning) and keeps every
//! member of the header already there that it does not set, properties
//! included.

use super::carrier::{BAGGAGE, Injector};
use super::own_header::check_header_value;
use super::propagator::Propagator;
use super::registry::FORWARDED;
use crate::baggage::{self, Budget, Dropped};

impl Propagator {
    /// Writes the current values of the registered variables into the
    /// `baggage` header of `carrier`, keeping every member it does not set
    /// as it was (properties included), then the members forwarded from the
    /// request being handled; then the variables that travel in headers of
    /// their own ([`with_header`](Self::with_header)). The header keeps to
    /// the W3C limits: a member that does not fit is dropped, with one
    /// warning naming it.
    ///
    /// `carrier` is any [`Injector`]: an `http::HeaderMap`, a
    /// `HashMap<String, String>`, a message's headers.
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
    pub fn inject<I: Injector + ?Sized>(&self, carrier: &mut I) {
        let existing = carrier.get(BAGGAGE);
        let had = existing.is_some();
        let text = self.baggage_text(existing.as_deref().unwrap_or_default());
        if !text.is_empty() {
            carrier.set(BAGGAGE, text);
        } else if had {
            carrier.remove(BAGGAGE);
        }
        self.inject_headers(carrier);
    }

    /// The `baggage` value to send: the current values of the registered
    /// variables and the members forwarded from the request being handled,
    /// within the W3C limits; `None` if there is nothing to send. The
    /// variables of [`with_header`](Self::with_header) are not in it.
    ///
    /// ```
    /// use contextvars::propagation::Propagator;
    /// use contextvars::ContextVar;
    ///
    /// static USER: ContextVar<String> = ContextVar::new("user");
    /// let p = Propagator::new().with_var(&USER);
    /// assert_eq!(p.inject_str(), None);
    /// assert_eq!(USER.sync_scope("ada l".into(), || p.inject_str()).as_deref(), Some("user=ada%20l"));
    /// ```
    pub fn inject_str(&self) -> Option<String> {
        Some(self.baggage_text(b"")).filter(|text| !text.is_empty())
    }

    /// `existing` (a baggage header) with the current values and the
    /// forwarded members merged in, as `inject` writes it.
    fn baggage_text(&self, existing: &[u8]) -> String {
        let ours = self.current();
        if existing.is_empty() && ours.is_empty() && !self.forwards_any() {
            return String::new();
        }
        let sets = |key: &str| ours.iter().any(|(k, _)| *k == key);
        let mut dropped = Dropped::default();
        // (text as received, key)
        let mut kept = Vec::new();
        baggage::each_member(existing, &mut dropped, |m, _| kept.push((m.raw, m.key)));
        let mut out = Header::default();
        for (raw, key) in &kept {
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
            if !sets(key) && !kept.iter().any(|(_, k)| *k == key) {
                out.push(raw, &mut dropped);
            }
        });
        dropped.warn("sent");
        out.text
    }

    /// Whether the current context holds members to forward, and this
    /// propagator forwards them.
    fn forwards_any(&self) -> bool {
        self.forward && FORWARDED.with(|f| f.is_some_and(|f| !f.is_empty()))
    }

    /// The variables of [`with_header`](Self::with_header), each with a
    /// value that is a valid header value, into `carrier`.
    fn inject_headers<I: Injector + ?Sized>(&self, carrier: &mut I) {
        for travel in &self.reg.headers {
            let Some(value) = (travel.encode)() else {
                continue;
            };
            match check_header_value(&value) {
                Ok(()) => carrier.set(travel.key, value),
                Err(why) => crate::report::warn_var(
                    travel.name,
                    &format!(
                        "contextvars: context variable {:?} not sent in header {}: {why}",
                        travel.name, travel.key,
                    ),
                ),
            }
        }
    }

    /// The current values of the registered variables (key, value), each
    /// with a value.
    pub(crate) fn current(&self) -> Vec<(&'static str, String)> {
        self.reg
            .vars
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
