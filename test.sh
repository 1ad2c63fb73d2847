#!/usr/bin/env bash
# The README's test command. On a fresh Debian 12 machine it installs what the tests need
# (Debian packages with apt-get, Python packages with pip into the python3 the tests run), then
# runs the whole suite: cargo test --workspace --no-fail-fast. .ci/run calls it too.
#
#   ./test.sh                      install what is missing, run every test
#   ./test.sh --test images        arguments go to cargo test
#   ./test.sh --install-only       install, run nothing
#   ./test.sh --clippy [args]      the same run, with clippy (-D warnings) linting every crate of the
#                                  workspace as cargo compiles it for the tests: what
#                                  `cargo clippy --workspace --all-targets -- -D warnings` checks,
#                                  without a second compilation (.ci/run does this)
#
# Installing needs root (or sudo). A test whose tool is still missing fails and names the
# package to install; none skips.
set -euo pipefail
cd "$(dirname "$0")"

# knot, unbound: reference servers; bind9-dnsutils, knot-dnsutils: dig, kdig; dnsperf: bench;
# iproute2, iptables, nftables: namespaces and node-cache; conntrack: the kube-proxy stand-in of
# the node-cache tests clears conntrack like kube-proxy; python3-pip: pip for the pyenv-less
# case; g++: libFuzzer for the fuzz crate; buildah, podman, runc, mmdebstrap, libcap2-bin: the
# container images (deploy/image.sh, tests/images.rs); ldnsutils: ldns-keygen and ldns-signzone sign
# the zone tests/file.rs serves with DNSSEC records; musl-tools: a musl (1.2.3, no TCP retry)
# getaddrinfo client (tests/conformance_reply.rs); etcd-server, etcd-client: the etcd v3 server and
# etcdctl of tests/etcd.rs; bind9-utils: dnssec-keygen makes the KSK/ZSK pairs tests/dnssec.rs and
# tests/sign.rs sign with (delv, from bind9-dnsutils, validates the answers); knot-dnssecutils:
# kzonecheck, which checks tests/sign.rs's signed zone (knot does not pull it in without
# recommends); curl: the DoH client (--http2, GET and POST) of tests/transports.rs; fstrm-bin,
# dnstap-ldns: the dnstap collector (fstrm_capture) and reader of tests/dnstap.rs.
APT_PACKAGES=(
    knot knot-dnssecutils unbound bind9-dnsutils knot-dnsutils dnsperf iproute2 iptables nftables conntrack ipset
    python3 python3-pip g++ ca-certificates musl-tools bind9-utils
    buildah podman runc mmdebstrap libcap2-bin ldnsutils etcd-server etcd-client curl
    fstrm-bin dnstap-ldns
    # make: tikv-jemalloc-sys builds jemalloc (the allocator) with configure and make.
    make
)

as_root() {
    if [ "$(id -u)" = 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        echo "./test.sh: installing needs root: run it as root or install sudo" >&2
        exit 1
    fi
}

install_deps() {
    local missing=() p
    for p in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "== apt-get install ${missing[*]}"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" >/dev/null
    fi
    # go tool pprof reads the CPU profile of tests/pprof.rs: the machine's Go if there is one,
    # else Debian's.
    if ! command -v go >/dev/null 2>&1 && [ ! -x /usr/local/go/bin/go ]; then
        echo "== apt-get install golang-go"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends golang-go >/dev/null
    fi
    # Debian's unbound/knot/etcd-server packages start system services; the tests start their own.
    if systemctl is-active --quiet unbound knot etcd 2>/dev/null; then
        as_root systemctl stop unbound knot etcd 2>/dev/null || true
    fi
    # deploy/image.sh downloads ca-certificates with apt: it needs package lists.
    if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    fi
    echo "== pip install -r requirements-test.txt"
    local pip=(python3 -m pip install -q --root-user-action=ignore -r requirements-test.txt)
    # Debian's own python3 refuses pip installs (PEP 668) unless told; pyenv's does not.
    if python3 -c 'import os, sysconfig, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")))'; then
        pip+=(--break-system-packages)
    fi
    "${pip[@]}"
    command -v cargo >/dev/null || {
        echo "./test.sh: cargo not found: install Rust (rustup) first" >&2
        exit 1
    }
}

if [ "${1:-}" = --install-only ]; then
    install_deps
    exit 0
fi
lint=()
if [ "${1:-}" = --clippy ]; then
    shift
    # clippy-driver is rustc plus clippy's lints: as the workspace crates' compiler (cargo's
    # rustc-workspace-wrapper, given as --config so the processes the tests start do not inherit
    # it), every lib, bin, test and example that `cargo test` builds is linted as `cargo clippy
    # --all-targets` would lint it; CLIPPY_ARGS (read by clippy-driver only) makes any warning an
    # error. Dependencies are compiled by rustc as before.
    driver="$(rustc --print sysroot)/bin/clippy-driver"
    [ -x "$driver" ] || {
        echo "./test.sh: $driver not found: rustup component add clippy" >&2
        exit 1
    }
    lint=(--config "build.rustc-workspace-wrapper=\"$driver\"")
    export CLIPPY_ARGS=-Dwarnings
fi
install_deps
echo "== cargo test --workspace --no-fail-fast ${lint[*]} $*"
exec cargo test --workspace --no-fail-fast "${lint[@]}" "$@"
