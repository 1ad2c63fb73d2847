//! libFuzzer entry for the `wire_parse` target; the check itself is `sextant_fuzz::wire_parse`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sextant_fuzz::wire_parse(data));
