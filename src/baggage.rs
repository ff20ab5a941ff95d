//! The W3C Baggage header format (`baggage: key=value;prop, key2=value2`),
//! parsed leniently and written strictly (feature `http`).
//!
//! Parsing never fails as a whole: a member that is malformed (bad key, no
//! `=`, bad percent-encoding, a value that is not UTF-8 once decoded) or that
//! would take the list past the W3C limits (180 members, 8,192 bytes) is
//! dropped, costing only itself, and every other member is kept. What one
//! header loses is reported in one `tracing` warning, with counts and the
//! first few names.
//!
//! The receiving side parses without copying: each member is a slice of the
//! header (what is forwarded is that slice, not a re-encoding), and only a
//! value holding a percent-escape is decoded into a string of its own.
//!
//! ```
//! use contextvars::baggage::{encode, parse};
//!
//! let members = parse("user=ada%20l;private, bad key=1, tenant=acme");
//! let kept: Vec<_> = members.iter().map(|m| (m.key.as_str(), m.value.as_str())).collect();
//! assert_eq!(kept, [("user", "ada l"), ("tenant", "acme")]); // the bad member alone is dropped
//! assert_eq!(encode([("user", "ada l")]), "user=ada%20l");
//! ```
//!
//! **Invariant:** `parse(&encode(members))` returns `members` for any keys
//! that are tokens and any values (encoding percent-escapes every byte
//! outside the format's value alphabet, `%` included).

use std::borrow::Cow;
use std::fmt::Write as _;

/// The most members a baggage header may carry (W3C Baggage, "Limits").
pub const MAX_MEMBERS: usize = 180;
/// The most bytes a baggage header may carry (W3C Baggage, "Limits").
pub const MAX_BYTES: usize = 8192;

/// One list member of a baggage header, value percent-decoded.
///
/// ```
/// let members = contextvars::baggage::parse("user=ada%20l;private");
/// assert_eq!(members[0].key, "user");
/// assert_eq!(members[0].value, "ada l");
/// assert_eq!(members[0].properties, ["private"]);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// The member's key (an RFC 7230 token).
    pub key: String,
    /// The member's value, percent-decoded.
    pub value: String,
    /// The member's properties, as written (`;`-separated, trimmed).
    pub properties: Vec<String>,
}

/// The bytes of an RFC 7230 token (`tchar`): a table, as every byte of
/// every key received is looked up.
const TCHARS: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let others = b"!#$%&'*+-.^_`|~";
    let mut i = 0;
    while i < others.len() {
        table[others[i] as usize] = true;
        i += 1;
    }
    table
};

fn is_tchar(b: u8) -> bool {
    TCHARS[usize::from(b)]
}

/// `s.trim()`, the same result, without decoding characters in the usual
/// case: ASCII whitespace is stripped byte by byte, and only an end that
/// is then not ASCII (which may be Unicode whitespace, as `trim` counts
/// it) goes through `trim`.
fn trim(s: &str) -> &str {
    // `char::is_whitespace` of the ASCII characters (unlike
    // `u8::is_ascii_whitespace`, it counts U+000B).
    let space = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r');
    let bytes = s.as_bytes();
    let start = bytes.iter().position(|b| !space(b)).unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !space(b))
        .map_or(start, |i| i + 1);
    // ASCII bytes only were cut, so both ends are character boundaries.
    let s = &s[start..end];
    match (s.as_bytes().first(), s.as_bytes().last()) {
        (Some(first), Some(last)) if !first.is_ascii() || !last.is_ascii() => s.trim(),
        _ => s,
    }
}

/// Which bytes a value may carry unescaped (`baggage-octet`, minus `%`,
/// which always starts an escape): a table, as every byte of every value
/// received is looked up.
const VALUE_OCTETS: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E)
            && b != b'%' as usize;
        b += 1;
    }
    table
};

fn is_value_octet(b: u8) -> bool {
    VALUE_OCTETS[usize::from(b)]
}

