//! What a propagator carries: how each registered variable travels
//! ([`Travel`]: its key, how its value is written and read), the list of
//! them ([`Registry`]), and the variable that holds the members a request
//! forwards ([`FORWARDED`]).
//!
//! **Invariant:** a registry is shared by a propagator's clones and never
//! changed while shared (a propagator copies it before configuring it), so
//! configuring a clone never changes the original.

use std::sync::Arc;

use super::carrier::BAGGAGE;
use crate::ContextVar;

pub(super) type Encode = Arc<dyn Fn() -> Option<String> + Send + Sync>;
pub(super) type Decode = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// The members of the incoming baggage that the receiving service does not
/// register, as received and joined with `,`: what its outgoing requests
/// forward. Internal: a context's listing leaves it out.
pub(super) static FORWARDED: ContextVar<String> = ContextVar::new("baggage (forwarded)").internal();

/// How one variable travels: under `key` (a baggage key, or a header name).
#[derive(Clone)]
pub(super) struct Travel {
    pub(super) name: &'static str,
    pub(super) key: &'static str,
    pub(super) encode: Encode,
    pub(super) decode: Decode,
}

/// What a propagator carries; shared by its clones until one is configured.
#[derive(Clone)]
pub(super) struct Registry {
    /// In the `baggage` header, by baggage key.
    pub(super) vars: Vec<Travel>,
    /// Each in a header of its own, by header name.
    pub(super) headers: Vec<Travel>,
    /// Every header name it writes: `baggage`, then those of `headers`.
    pub(super) fields: Vec<String>,
}

impl Default for Registry {
    fn default() -> Registry {
        Registry {
            vars: Vec::new(),
            headers: Vec::new(),
            fields: vec![BAGGAGE.to_string()],
        }
    }
}
