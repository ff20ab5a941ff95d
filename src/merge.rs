//! [`Fork`]: run something in a copy of the current context, then apply
//! what it changed back to the context it was forked from: the
//! "middleware sets a value inside `call_next`, the caller wants it"
//! pattern that Starlette and FastAPI users hit (fastapi #953).
//!
//! A fork keeps the parent's map as of the fork (`base`, an O(1) copy) and
//! the child's own context. The child's changes are the variables whose
//! value differs between `base` and the child's map now (`Map::changed_ids`,
//! by value identity: set to another value, added, or removed). A merge
//! writes each of them into the current context with the one write path
//! (`write_current`, the misuse check included), one ordinary write per
//! variable, so tokens and observers see them as they see any `set`.
//!
//! **Invariant:** a merge that fails changes nothing. It fails if the
//! current context is not the one the fork was made in, or (unless forced)
//! if the parent also changed a variable the child changed: every check is
//! made before the first write.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use crate::context::observers::Cause;
use crate::context::{Context, ForkLink, current_id_or_base, current_map, write_current};
use crate::future::{FutureExt, InContext};
use crate::ids::name_of;
use crate::map::{Map, VarId};

/// A copy of the current context whose changes can be applied back to it
/// ([`merge`](Fork::merge)), like a child branch merged into its parent.
///
/// The child sees every value of the parent (variables declared
/// [`not_inherited`](crate::ContextVar::not_inherited) included: it is the
/// same flow of work), and its writes stay its own until the merge.
///
/// **Identity and tokens.** The child is a context of its own: a merge
/// happens only in the context the fork was made in (not in a sibling
/// fork's child, not in the parent of the context that forked), and a token
/// crosses the fork only where the fork says it belongs:
/// - a token made in the parent resets in the child (a reset to "no value"
///   there is a removal, which the merge applies);
/// - a token made in the child resets in the parent once the merge has
///   applied that variable's value from this child. Before the merge, or
///   for a variable the merge did not apply (the child left it as it was,
///   or a conflict stopped the merge), it is
///   [`ResetError::DifferentContext`](crate::ResetError::DifferentContext),
///   as a token of a copy is in Python: it would erase a value the parent
///   set after the fork.
///
/// **Conflict.** A variable the child changed (set to another value or
/// removed) is in conflict if the parent's value is no longer the one it
/// had at the fork (the parent set, reset or removed it meanwhile; values
/// are compared by identity, so setting an equal value is a change).
/// [`merge`](Fork::merge) then applies nothing and reports every conflict;
/// [`merge_overwriting`](Fork::merge_overwriting) lets the child win.
///
/// The Starlette/FastAPI pattern: a middleware calls the handler, which
/// sets a value the middleware wants to log afterwards.
///
/// ```
/// use contextvars::{ContextVar, Fork};
///
/// static USER_ID: ContextVar<u64> = ContextVar::new("user_id");
/// static REQUEST_ID: ContextVar<u64> = ContextVar::new("request_id");
///
/// async fn handler() -> &'static str {
///     USER_ID.set(42); // found out by authentication, deep inside
///     "ok"
/// }
///
/// async fn middleware() -> String {
///     REQUEST_ID.set(7);
///     // `call_next`: the handler runs in a copy, so its other writes cannot
///     // leak into the middleware's context by accident ...
///     let mut fork = Fork::new();
///     let response = fork.run_future(handler()).await;
///     // ... and the middleware takes what it changed, on purpose.
///     let changes = fork.merge().expect("the middleware changed nothing meanwhile");
///     assert_eq!(changes.set, ["user_id"]);
///     format!("{response} request={} user={}", REQUEST_ID.get().unwrap(), USER_ID.get().unwrap())
/// }
///
/// # let mut task = std::pin::pin!(middleware());
/// # let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
/// # let std::task::Poll::Ready(line) = task.as_mut().poll(&mut cx) else { panic!() };
/// assert_eq!(line, "ok request=7 user=42");
/// ```
pub struct Fork {
    /// The context the fork was made in, where a merge must happen, and
    /// which tokens of the child reset there once merged.
    link: Arc<ForkLink>,
    /// The parent's map as of the fork.
    base: Map,
    /// The child's context (starts as a copy of `base`).
    child: Context,
}

/// What a [`Fork::merge`] applied to the current context: the names of the
/// variables it set and of those it removed, sorted.
///
/// ```
/// use contextvars::{ContextVar, Fork};
///
/// static A: ContextVar<u8> = ContextVar::new("a");
/// static B: ContextVar<u8> = ContextVar::new("b");
/// let token = B.set(1);
/// let mut fork = Fork::new();
/// fork.run(|| {
///     A.set(1);
///     B.reset(token).unwrap(); // B's set was in the parent: the token works here too
/// });
/// let changes = fork.merge().unwrap();
/// assert_eq!((changes.set, changes.removed), (vec!["a"], vec!["b"]));
/// assert_eq!((A.get().ok(), B.get().ok()), (Some(1), None));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Variables the child set to a value the parent did not have.
    pub set: Vec<&'static str>,
    /// Variables the child removed (reset to "no value").
    pub removed: Vec<&'static str>,
}

