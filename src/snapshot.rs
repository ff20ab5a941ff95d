//! Snapshots that travel (feature `serde`): chosen variables of a context,
//! serialized to JSON (text or bytes) by a producer and restored into a
//! fresh [`Context`] by a worker, for job queues and anything else that
//! crosses a process boundary. Python cannot pickle a `Context`; this is the
//! part of one that can travel.
//!
//! [`Snapshots`] lists the variables that travel, each under its name.
//! Capturing reads them from the current context (the read path, nothing
//! written); restoring makes a new context and `set`s each decoded value in
//! it, so tokens, observers and the misuse check see ordinary writes.
//!
//! ```
//! use contextvars::{ContextVar, snapshot::Snapshots};
//!
//! static TENANT: ContextVar<String> = ContextVar::new("tenant");
//! let snapshots = Snapshots::new().with_var(&TENANT);
//!
//! let json = TENANT.sync_scope("acme".to_string(), || snapshots.capture().to_json()); // producer
//! let ctx = snapshots.restore_json(&json); // worker
//! assert_eq!(ctx.get(&TENANT).as_deref(), Some("acme"));
//! ```
//!
//! With [`carry_spans`](crate::tracing::carry_spans) on (feature
//! `tracing`), a [`Snapshot`] also holds the tracing span current at the
//! capture (and, with feature `opentelemetry`, OpenTelemetry's current
//! `Context`), in process only: [`Snapshots::run`] enters it around the
//! job. A span is a handle into this process's subscriber, so it is not
//! serialized: a snapshot that went through JSON carries variables only
//! (the trace itself crosses processes in its own headers, through
//! OpenTelemetry's propagators).
//!
//! **Invariant:** restoring never fails and never panics on input: an entry
//! that is unknown, cannot be decoded as its variable's type, or a whole
//! input that is malformed or over the size limit, is skipped (all of it, in
//! the last two cases) and named in one warning, and the job still gets a
//! context with every entry that could be restored.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map as JsonMap, Value as Json};

use crate::carry::{self, Carried, within};
use crate::{Context, ContextVar};

/// Inputs larger than this are refused whole by default (see
/// [`Snapshots::max_bytes`]).
pub const DEFAULT_MAX_BYTES: usize = 64 * 1024;

/// How many skipped names a warning quotes, and how much of each.
const QUOTED_NAMES: usize = 8;
const QUOTED_NAME_LEN: usize = 64;

type Capture = Box<dyn Fn() -> Option<Result<Json, String>> + Send + Sync>;
type Restore = Box<dyn Fn(Json) -> Result<(), String> + Send + Sync>;

struct Entry {
    name: &'static str,
    capture: Capture,
    restore: Restore,
}

/// The variables that travel in a snapshot, each under its name: what a
/// producer captures and a worker restores. Build one (typically in a
/// `static LazyLock` or at start-up) and use it on both sides.
///
/// ```
/// use contextvars::{ContextVar, snapshot::Snapshots};
///
/// static TENANT: ContextVar<String> = ContextVar::new("tenant");
/// static USER_ID: ContextVar<u64> = ContextVar::new("user_id");
///
/// let snapshots = Snapshots::new().with_var(&TENANT).with_var(&USER_ID);
///
/// // Producer: inside the request, capture what the job needs.
/// TENANT.set("acme".to_string());
/// USER_ID.set(7);
/// let wire: String = snapshots.capture().to_json();
///
/// // Worker (another thread, process or machine): restore and run the job.
/// let handle = std::thread::spawn(move || {
///     snapshots.restore_json(&wire).run(|| (TENANT.get().unwrap(), USER_ID.get().unwrap()))
/// });
/// assert_eq!(handle.join().unwrap(), ("acme".to_string(), 7));
/// ```
pub struct Snapshots {
    entries: Vec<Entry>,
    max_bytes: usize,
}

impl Default for Snapshots {
    fn default() -> Self {
        Snapshots::new()
    }
}

impl fmt::Debug for Snapshots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshots")
            .field(
                "vars",
                &self.entries.iter().map(|e| e.name).collect::<Vec<_>>(),
            )
            .field("max_bytes", &self.max_bytes)
            .finish()
    }
}

