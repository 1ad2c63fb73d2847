//! libFuzzer entry for the `grpc_packet` target; the check itself is `sextant_fuzz::grpc_packet`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sextant_fuzz::grpc_packet(data));
