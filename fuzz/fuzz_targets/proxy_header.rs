//! libFuzzer entry for the `proxy_header` target; the check itself is `sextant_fuzz::proxy_header`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sextant_fuzz::proxy_header(data));
