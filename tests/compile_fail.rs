//! Misuse the type system is meant to stop, checked with `trybuild`: each
//! file under `tests/compile_fail/` must fail to compile with the committed
//! `.stderr` (regenerate with `TRYBUILD=overwrite cargo test --test
//! compile_fail` and check the diff by eye).
//!
//! Skipped under Miri (it cannot run rustc).

#[cfg(not(miri))]
#[test]
fn misuse_does_not_compile() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/compile_fail/*.rs");
}
