#!/usr/bin/env bash
# Builds the libFuzzer targets on stable Rust (SanitizerCoverage through stable -C flags; no
# nightly, no cargo-fuzz needed) and runs one of them.
#   fuzz/run.sh <target> [seconds] [extra libFuzzer flags...]
# Targets: wire_parse scan_query differential request_path corefile hosts_file kube_objects setup.
#   fuzz/run.sh all <seconds-each> [flags...]   runs every target in turn (what CI does)
#   fuzz/run.sh build                            only builds them (.ci/run builds ahead, in the background)
# Exit status is libFuzzer's: non-zero on a crash, a timeout (-timeout) or running out of memory.
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
# Build time matters more than the last few percent of speed (CI builds from scratch): line
# tables only (enough for crash stack traces), more codegen units.
export CARGO_PROFILE_RELEASE_DEBUG="${CARGO_PROFILE_RELEASE_DEBUG:-line-tables-only}"
export CARGO_PROFILE_RELEASE_CODEGEN_UNITS="${CARGO_PROFILE_RELEASE_CODEGEN_UNITS:-16}"
# An explicit --target keeps RUSTFLAGS away from build scripts and proc macros.
triple="$(rustc -vV | sed -n 's/^host: //p')"
# All targets in one build: after the first, the others are already there.
# Dependencies at opt-level 1 (they are most of the build; our crates stay at 3); set
# FUZZ_DEPS_OPT=3 for long runs.
# (`all` runs each target through this script again: built once, not checked 12 more times.)
if [ -z "${FUZZ_BUILT:-}" ]; then
  cargo build --release --manifest-path "$here/Cargo.toml" --features libfuzzer --bins \
    --target "$triple" --config "profile.release.package.\"*\".opt-level=${FUZZ_DEPS_OPT:-1}"
fi
if [ "$target" = build ]; then
  exit 0
fi
if [ "$target" = all ]; then
  for t in wire_parse scan_query differential request_path corefile hosts_file kube_objects setup zone_file doh_request grpc_packet proxy_header; do
    echo "== fuzz $t for ${secs}s"
    FUZZ_BUILT=1 "$0" "$t" "$secs" "$@"
  done
  exit 0
fi
mkdir -p "$here/artifacts/$target" "$here/work/$target" "$here/regressions/$target"
exec "$CARGO_TARGET_DIR/$triple/release/$target" -max_total_time="$secs" -max_len=4096 \
  -artifact_prefix="$here/artifacts/$target/" "$here/work/$target" "$here/corpus/$target" \
  "$here/regressions/$target" "$@"
