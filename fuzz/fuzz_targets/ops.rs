//! Programs of context operations decoded from bytes, run against the
//! reference model of `tests/model/interp.rs` (the same interpreter as the
//! property test): any divergence, leak or panic is a finding.
#![no_main]

#[path = "../../tests/model/interp.rs"]
mod interp;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    interp::run_program(&interp::decode(data));
});
