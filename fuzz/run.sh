#!/usr/bin/env bash
# Builds the libFuzzer targets on stable Rust (SanitizerCoverage through stable -C flags; no
# nightly, no cargo-fuzz needed) and runs one of them.
#   fuzz/run.sh <target> [seconds] [extra libFuzzer flags...]
# Targets: wire_parse scan_query differential request_path corefile.
# New crashes land in fuzz/artifacts/<target>/; copy them to fuzz/regressions/<target>/ once
# fixed, so `cargo test -p sextant-fuzz` replays them forever.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
target="${1:?target name}"
secs="${2:-60}"
shift $(( $# > 1 ? 2 : 1 ))
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$here/../target/fuzz}"
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks"
# An explicit --target keeps RUSTFLAGS away from build scripts and proc macros.
triple="$(rustc -vV | sed -n 's/^host: //p')"
cargo build --release --manifest-path "$here/Cargo.toml" --features libfuzzer --bin "$target" \
  --target "$triple"
mkdir -p "$here/artifacts/$target" "$here/work/$target"
exec "$CARGO_TARGET_DIR/$triple/release/$target" -max_total_time="$secs" -max_len=4096 \
  -artifact_prefix="$here/artifacts/$target/" "$here/work/$target" "$here/corpus/$target" \
  "$here/regressions/$target" "$@"
