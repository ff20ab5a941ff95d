//! The crate's error types. Each message names the variable (or context)
//! involved and says what to do about it.
//!
//! **Invariant:** an operation that returns one of these errors has changed
//! nothing.

use std::fmt;

/// A variable was read with [`ContextVar::get`](crate::ContextVar::get) while
/// it has no value in the current context and no default.
///
/// ```
/// use contextvars::ContextVar;
///
/// static USER: ContextVar<String> = ContextVar::new("user");
/// let err = USER.get().unwrap_err();
/// assert_eq!(err.var_name(), "user");
/// assert!(err.to_string().contains("`user`"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LookupError {
    pub(crate) var: &'static str,
}

impl LookupError {
    /// The name of the variable that has no value (as
    /// [`Token::var_name`](crate::Token::var_name) names a token's).
    ///
    /// ```
    /// use contextvars::ContextVar;
    ///
    /// static USER: ContextVar<String> = ContextVar::new("user");
    /// assert_eq!(USER.get().unwrap_err().var_name(), "user");
    /// ```
    pub fn var_name(&self) -> &'static str {
        self.var
    }

    /// The former name of [`var_name`](LookupError::var_name), kept so
    /// existing code compiles; to be marked `#[deprecated]` and removed
    /// before 1.0. Use `var_name`.
    ///
    /// ```
    /// use contextvars::ContextVar;
    ///
    /// static USER: ContextVar<String> = ContextVar::new("user");
    /// let err = USER.get().unwrap_err();
    /// # #[allow(deprecated)]
    /// assert_eq!(err.var(), err.var_name());
    /// ```
    #[deprecated(since = "0.1.1", note = "renamed `var_name`, as on `Token`")]
    pub fn var(&self) -> &'static str {
        self.var
    }
}

impl fmt::Display for LookupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "context variable `{}` has no value in the current context and no default; \
             set it first, give it a default with `ContextVar::with_default`, or read it with `get_or`",
            self.var
        )
    }
}

impl std::error::Error for LookupError {}

/// [`ContextVar::reset`](crate::ContextVar::reset) was given a token it cannot
/// use. Nothing was changed.
///
/// The variable is checked before the context, as CPython does. More
/// variants may be added (`#[non_exhaustive]`): a `match` needs a `_` arm.
///
/// ```
/// use contextvars::{ContextVar, ResetError};
///
/// static A: ContextVar<i32> = ContextVar::new("a");
/// static B: ContextVar<i32> = ContextVar::new("b");
/// let token = A.set(1);
/// assert!(matches!(B.reset(token), Err(ResetError::DifferentVar { .. })));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResetError {
    /// The token was created by another variable.
    DifferentVar {
        /// The variable `reset` was called on.
        var: &'static str,
        /// The variable that created the token.
        token_var: &'static str,
    },
    /// The token was created in another context than the current one.
    DifferentContext {
        /// The variable `reset` was called on.
        var: &'static str,
    },
}

impl fmt::Display for ResetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResetError::DifferentVar { var, token_var } => write!(
                f,
                "cannot reset context variable `{var}` with a token created by variable `{token_var}`; \
                 pass the token to `{token_var}.reset`"
            ),
            ResetError::DifferentContext { var } => write!(
                f,
                "cannot reset context variable `{var}`: its token was created in a different context; \
                 reset it inside the context (the same `run`, task or generator) where it was set"
            ),
        }
    }
}

impl std::error::Error for ResetError {}

/// A [`Context`](crate::Context) was entered while it is already entered, on
/// this thread or another. Nothing was run.
///
/// Also available as [`AlreadyEntered`], the name the product specification
/// uses; both name this one type.
///
/// ```
/// use contextvars::{AlreadyEnteredError, Context};
///
/// let ctx = Context::new();
/// ctx.run(|| {
///     let err: AlreadyEnteredError = ctx.try_run(|| ()).unwrap_err();
///     assert!(err.to_string().contains("already entered"));
/// });
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlreadyEnteredError {
    pub(crate) context: u64,
}

/// [`AlreadyEnteredError`] under its shorter name (the one
/// [`Context::try_run`](crate::Context::try_run) is specified with). Not
/// deprecated: both names stay.
///
/// ```
/// use contextvars::{AlreadyEntered, AlreadyEnteredError, Context};
///
/// let ctx = Context::new();
/// let err: AlreadyEntered = ctx.run(|| ctx.try_run(|| ()).unwrap_err());
/// let _same_type: AlreadyEnteredError = err;
/// ```
pub type AlreadyEntered = AlreadyEnteredError;

impl fmt::Display for AlreadyEnteredError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot enter context #{}: it is already entered (on this thread or another); \
             a context runs one thing at a time; run a copy instead (`ctx.copy().run(..)`)",
            self.context
        )
    }
}

impl std::error::Error for AlreadyEnteredError {}

/// A [`ContextVar::try_reset`](crate::ContextVar::try_reset) that was
/// refused: the [`ResetError`] and the token, handed back unused so it can
/// still be reset where it belongs. Nothing was changed.
///
/// ```
/// use contextvars::{ContextVar, ResetError};
///
/// static A: ContextVar<i32> = ContextVar::new("a");
/// static B: ContextVar<i32> = ContextVar::new("b");
/// let token = A.set(1);
/// let failed = B.try_reset(token).unwrap_err();
/// assert!(failed.to_string().contains("`b`"));
/// assert!(matches!(failed.error(), ResetError::DifferentVar { .. }));
/// A.reset(failed.into_token()).unwrap();
/// ```
pub struct ResetFailed<T> {
    pub(crate) error: ResetError,
    pub(crate) token: crate::Token<T>,
}

impl<T> ResetFailed<T> {
    /// Why the token was refused.
    pub fn error(&self) -> &ResetError {
        &self.error
    }

    /// The token, unused.
    pub fn into_token(self) -> crate::Token<T> {
        self.token
    }

    /// The error, dropping the token (which changes nothing).
    pub fn into_error(self) -> ResetError {
        self.error
    }
}

impl<T> fmt::Debug for ResetFailed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResetFailed")
            .field("error", &self.error)
            .field("token_var", &self.token.var_name())
            .finish_non_exhaustive()
    }
}

impl<T> fmt::Display for ResetFailed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

impl<T> std::error::Error for ResetFailed<T> {}
