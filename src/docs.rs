//! Design notes, for readers of these docs (as `arc_swap::docs`): nothing
//! here is code.

#[doc = include_str!("../ARCHITECTURE.md")]
pub mod architecture {}
