//! libFuzzer entry for the `hosts_file` target; the check itself is `sextant_fuzz::hosts_file`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sextant_fuzz::hosts_file(data));
