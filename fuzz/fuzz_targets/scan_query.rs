//! libFuzzer entry for the `scan_query` target; the check itself is `sextant_fuzz::scan_query`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sextant_fuzz::scan_query(data));
