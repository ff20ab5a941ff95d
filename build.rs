//! Sets `cfg(contextvars_fuzz_corpus)` where `fuzz/regressions/` exists.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    // The fuzz regression inputs are in a git checkout but not in the
    // published package (cargo leaves out `fuzz/`, a package of its own): the
    // replays say "ignored" there rather than pass over nothing.
    println!("cargo:rerun-if-changed=fuzz/regressions");
    println!("cargo::rustc-check-cfg=cfg(contextvars_fuzz_corpus)");
    if std::path::Path::new("fuzz/regressions").is_dir() {
        println!("cargo:rustc-cfg=contextvars_fuzz_corpus");
    }
}
