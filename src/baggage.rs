//! The W3C Baggage header format (`baggage: key=value;prop, key2=value2`),
//! parsed leniently and written strictly (feature `http`).
//!
//! Parsing never fails as a whole: a member that is malformed (bad key, no
//! `=`, bad percent-encoding, a value that is not UTF-8 once decoded) or over
//! the W3C limits (180 members, 8,192 bytes) is dropped with a `tracing`
//! warning that names it, and every good member is kept.
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

fn parse_member(raw: &str) -> Result<Member, &'static str> {
    let mut parts = raw.split(';');
    let pair = parts.next().unwrap_or_default();
    let (key, value) = pair.split_once('=').ok_or("no `=` between key and value")?;
    let key = key.trim();
    if key.is_empty() || !key.bytes().all(is_tchar) {
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

/// Parses a baggage header. Bad members are dropped (with a warning naming
/// each), good ones kept, in order; members past the W3C limits are dropped.
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
    let mut members = Vec::new();
    let mut bytes = 0;
    for raw in header.split(|&b| b == b',') {
        let Ok(raw) = std::str::from_utf8(raw) else {
            tracing::warn!(member = %String::from_utf8_lossy(raw), "baggage member dropped: not UTF-8");
            continue;
        };
        let raw = raw.trim();
        if raw.is_empty() {
            continue;
        }
        bytes += raw.len() + usize::from(!members.is_empty());
        if members.len() == MAX_MEMBERS || bytes > MAX_BYTES {
            tracing::warn!(
                member = raw,
                "baggage member dropped: over the W3C limits of {MAX_MEMBERS} members or {MAX_BYTES} bytes"
            );
            continue;
        }
        match parse_member(raw) {
            Ok(member) => members.push(member),
            Err(why) => tracing::warn!(member = raw, "baggage member dropped: {why}"),
        }
    }
    members
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
