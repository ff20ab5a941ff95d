//! Nothing here: this package holds the benchmarks, the two-service
//! example and the integration tests of `contextvars` (see its Cargo.toml).
