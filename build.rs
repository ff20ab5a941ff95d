//! Detects a ThreadSanitizer build (`-Zsanitizer=thread`, nightly) and sets
//! `cfg(contextvars_tsan)`, under which the map checks that it owns a node
//! with an acquire operation TSan can see instead of a standalone fence
//! (TSan does not model fences; std's `Arc` makes the same switch). Stable
//! compilers cannot name `cfg(sanitize)`, hence this script. Also sets
//! `cfg(contextvars_fuzz_corpus)` where `fuzz/regressions/` exists.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo::rustc-check-cfg=cfg(contextvars_tsan)");
    // The fuzz regression inputs are in a git checkout but not in the
    // published package (cargo leaves out `fuzz/`, a package of its own): the
    // replays say "ignored" there rather than pass over nothing.
    println!("cargo:rerun-if-changed=fuzz/regressions");
    println!("cargo::rustc-check-cfg=cfg(contextvars_fuzz_corpus)");
    if std::path::Path::new("fuzz/regressions").is_dir() {
        println!("cargo:rustc-cfg=contextvars_fuzz_corpus");
    }
    let sanitizers = std::env::var("CARGO_CFG_SANITIZE").unwrap_or_default();
    if sanitizers.split(',').any(|s| s == "thread") {
        println!("cargo:rustc-cfg=contextvars_tsan");
    }
}
