//! libFuzzer entry for the `zone_file` target; the check itself is `sextant_fuzz::zone_file`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sextant_fuzz::zone_file(data));