impl Snapshots {
    /// No variables yet; inputs up to [`DEFAULT_MAX_BYTES`].
    ///
    /// ```
    /// let s = contextvars::snapshot::Snapshots::new();
    /// assert!(s.capture().is_empty());
    /// ```
    pub fn new() -> Snapshots {
        Snapshots {
            entries: Vec::new(),
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }

    /// Adds `var`, which travels under its name as JSON.
    ///
    /// # Panics
    ///
    /// If a variable with the same name was added already: on the other
    /// side, the name alone says which variable an entry is for. Give one of
    /// them another name.
    ///
    /// ```
    /// use contextvars::{ContextVar, snapshot::Snapshots};
    ///
    /// static LOCALE: ContextVar<String> = ContextVar::new("locale");
    /// let s = Snapshots::new().with_var(&LOCALE);
    /// LOCALE.set("fr".into());
    /// assert_eq!(s.capture().to_json(), r#"{"locale":"fr"}"#);
    /// ```
    pub fn with_var<T>(mut self, var: &'static ContextVar<T>) -> Snapshots
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        let name = var.name();
        assert!(
            self.entries.iter().all(|e| e.name != name),
            "contextvars: two variables named `{name}` were added to one `Snapshots`; entries \
             travel by name, so give one of them another name"
        );
        self.entries.push(Entry {
            name,
            capture: Box::new(move || {
                // The context's own value: a default is not captured.
                let id = var.id();
                crate::context::read_current(
                    id,
                    var.addr(),
                    || id,
                    |v| {
                        v.map(|v| {
                            let v = v
                                .downcast::<T>()
                                .expect("a variable's id always maps to its type");
                            serde_json::to_value(v).map_err(|e| e.to_string())
                        })
                    },
                )
            }),
            restore: Box::new(move |json| {
                let value = serde_json::from_value::<T>(json).map_err(|e| e.to_string())?;
                var.set(value);
                Ok(())
            }),
        });
        self
    }

    /// Refuses inputs to [`restore_json`](Snapshots::restore_json) /
    /// [`restore_bytes`](Snapshots::restore_bytes) longer than `max` bytes
    /// (a warning, and an empty context), so a hostile or broken producer
    /// cannot make a worker parse without bound.
    ///
    /// ```
    /// use contextvars::snapshot::Snapshots;
    ///
    /// let s = Snapshots::new().max_bytes(16);
    /// let (ctx, skipped) = s.restore_bytes_report(&[b' '; 17]);
    /// assert!(ctx.is_empty());
    /// assert!(skipped.to_string().contains("17 bytes"));
    /// ```
    pub fn max_bytes(mut self, max: usize) -> Snapshots {
        self.max_bytes = max;
        self
    }

    /// The listed variables' values in the current context (variables with
    /// no value, or only a default, are left out). A value that cannot be
    /// serialized is left out, with a warning naming its variable.
    ///
    /// ```
    /// use contextvars::{ContextVar, snapshot::Snapshots};
    ///
    /// static N: ContextVar<u32> = ContextVar::with_default("n", 1);
    /// let s = Snapshots::new().with_var(&N);
    /// assert!(s.capture().is_empty()); // a default is not a value
    /// N.set(2);
    /// assert_eq!(s.capture().names().collect::<Vec<_>>(), ["n"]);
    /// ```
    pub fn capture(&self) -> Snapshot {
        let mut entries = JsonMap::new();
        let mut skipped = Skipped::default();
        for e in &self.entries {
            match (e.capture)() {
                None => {}
                Some(Ok(json)) => {
                    entries.insert(e.name.to_string(), json);
                }
                Some(Err(why)) => skipped.push(e.name, format!("cannot be serialized: {why}")),
            }
        }
        skipped.warn("captured");
        Snapshot {
            entries,
            malformed: None,
            carried: carry::capture(),
        }
    }

    /// Runs `job` in a fresh context restored from `snapshot` (as
    /// [`restore`](Snapshots::restore)), with the span the snapshot carries
    /// entered around it when it was captured in this process with
    /// [`carry_spans`](crate::tracing::carry_spans) on. The snapshot, and
    /// with it the span, is dropped when `job` returns.
    ///
    /// ```
    /// use contextvars::{ContextVar, snapshot::Snapshots};
    ///
    /// static TENANT: ContextVar<String> = ContextVar::new("tenant");
    /// let snapshots = Snapshots::new().with_var(&TENANT);
    /// let snap = TENANT.sync_scope("acme".to_string(), || snapshots.capture());
    /// assert_eq!(snapshots.run(snap, || TENANT.get()).as_deref(), Ok("acme"));
    /// ```
    pub fn run<R>(&self, snapshot: Snapshot, job: impl FnOnce() -> R) -> R {
        let ctx = self.restore(&snapshot);
        within(&snapshot.carried, || ctx.run(job))
    }

    /// A fresh context holding the snapshot's entries; whatever cannot be
    /// restored is skipped with one warning naming it (see
    /// [`restore_report`](Snapshots::restore_report)).
    ///
    /// ```
    /// use contextvars::{ContextVar, snapshot::{Snapshot, Snapshots}};
    ///
    /// static N: ContextVar<u32> = ContextVar::new("n");
    /// let s = Snapshots::new().with_var(&N);
    /// let snap: Snapshot = serde_json::from_str(r#"{"n": 5, "unknown": 1}"#).unwrap();
    /// assert_eq!(s.restore(&snap).get(&N), Some(5));
    /// ```
    pub fn restore(&self, snapshot: &Snapshot) -> Context {
        let (ctx, skipped) = self.restore_report(snapshot);
        skipped.warn("restored");
        ctx
    }

    /// [`restore`](Snapshots::restore), returning what was skipped instead
    /// of warning about it.
    ///
    /// ```
    /// use contextvars::{ContextVar, snapshot::{Snapshot, Snapshots}};
    ///
    /// static N: ContextVar<u32> = ContextVar::new("n");
    /// let s = Snapshots::new().with_var(&N);
    /// let snap: Snapshot = serde_json::from_str(r#"{"n": "five", "who": 1}"#).unwrap();
    /// let (ctx, skipped) = s.restore_report(&snap);
    /// assert!(ctx.is_empty());
    /// let names: Vec<_> = skipped.entries().map(|(name, _)| name).collect();
    /// assert_eq!(names, ["n", "who"]);
    /// ```
    pub fn restore_report(&self, snapshot: &Snapshot) -> (Context, Skipped) {
        let mut skipped = Skipped::default();
        if let Some(what) = &snapshot.malformed {
            skipped.push("(whole snapshot)", format!("not a JSON object: {what}"));
        }
        let ctx = Context::new();
        ctx.run(|| {
            for (name, json) in &snapshot.entries {
                match self.entries.iter().find(|e| e.name == name) {
                    None => skipped.push(name, "unknown variable".to_string()),
                    Some(e) => {
                        if let Err(why) = (e.restore)(json.clone()) {
                            skipped.push(name, format!("cannot be decoded: {why}"));
                        }
                    }
                }
            }
        });
        (ctx, skipped)
    }

    /// [`restore`](Snapshots::restore) from JSON text, as made by
    /// [`Snapshot::to_json`]. Malformed or oversized input gives an empty
    /// context and a warning, never an error.
    ///
    /// ```
    /// use contextvars::{ContextVar, snapshot::Snapshots};
    ///
    /// static N: ContextVar<u32> = ContextVar::new("n");
    /// let s = Snapshots::new().with_var(&N);
    /// assert_eq!(s.restore_json(r#"{"n": 3}"#).get(&N), Some(3));
    /// assert!(s.restore_json(r#"{"n": 3"#).is_empty()); // truncated: warned, empty
    /// ```
    pub fn restore_json(&self, json: &str) -> Context {
        self.restore_bytes(json.as_bytes())
    }

    /// [`restore_json`](Snapshots::restore_json) from bytes, as made by
    /// [`Snapshot::to_bytes`].
    ///
    /// ```
    /// use contextvars::{ContextVar, snapshot::Snapshots};
    ///
    /// static N: ContextVar<u32> = ContextVar::new("n");
    /// let s = Snapshots::new().with_var(&N);
    /// N.set(4);
    /// let bytes = s.capture().to_bytes();
    /// assert_eq!(s.restore_bytes(&bytes).get(&N), Some(4));
    /// ```
    pub fn restore_bytes(&self, bytes: &[u8]) -> Context {
        let (ctx, skipped) = self.restore_bytes_report(bytes);
        skipped.warn("restored");
        ctx
    }

    /// [`restore_bytes`](Snapshots::restore_bytes), returning what was
    /// skipped instead of warning about it.
    ///
    /// ```
    /// use contextvars::snapshot::Snapshots;
    ///
    /// let (ctx, skipped) = Snapshots::new().restore_bytes_report(b"[1, 2");
    /// assert!(ctx.is_empty());
    /// assert!(!skipped.is_empty());
    /// ```
    pub fn restore_bytes_report(&self, bytes: &[u8]) -> (Context, Skipped) {
        if bytes.len() > self.max_bytes {
            let mut skipped = Skipped::default();
            skipped.push(
                "(whole snapshot)",
                format!(
                    "{} bytes, over the limit of {} (`Snapshots::max_bytes`)",
                    bytes.len(),
                    self.max_bytes
                ),
            );
            return (Context::new(), skipped);
        }
        match serde_json::from_slice::<Snapshot>(bytes) {
            Ok(snapshot) => self.restore_report(&snapshot),
            Err(e) => {
                let mut skipped = Skipped::default();
                skipped.push("(whole snapshot)", format!("malformed JSON: {e}"));
                (Context::new(), skipped)
            }
        }
    }
}

/// Captured values by variable name, as JSON: what travels.
///
/// It serializes as a JSON object of name to value, so it can be a field of
/// a job's own serializable struct. Deserializing one never fails on
/// content, so a broken snapshot never fails the job that carries it: a
/// value that is not an object is kept as "malformed" and reported when
/// restored.
///
/// ```
/// use contextvars::snapshot::Snapshot;
///
/// #[derive(serde::Deserialize)]
/// struct Job {
///     payload: u32,
///     context: Snapshot,
/// }
/// let job: Job = serde_json::from_str(r#"{"payload": 1, "context": "garbage"}"#).unwrap();
/// assert_eq!(job.payload, 1);
/// assert!(job.context.is_empty());
/// ```
///
/// Captured in this process with
/// [`carry_spans`](crate::tracing::carry_spans) on, it also holds the span
/// current at the capture, for [`Snapshots::run`]; that part is neither
/// serialized nor compared (`==` compares entries).
#[derive(Clone, Default)]
pub struct Snapshot {
    entries: JsonMap<String, Json>,
    /// What the input was instead of an object.
    malformed: Option<String>,
    /// In process only: never serialized.
    carried: Option<Carried>,
}

impl PartialEq for Snapshot {
    fn eq(&self, other: &Snapshot) -> bool {
        self.entries == other.entries && self.malformed == other.malformed
    }
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Snapshot");
        d.field("entries", &self.entries)
            .field("malformed", &self.malformed);
        if self.carried.is_some() {
            d.field("carries_span", &true);
        }
        d.finish()
    }
}

