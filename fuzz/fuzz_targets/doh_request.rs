//! libFuzzer entry for the `doh_request` target; the check itself is `sextant_fuzz::doh_request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sextant_fuzz::doh_request(data));
