//! The extension traits, for a glob import: `use contextvars::prelude::*;`.
//!
//! ```
//! use contextvars::prelude::*;
//!
//! let _task = async {}.in_current_context();
//! ```

pub use crate::future::FutureExt;
pub use crate::iter::IteratorExt;
#[cfg(feature = "rayon")]
#[cfg_attr(docsrs, doc(cfg(feature = "rayon")))]
pub use crate::rayon::ParallelIteratorExt;
#[cfg(feature = "futures")]
#[cfg_attr(docsrs, doc(cfg(feature = "futures")))]
pub use crate::stream::StreamExt;
