#!/usr/bin/env bash
# Side-by-side benchmark: Sextant vs Knot DNS, NSD, Unbound, dnsmasq and dnsdist on 127.0.0.1.
# Builds the release binary, installs the reference servers and tools from Debian if missing,
# sets up matplotlib in bench/.venv, then runs bench/bench.py, which writes
# bench/results/<date>.md, bench/results/<date>.png and docs/performance.md.
#
#   bench/run.sh              full run (3 runs of 10 s per figure)
#   bench/run.sh --quick      one short run each
#   bench/run.sh --help       all options (sizes, durations, rate, scenarios)
#
# Options after the script name are passed to bench.py. Set SEXTANT_BIN to skip the build and
# use that binary. Set COREDNS_BIN to a CoreDNS binary you built yourself (this script never
# builds or downloads it) to measure it beside Sextant in every scenario, reading the cluster
# from the fake API server (crates/fakeapi's `serve` example, built here; it also serves the
# API-at-scale scenario).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

for a in "$@"; do
    if [[ $a == -h || $a == --help ]]; then
        sed -n '2,14p' "$0"
        exec python3 bench/bench.py --help
    fi
done

if [[ $(nproc) -lt 2 ]]; then
    echo "run.sh: needs 2 CPUs (server on core 0, dnsperf on core 1)" >&2
    exit 1
fi

# Reference servers and tools (Debian packages).
missing=()
for pair in knotd:knot nsd:nsd unbound:unbound dnsmasq:dnsmasq dnsdist:dnsdist h2load:nghttp2-client openssl:openssl dnsperf:dnsperf valgrind:valgrind dig:bind9-dnsutils taskset:util-linux; do
    cmd=${pair%%:*} pkg=${pair##*:}
    command -v "$cmd" >/dev/null 2>&1 || [[ -x /usr/sbin/$cmd ]] || missing+=("$pkg")
done
if [[ ${#missing[@]} -gt 0 ]]; then
    echo "run.sh: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
export PATH=$PATH:/usr/sbin
# The Debian packages start their services on port 53; the benchmark starts its own copies.
for svc in knot nsd unbound dnsmasq dnsdist; do
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
        echo "run.sh: note: system $svc service is running (the benchmark uses its own instances)"
    fi
done

# Python with matplotlib for the chart.
venv=bench/.venv
if [[ ! -x $venv/bin/python ]] || ! "$venv/bin/python" -c 'import matplotlib' 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q matplotlib
fi

# Release build.
if [[ -z ${SEXTANT_BIN:-} ]]; then
    cargo build --release --bin sextant
    target=${CARGO_TARGET_DIR:-$root/target}
    SEXTANT_BIN=$target/release/sextant
fi

# The fake API server (the API-at-scale scenario, and CoreDNS's cluster with COREDNS_BIN).
cargo build --release -p sextant-fakeapi --example serve
extra=(--fakeapi "${CARGO_TARGET_DIR:-$root/target}/release/examples/serve")
if [[ -n ${COREDNS_BIN:-} ]]; then
    [[ -x $COREDNS_BIN ]] || { echo "run.sh: COREDNS_BIN=$COREDNS_BIN is not executable" >&2; exit 1; }
    extra+=(--coredns "$COREDNS_BIN")
fi

exec "$venv/bin/python" bench/bench.py --bin "$SEXTANT_BIN" --root "$root" "${extra[@]}" "$@"