/// Why a [`Fork::merge`] applied nothing; the fork comes back with it.
///
/// ```
/// use contextvars::{ContextVar, Fork, MergeError};
///
/// static N: ContextVar<u8> = ContextVar::new("n");
/// let mut fork = Fork::new();
/// fork.run(|| N.set(1));
/// N.set(2); // the parent changed it too
/// let err = fork.merge().unwrap_err();
/// assert!(matches!(&err, MergeError::Conflict { vars, .. } if vars == &["n"]));
/// assert!(err.to_string().contains("`n`"));
/// assert_eq!(N.get(), Ok(2)); // nothing was applied
/// err.into_fork().merge_overwriting().unwrap(); // the child wins
/// assert_eq!(N.get(), Ok(1));
/// ```
pub enum MergeError {
    /// The parent changed these variables since the fork, and so did the
    /// child.
    Conflict {
        /// The variables' names, sorted.
        vars: Vec<&'static str>,
        /// The fork, unchanged (boxed: it is large for an error).
        fork: Box<Fork>,
    },
    /// The current context is not the one the fork was made in (a merge
    /// belongs where the fork was made, as a token's reset does).
    DifferentContext {
        /// The fork, unchanged (boxed: it is large for an error).
        fork: Box<Fork>,
    },
}

impl MergeError {
    /// The fork, unchanged, e.g. to merge it elsewhere or with
    /// [`merge_overwriting`](Fork::merge_overwriting).
    ///
    /// ```
    /// use contextvars::{copy_context, Fork};
    ///
    /// let fork = Fork::new();
    /// let err = copy_context().run(|| fork.merge()).unwrap_err();
    /// assert!(err.into_fork().merge().is_ok());
    /// ```
    pub fn into_fork(self) -> Fork {
        match self {
            MergeError::Conflict { fork, .. } | MergeError::DifferentContext { fork } => *fork,
        }
    }
}

impl fmt::Debug for MergeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MergeError::Conflict { vars, .. } => f
                .debug_struct("Conflict")
                .field("vars", vars)
                .finish_non_exhaustive(),
            MergeError::DifferentContext { .. } => {
                f.debug_struct("DifferentContext").finish_non_exhaustive()
            }
        }
    }
}

impl fmt::Display for MergeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MergeError::Conflict { vars, .. } => {
                let names: Vec<String> = vars.iter().map(|v| format!("`{v}`")).collect();
                write!(
                    f,
                    "cannot merge a fork: the current context also changed {} since the fork; \
                     nothing was applied (use `merge_overwriting` to let the fork's values win)",
                    names.join(", ")
                )
            }
            MergeError::DifferentContext { .. } => f.write_str(
                "cannot merge a fork outside the context it was made in; nothing was applied \
                 (merge it where `Fork::new` was called)",
            ),
        }
    }
}

impl std::error::Error for MergeError {}

impl Fork {
    /// Forks the current context: an O(1) copy for the child, and the
    /// parent's values as of now, to tell the child's changes apart later.
    ///
    /// ```
    /// use contextvars::{ContextVar, Fork};
    ///
    /// static N: ContextVar<u8> = ContextVar::new("n");
    /// N.set(1);
    /// let mut fork = Fork::new();
    /// assert_eq!(fork.run(|| N.get()), Ok(1));
    /// ```
    pub fn new() -> Fork {
        let link = Arc::new(ForkLink::new(current_id_or_base()));
        let base = current_map();
        Fork {
            child: Context::for_fork(base.clone(), link.clone()),
            link,
            base,
        }
    }

    /// Runs `f` in the child's context (its writes stay there until the
    /// merge).
    ///
    /// ```
    /// use contextvars::{ContextVar, Fork};
    ///
    /// static N: ContextVar<u8> = ContextVar::new("n");
    /// let mut fork = Fork::new();
    /// fork.run(|| N.set(1));
    /// assert!(N.get().is_err());
    /// assert_eq!(fork.context().get(&N), Some(1));
    /// ```
    pub fn run<R>(&mut self, f: impl FnOnce() -> R) -> R {
        self.child.run_exclusive(f)
    }

    /// `future`, polled (and dropped) in the child's context; await it, then
    /// merge.
    ///
    /// ```
    /// use contextvars::{ContextVar, Fork};
    ///
    /// static N: ContextVar<u8> = ContextVar::new("n");
    /// let mut fork = Fork::new();
    /// {
    ///     let task = fork.run_future(async { N.set(3); });
    ///     # let mut task = std::pin::pin!(task);
    ///     # let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    ///     # assert!(task.as_mut().poll(&mut cx).is_ready());
    /// } // ... once awaited (and dropped):
    /// fork.merge().unwrap();
    /// assert_eq!(N.get(), Ok(3));
    /// ```
    pub fn run_future<F: Future>(&mut self, future: F) -> InContext<F, &mut Context> {
        future.in_context(&mut self.child)
    }

