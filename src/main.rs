//! The `sextant` binary: CoreDNS-compatible command line.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(sextant::run(args));
}