/// The value of one hex digit.
fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// `raw` percent-decoded: borrowed when it holds no escape (nearly every
/// value), so receiving one costs no allocation.
fn percent_decode(raw: &str) -> Result<Cow<'_, str>, &'static str> {
    let bytes = raw.as_bytes();
    let Some(first) = bytes.iter().position(|&b| !is_value_octet(b)) else {
        return Ok(Cow::Borrowed(raw));
    };
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(&bytes[..first]);
    let mut i = first;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or("truncated percent-escape")?;
                // Exactly two hex digits: no sign, no other form a number
                // parser would take.
                let (Some(high), Some(low)) = (hex_digit(hex[0]), hex_digit(hex[1])) else {
                    return Err("bad percent-escape");
                };
                out.push(high << 4 | low);
                i += 3;
            }
            b if is_value_octet(b) => {
                out.push(b);
                i += 1;
            }
            _ => return Err("character not allowed in a value"),
        }
    }
    String::from_utf8(out)
        .map(Cow::Owned)
        .map_err(|_| "value is not UTF-8 once decoded")
}

/// Percent-encodes `value` for a baggage header.
///
/// ```
/// assert_eq!(contextvars::baggage::encode_value("a b,c%"), "a%20b%2Cc%25");
/// ```
pub fn encode_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for &b in value.as_bytes() {
        if is_value_octet(b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// One list member as received, borrowing from the header: what the
/// receiving side needs, without copying the member (only a value with a
/// percent-escape is decoded into a string of its own).
#[derive(Debug)]
pub(crate) struct Received<'a> {
    /// The member's text as received, trimmed: what is forwarded.
    pub(crate) raw: &'a str,
    /// The key, trimmed.
    pub(crate) key: &'a str,
    /// The value, percent-decoded.
    pub(crate) value: Cow<'a, str>,
    /// Whatever follows the first `;`, as received (empty if none).
    properties: &'a str,
}

impl<'a> Received<'a> {
    /// The properties, trimmed, empty ones left out.
    pub(crate) fn properties(&self) -> impl Iterator<Item = &'a str> + use<'a> {
        self.properties
            .split(';')
            .map(str::trim)
            .filter(|p| !p.is_empty())
    }

    /// An owned [`Member`].
    pub(crate) fn to_member(&self) -> Member {
        Member {
            key: self.key.to_owned(),
            value: self.value.clone().into_owned(),
            properties: self.properties().map(str::to_owned).collect(),
        }
    }
}

/// Parses one member (trimmed, non-empty, valid UTF-8).
pub(crate) fn parse_received(raw: &str) -> Result<Received<'_>, &'static str> {
    // One pass for the `=` that ends the key and the `;` that ends the
    // value (a `;` first means the pair has no `=`). Both are ASCII, so
    // their positions are character boundaries.
    let bytes = raw.as_bytes();
    let eq = match bytes.iter().position(|&b| b == b'=' || b == b';') {
        Some(i) if bytes[i] == b'=' => i,
        _ => return Err("no `=` between key and value"),
    };
    let semi = bytes[eq..]
        .iter()
        .position(|&b| b == b';')
        .map_or(bytes.len(), |i| eq + i);
    let key = trim(&raw[..eq]);
    if !is_key(key) {
        return Err("key is not a token");
    }
    Ok(Received {
        raw,
        key,
        value: percent_decode(trim(&raw[eq + 1..semi]))?,
        properties: raw.get(semi + 1..).unwrap_or_default(),
    })
}

/// One member, owned (what `Baggage` takes).
#[cfg(feature = "opentelemetry")]
pub(crate) fn parse_member(raw: &str) -> Result<Member, &'static str> {
    parse_received(raw).map(|m| m.to_member())
}

/// Parses a baggage header. Bad members are dropped, good ones kept, in
/// order; a member that would take the list past the W3C limits is dropped
/// and costs only itself. Whatever is dropped is reported in one warning
/// (counts and the first few names), however hostile the header.
///
/// ```
/// use contextvars::baggage::parse;
///
/// let members = parse("key1=value1;property1;property2, key2 = value2, bad key=x");
/// let keys: Vec<&str> = members.iter().map(|m| m.key.as_str()).collect();
/// assert_eq!(keys, ["key1", "key2"]); // "bad key" is not a token: dropped
/// ```
pub fn parse(header: &str) -> Vec<Member> {
    parse_bytes(header.as_bytes())
}

