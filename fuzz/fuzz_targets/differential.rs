//! libFuzzer entry for the `differential` target; the check itself is `sextant_fuzz::differential`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sextant_fuzz::differential(data));
