//! libFuzzer entry for the `corefile` target; the check itself is `sextant_fuzz::corefile`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sextant_fuzz::corefile(data));
