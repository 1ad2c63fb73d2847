//! libFuzzer entry for the `setup` target; the check itself is `sextant_fuzz::setup`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sextant_fuzz::setup(data));
