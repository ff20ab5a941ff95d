//! The extension traits, for a glob import: `use contextvars::prelude::*;`.
//!
//! They are imported without their names (`as _`, as `futures::prelude`
//! does), so a glob import of this prelude beside others that have a trait of
//! the same name (OpenTelemetry's `FutureExt`, the `futures` and tokio
//! `StreamExt`s) brings every method into scope and no name clashes. Their
//! methods' names clash with none of those either. By name, they are
//! [`FutureExt`](crate::future::FutureExt), [`IteratorExt`](crate::iter::IteratorExt),
//! `StreamExt` (`contextvars::stream`, feature `futures`) and
//! `ParallelIteratorExt` (`contextvars::rayon`, feature `rayon`).
//!
//! ```
//! use contextvars::prelude::*;
//! use contextvars::ContextVar;
//!
//! static N: ContextVar<u32> = ContextVar::new("n");
//! N.set(1);
//! let task = async { N.get() }.in_current_context(); // FutureExt
//! let mut numbers = std::iter::repeat_with(|| N.get()).isolated(); // IteratorExt
//! assert_eq!(futures::executor::block_on(task), Ok(1));
//! assert_eq!(numbers.next(), Some(Ok(1)));
//! ```

pub use crate::future::FutureExt as _;
pub use crate::iter::IteratorExt as _;
#[cfg(feature = "rayon")]
#[cfg_attr(docsrs, doc(cfg(feature = "rayon")))]
pub use crate::rayon::ParallelIteratorExt as _;
#[cfg(feature = "futures")]
#[cfg_attr(docsrs, doc(cfg(feature = "futures")))]
pub use crate::stream::StreamExt as _;
