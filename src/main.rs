//! The `sextant` binary: CoreDNS-compatible command line.
fn main() {}
