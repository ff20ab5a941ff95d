//! Empty: this package exists to build `../tests/loom.rs` under
//! `--cfg loom` without the main package's dev-dependencies.
