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
//! **Invariant:** `parse(&encode(members))` returns `members` for any keys
//! that are tokens and any values (encoding percent-escapes every byte
//! outside the format's value alphabet, `%` included).

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

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The bytes a value may carry unescaped (`baggage-octet`, minus `%`,
/// which always starts an escape).
fn is_value_octet(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E) && b != b'%'
}

fn percent_decode(raw: &str) -> Result<String, &'static str> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or("truncated percent-escape")?;
                // Exactly two hex digits: `from_str_radix` alone would take "+1".
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return Err("bad percent-escape");
                }
                let hex = std::str::from_utf8(hex).map_err(|_| "bad percent-escape")?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| "bad percent-escape")?);
                i += 3;
            }
            b if is_value_octet(b) => {
                out.push(b);
                i += 1;
            }
            _ => return Err("character not allowed in a value"),
        }
    }
    String::from_utf8(out).map_err(|_| "value is not UTF-8 once decoded")
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

pub(crate) fn parse_member(raw: &str) -> Result<Member, &'static str> {
    let mut parts = raw.split(';');
    let pair = parts.next().unwrap_or_default();
    let (key, value) = pair.split_once('=').ok_or("no `=` between key and value")?;
    let key = key.trim();
    if !is_key(key) {
        return Err("key is not a token");
    }
    let value = percent_decode(value.trim())?;
    let properties = parts
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect();
    Ok(Member {
        key: key.to_string(),
        value,
        properties,
    })
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
    let members = parse_raw(header, &mut dropped)
        .into_iter()
        .map(|(_, m)| m)
        .collect();
    dropped.warn("received");
    members
}

/// The members of `header` that are well formed and fit the limits, each
/// with its text as received (trimmed); the rest are counted in `dropped`.
///
/// Past [`MAX_MEMBERS`] the remaining members are only counted, not parsed,
/// so a hostile header costs one scan.
pub(crate) fn parse_raw<'a>(header: &'a [u8], dropped: &mut Dropped) -> Vec<(&'a str, Member)> {
    let mut members = Vec::new();
    let mut budget = Budget::default();
    for raw in header.split(|&b| b == b',') {
        let Ok(raw) = std::str::from_utf8(raw) else {
            dropped.malformed(&String::from_utf8_lossy(raw), "not UTF-8");
            continue;
        };
        let raw = raw.trim();
        if raw.is_empty() {
            continue;
        }
        if budget.members == MAX_MEMBERS {
            dropped.over_limits(raw);
            continue;
        }
        match parse_member(raw) {
            Ok(member) if budget.take(raw.len()) => members.push((raw, member)),
            Ok(_) => dropped.over_limits(raw),
            Err(why) => dropped.malformed(raw, why),
        }
    }
    members
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