/// Parses a baggage header given as bytes (as an `http` header value may
/// be); a member that is not UTF-8 is dropped like any other bad member.
///
/// ```
/// let members = contextvars::baggage::parse_bytes(b"a=1,b=\xff,c=3");
/// assert_eq!(members.len(), 2);
/// ```
pub fn parse_bytes(header: &[u8]) -> Vec<Member> {
    let mut dropped = Dropped::default();
    let mut members = Vec::new();
    each_member(header, &mut dropped, |m, _| members.push(m.to_member()));
    dropped.warn("received");
    members
}

/// The usual member, `key=value` or `key=value;properties` with nothing
/// around the key and the value and no escape in the value, parsed in one
/// pass from `start` (the byte after a `,`, or 0); with where it ends (its
/// `,`, or the end of the header). `None` for anything else, which
/// `parse_received` then parses: this is only a shortcut to the same
/// result (the tests hold the two to it), as a key of token bytes and a
/// value of value bytes hold no whitespace to trim, `=`, `;` or `,`.
fn parse_plain(text: &str, start: usize) -> Option<(Received<'_>, usize)> {
    let bytes = text.as_bytes();
    let key_len = bytes[start..].iter().take_while(|&&b| is_tchar(b)).count();
    let eq = start + key_len;
    if key_len == 0 || bytes.get(eq) != Some(&b'=') {
        return None;
    }
    let value_len = bytes[eq + 1..]
        .iter()
        .take_while(|&&b| is_value_octet(b))
        .count();
    let semi = eq + 1 + value_len;
    let end = match bytes.get(semi) {
        None | Some(b',') => semi,
        Some(b';') => bytes[semi..]
            .iter()
            .position(|&b| b == b',')
            .map_or(bytes.len(), |i| semi + i),
        Some(_) => return None,
    };
    // Only properties can end in whitespace; the key starts the member.
    // All cut points are ASCII bytes, so character boundaries.
    let raw = trim(&text[start..end]);
    let member = Received {
        raw,
        key: &text[start..eq],
        value: Cow::Borrowed(&text[eq + 1..semi]),
        properties: text.get(semi + 1..start + raw.len()).unwrap_or_default(),
    };
    Some((member, end))
}

/// Calls `f` with each member of `header` that is well formed and fits the
/// limits, in order, borrowed from the header; the rest are counted in
/// `dropped`, which `f` is handed too (to count what it drops itself).
///
/// Past [`MAX_MEMBERS`] the remaining members are only counted, not parsed,
/// so a hostile header costs one scan.
pub(crate) fn each_member<'a>(
    header: &'a [u8],
    dropped: &mut Dropped,
    mut f: impl FnMut(Received<'a>, &mut Dropped),
) {
    // The whole header is checked at once; only one that is not UTF-8 is
    // checked member by member, so that only the members that are not are
    // dropped.
    let text = std::str::from_utf8(header).ok();
    let mut budget = Budget::default();
    let mut start = 0;
    while start <= header.len() {
        let plain = match text {
            Some(text) if budget.members < MAX_MEMBERS => parse_plain(text, start),
            _ => None,
        };
        if let Some((member, end)) = plain {
            start = end + 1;
            if budget.take(member.raw.len()) {
                f(member, dropped);
            } else {
                dropped.over_limits(member.raw);
            }
            continue;
        }
        let end = header[start..]
            .iter()
            .position(|&b| b == b',')
            .map_or(header.len(), |i| start + i);
        let piece = &header[start..end];
        // `,` is ASCII: splitting UTF-8 at it leaves UTF-8.
        let raw = match text {
            Some(text) => Ok(&text[start..end]),
            None => std::str::from_utf8(piece),
        };
        start = end + 1;
        let Ok(raw) = raw else {
            dropped.malformed(&String::from_utf8_lossy(piece), "not UTF-8");
            continue;
        };
        let raw = trim(raw);
        if raw.is_empty() {
            continue;
        }
        if budget.members == MAX_MEMBERS {
            dropped.over_limits(raw);
            continue;
        }
        match parse_received(raw) {
            Ok(member) if budget.take(raw.len()) => f(member, dropped),
            Ok(_) => dropped.over_limits(raw),
            Err(why) => dropped.malformed(raw, why),
        }
    }
}