impl Snapshot {
    /// The snapshot as JSON text.
    ///
    /// ```
    /// assert_eq!(contextvars::snapshot::Snapshot::default().to_json(), "{}");
    /// ```
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.entries).expect("a JSON map always serializes")
    }

    /// The snapshot as JSON bytes.
    ///
    /// ```
    /// assert_eq!(contextvars::snapshot::Snapshot::default().to_bytes(), b"{}");
    /// ```
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&self.entries).expect("a JSON map always serializes")
    }

    /// The names of the entries.
    ///
    /// ```
    /// let snap: contextvars::snapshot::Snapshot = serde_json::from_str(r#"{"a": 1}"#).unwrap();
    /// assert_eq!(snap.names().collect::<Vec<_>>(), ["a"]);
    /// ```
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// How many entries it holds.
    ///
    /// ```
    /// assert_eq!(contextvars::snapshot::Snapshot::default().len(), 0);
    /// ```
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds no entry.
    ///
    /// ```
    /// assert!(contextvars::snapshot::Snapshot::default().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl Serialize for Snapshot {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.entries.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Snapshot {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Snapshot, D::Error> {
        Ok(match Json::deserialize(d)? {
            Json::Object(entries) => Snapshot {
                entries,
                malformed: None,
                carried: None,
            },
            other => Snapshot {
                carried: None,
                entries: JsonMap::new(),
                malformed: Some(
                    match other {
                        Json::Null => "null",
                        Json::Bool(_) => "a boolean",
                        Json::Number(_) => "a number",
                        Json::String(_) => "a string",
                        Json::Array(_) => "an array",
                        Json::Object(_) => unreachable!(),
                    }
                    .to_string(),
                ),
            },
        })
    }
}

