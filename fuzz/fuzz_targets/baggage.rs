//! The baggage header parser on arbitrary bytes (properties in
//! `tests/fuzz_checks/baggage.rs`, shared with the regression replay).
#![no_main]

#[path = "../../tests/fuzz_checks/baggage.rs"]
mod check;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| check::check(data));