    /// The child's context, to read.
    ///
    /// ```
    /// assert!(contextvars::Fork::new().context().is_empty());
    /// ```
    pub fn context(&self) -> &Context {
        &self.child
    }

    /// The names of the variables the child changed since the fork (set to
    /// another value, or removed), sorted.
    ///
    /// ```
    /// use contextvars::{ContextVar, Fork};
    ///
    /// static N: ContextVar<u8> = ContextVar::new("n");
    /// let mut fork = Fork::new();
    /// fork.run(|| {
    ///     let token = N.set(1);
    ///     N.reset(token).unwrap(); // back as it was: no change
    /// });
    /// assert!(fork.changed().is_empty());
    /// ```
    pub fn changed(&mut self) -> Vec<&'static str> {
        let mut names: Vec<_> = self.changed_ids().into_iter().map(name_of).collect();
        names.sort_unstable();
        names
    }

    fn changed_ids(&mut self) -> Vec<VarId> {
        Map::changed_ids(&self.base, self.child.map_mut())
    }

    /// Applies the child's changes to the current context, which must be
    /// the one the fork was made in: each variable the child set is set to
    /// the child's value, each it removed is removed, as ordinary writes.
    ///
    /// # Errors
    ///
    /// [`MergeError::Conflict`] if the parent also changed one of those
    /// variables since the fork (see [`Fork`]);
    /// [`MergeError::DifferentContext`] outside the fork's context. Either
    /// way nothing is applied, and the fork comes back in the error.
    ///
    /// ```
    /// use contextvars::{ContextVar, Fork};
    ///
    /// static N: ContextVar<u8> = ContextVar::new("n");
    /// let mut fork = Fork::new();
    /// fork.run(|| N.set(5));
    /// fork.merge().unwrap();
    /// assert_eq!(N.get(), Ok(5));
    /// ```
    pub fn merge(self) -> Result<Changes, MergeError> {
        self.apply(false)
    }

    /// [`merge`](Fork::merge), letting the child's value win where the
    /// parent changed the variable too.
    ///
    /// # Errors
    ///
    /// [`MergeError::DifferentContext`] outside the fork's context; nothing
    /// is applied.
    ///
    /// ```
    /// use contextvars::{ContextVar, Fork};
    ///
    /// static N: ContextVar<u8> = ContextVar::new("n");
    /// let mut fork = Fork::new();
    /// fork.run(|| N.set(1));
    /// N.set(2);
    /// fork.merge_overwriting().unwrap();
    /// assert_eq!(N.get(), Ok(1));
    /// ```
    pub fn merge_overwriting(self) -> Result<Changes, MergeError> {
        self.apply(true)
    }

    fn apply(mut self, overwrite: bool) -> Result<Changes, MergeError> {
        if current_id_or_base() != self.link.parent {
            return Err(MergeError::DifferentContext {
                fork: Box::new(self),
            });
        }
        let changed = self.changed_ids();
        if !overwrite {
            let now = current_map();
            let mut vars: Vec<&'static str> = changed
                .iter()
                .filter(|&&id| match (self.base.get(id), now.get(id)) {
                    (None, None) => false,
                    (Some(a), Some(b)) => !crate::map::Value::ptr_eq(a, b),
                    _ => true,
                })
                .map(|&id| name_of(id))
                .collect();
            drop(now);
            if !vars.is_empty() {
                vars.sort_unstable();
                return Err(MergeError::Conflict {
                    vars,
                    fork: Box::new(self),
                });
            }
        }
        let mut changes = Changes::default();
        let applied = changed.clone();
        for id in changed {
            let name = name_of(id);
            let value = self.child.map_mut().get(id).cloned();
            let set = value.is_some();
            // One ordinary write per variable; what it replaces is dropped
            // here, after the write (outside any lock), in the parent's
            // context, as a `reset` drops what it replaces.
            let replaced = write_current(Some(id), Some((id, Cause::Merge)), |mut w| match value {
                Some(value) => w.insert(id, value),
                None => w.restore(id, None),
            });
            drop(replaced);
            if set {
                changes.set.push(name);
            } else {
                changes.removed.push(name);
            }
        }
        // From here on the child's tokens of these variables reset in the
        // parent (see `ForkLink`).
        self.link.merged(applied);
        changes.set.sort_unstable();
        changes.removed.sort_unstable();
        Ok(changes)
    }
}

impl Default for Fork {
    fn default() -> Fork {
        Fork::new()
    }
}

impl fmt::Debug for Fork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fork")
            .field("child", &self.child)
            .finish_non_exhaustive()
    }
}