/// What a restore (or a capture) skipped: each entry's name and why.
/// `Display` is the one warning [`Snapshots::restore`] emits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Skipped {
    entries: Vec<(String, String)>,
}

impl Skipped {
    fn push(&mut self, name: &str, mut why: String) {
        // A decoding error may quote the input: keep the warning short.
        if why.len() > 200 {
            let mut end = 200;
            while !why.is_char_boundary(end) {
                end -= 1;
            }
            why.truncate(end);
            why.push('…');
        }
        self.entries.push((name.to_string(), why));
    }

    /// Whether nothing was skipped.
    ///
    /// ```
    /// assert!(contextvars::snapshot::Skipped::default().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Each skipped entry: its name and why it was skipped.
    ///
    /// ```
    /// let s = contextvars::snapshot::Snapshots::new();
    /// let (_, skipped) = s.restore_bytes_report(br#"{"x": 1}"#);
    /// assert_eq!(skipped.entries().collect::<Vec<_>>(), [("x", "unknown variable")]);
    /// ```
    pub fn entries(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(n, w)| (n.as_str(), w.as_str()))
    }

    fn warn(&self, what: &str) {
        if !self.is_empty() {
            crate::report::warn(&format!("contextvars: snapshot {what} in part: {self}"));
        }
    }
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} entr", self.entries.len())?;
        f.write_str(if self.entries.len() == 1 { "y" } else { "ies" })?;
        f.write_str(" skipped: ")?;
        for (i, (name, why)) in self.entries.iter().take(QUOTED_NAMES).enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            let short: String = name.chars().take(QUOTED_NAME_LEN).collect();
            let more = if short.len() < name.len() { "…" } else { "" };
            // Names come from the input: quoted escaped, so one warning
            // stays one line.
            write!(f, "{:?}{more}: {}", short, why.escape_debug())?;
        }
        if self.entries.len() > QUOTED_NAMES {
            write!(f, "; and {} more", self.entries.len() - QUOTED_NAMES)?;
        }
        Ok(())
    }
}
