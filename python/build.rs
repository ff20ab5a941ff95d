//! The tests and benchmark embed CPython: their binaries find libpython
//! where the interpreter that built them has it (an rpath), without
//! `LD_LIBRARY_PATH`. (An extension module built by maturin does not link
//! libpython; the rpath is then unused.)
fn main() {
    pyo3_build_config::add_libpython_rpath_link_args();
}