/// The W3C limits, spent member by member: a member that does not fit is
/// refused without spending anything, so the members after it still can.
#[derive(Default)]
pub(crate) struct Budget {
    members: usize,
    bytes: usize,
}

impl Budget {
    /// Takes room for one member of `len` bytes (plus its `,`), if there is.
    pub(crate) fn take(&mut self, len: usize) -> bool {
        let bytes = self.bytes + len + usize::from(self.members > 0);
        if self.members == MAX_MEMBERS || bytes > MAX_BYTES {
            return false;
        }
        self.members += 1;
        self.bytes = bytes;
        true
    }
}

/// How many names a warning quotes: enough to find the culprit, bounded so
/// a hostile header cannot make the log line large.
const NAMES_QUOTED: usize = 3;
/// How much of one name a warning quotes.
const NAME_CHARS: usize = 40;

/// What was dropped from one header, reported as a single warning: a
/// hostile header must not turn into one log event per member.
#[derive(Default)]
pub(crate) struct Dropped {
    malformed: usize,
    over_limits: usize,
    unparsed: usize,
    names: Vec<String>,
}

impl Dropped {
    fn name(&mut self, member: &str, why: &str) {
        if self.names.len() < NAMES_QUOTED {
            let key = member.split(['=', ';']).next().unwrap_or_default().trim();
            let key: String = key.chars().take(NAME_CHARS).collect();
            self.names.push(format!("{key} ({why})"));
        }
    }

    /// A member that is not well formed.
    pub(crate) fn malformed(&mut self, member: &str, why: &str) {
        self.malformed += 1;
        self.name(member, why);
    }

    /// A well-formed member that does not fit the W3C limits.
    pub(crate) fn over_limits(&mut self, member: &str) {
        self.over_limits += 1;
        self.name(member, "over the W3C limits");
    }

    /// A registered member whose value does not parse as its variable's type.
    pub(crate) fn unparsed(&mut self, key: &str, why: &str) {
        self.unparsed += 1;
        self.name(key, &format!("value does not parse: {why}"));
    }

    /// Emits the one warning, if anything was dropped. `what` says which
    /// side dropped it ("received" or "sent").
    pub(crate) fn warn(&self, what: &str) {
        let total = self.malformed + self.over_limits + self.unparsed;
        if total == 0 {
            return;
        }
        tracing::warn!(
            dropped = total,
            malformed = self.malformed,
            over_limits = self.over_limits,
            unparsed = self.unparsed,
            first = ?self.names,
            "baggage {what}: {total} member(s) dropped (limits: {MAX_MEMBERS} members, {MAX_BYTES} bytes)"
        );
    }
}

/// Whether `key` can be a baggage key: a non-empty RFC 7230 token.
///
/// ```
/// use contextvars::baggage::is_key;
/// assert!(is_key("request_id"));
/// assert!(!is_key("tenant id"));
/// assert!(!is_key("tenánt"));
/// ```
pub fn is_key(key: &str) -> bool {
    !key.is_empty() && key.bytes().all(is_tchar)
}

/// Writes `key=value` pairs as a baggage header, values percent-encoded.
///
/// ```
/// let header = contextvars::baggage::encode([("request_id", "42"), ("user", "ada l")]);
/// assert_eq!(header, "request_id=42,user=ada%20l");
/// ```
pub fn encode<'a>(members: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::new();
    for (key, value) in members {
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(key);
        out.push('=');
        out.push_str(&encode_value(value));
    }
    out
}

#[cfg(test)]
mod tests;
