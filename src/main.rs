//! The `sextant` binary: CoreDNS-compatible command line.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = sextant::cli::main(args);
    sextant::log::flush();
    std::process::exit(code);
}
