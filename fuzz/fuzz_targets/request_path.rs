//! libFuzzer entry for the `request_path` target; the check itself is `sextant_fuzz::request_path`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sextant_fuzz::request_path(data));
