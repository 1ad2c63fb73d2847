//! libFuzzer entry for the `kube_objects` target; the check itself is `sextant_fuzz::kube_objects`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sextant_fuzz::kube_objects(data));
