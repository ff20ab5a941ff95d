//! A variable that travels in a header of its own
//! ([`Propagator::with_header`](super::Propagator::with_header)): which
//! values are sent, and how a received one is read into its variable.
//!
//! **Invariant:** a value is sent only if it arrives as written (a valid
//! header value, within [`MAX_HEADER_BYTES`], no surrounding whitespace),
//! and a received one is set only if it fits and parses; anything else is
//! dropped with a warning naming the variable and the header, and never
//! fails or panics.

use super::registry::Travel;

/// The longest value a variable's own header may have, received or sent
/// (W3C's limit for a whole baggage header): a longer one is dropped with a
/// warning rather than parsed.
pub const MAX_HEADER_BYTES: usize = 8192;

/// Why `value` cannot be sent as a header value, if it cannot: what
/// `HeaderValue` would refuse, and what a receiver would read otherwise
/// (surrounding whitespace is not part of an HTTP field value).
pub(super) fn check_header_value(value: &str) -> Result<(), String> {
    if value.len() > MAX_HEADER_BYTES {
        return Err(format!(
            "{} bytes, over the {MAX_HEADER_BYTES}-byte limit",
            value.len()
        ));
    }
    if let Some(c) = value
        .chars()
        .find(|&c| !(c == '\t' || (' '..='~').contains(&c)))
    {
        return Err(format!("{c:?} is not visible ASCII, a space or a tab"));
    }
    if value.starts_with([' ', '\t']) || value.ends_with([' ', '\t']) {
        return Err("leading or trailing whitespace would not arrive".to_string());
    }
    Ok(())
}

/// A variable's own header, received, into the variable (the context being
/// seeded is current); a value that cannot be used is dropped with a
/// warning naming the variable and the header.
pub(super) fn decode_header(travel: &Travel, value: &[u8]) {
    let result = if value.len() > MAX_HEADER_BYTES {
        Err(format!(
            "{} bytes, over the {MAX_HEADER_BYTES}-byte limit",
            value.len()
        ))
    } else {
        match std::str::from_utf8(value) {
            Ok(text) => (travel.decode)(text.trim_matches([' ', '\t']))
                .map_err(|why| format!("value does not parse: {why}")),
            Err(_) => Err("not UTF-8".to_string()),
        }
    };
    if let Err(why) = result {
        crate::report::warn_var(
            travel.name,
            &format!(
                "contextvars: context variable {:?} not received from header {}: {why}",
                travel.name, travel.key,
            ),
        );
    }
}
