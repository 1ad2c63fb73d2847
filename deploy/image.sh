#!/usr/bin/env bash
# Builds Sextant's two container images without a Docker engine or a container registry:
#
#   localhost/sextant:TAG             cluster DNS: the static release binary FROM scratch, with
#                                     CA certificates and /etc/passwd, runs as 65532:65532; the
#                                     binary carries cap_net_bind_service (file capability) so a
#                                     non-root container given NET_BIND_SERVICE binds :53
#   localhost/sextant-node-cache:TAG  NodeLocal DNSCache: the same files plus iptables and
#                                     nftables from a minimal Debian root file system
#                                     (mmdebstrap, extract variant), runs as root (NET_ADMIN)
#
# Usage:
#   deploy/image.sh           build both images with buildah, print their names and sizes
#   deploy/image.sh rootfs    only stage the two root file systems in target/image/{sextant,node-cache}
#                             (what deploy/Dockerfile runs, so Docker builds the same images)
#   deploy/image.sh binary    only build the static release binary (.ci/run builds it ahead of
#                             tests/images.rs, in the background)
#
# Environment: SEXTANT_IMAGE_TAG (default dev), SEXTANT_STORAGE_DRIVER (default vfs; podman must
# use the same), SEXTANT_REFRESH_ROOTFS=1 rebuilds the cached Debian root file system.
# Debian packages come from the mirrors the host's apt uses (apt-get indextargets), nothing else.
# Needs: cargo, mmdebstrap, apt-get, setcap (libcap2-bin), buildah; root for buildah and setcap.
set -euo pipefail
cd "$(dirname "$0")/.."

TAG=${SEXTANT_IMAGE_TAG:-dev}
DNS_IMAGE=localhost/sextant:$TAG
NC_IMAGE=localhost/sextant-node-cache:$TAG
DRIVER=${SEXTANT_STORAGE_DRIVER:-vfs}
OUT=target/image
# Debian packages of the node-cache image (their dependencies come along).
NC_PACKAGES=iptables,nftables,ipset

need() { # program package
    command -v "$1" >/dev/null 2>&1 || {
        echo "deploy/image.sh: $1 not found: install it with: apt-get install -y $2" >&2
        exit 1
    }
}

codename() { . /etc/os-release && echo "${VERSION_CODENAME:?no VERSION_CODENAME in /etc/os-release}"; }

# The host's Debian sources for this release (main, -updates, -security), as sources.list lines.
debian_sources() {
    local c
    c=$(codename)
    apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(COMPONENT)' 'Identifier: Packages' |
        sort -u |
        awk -v c="$c" '$2 == c || $2 == c "-updates" || $2 == c "-security" { print "deb " $1 " " $2 " " $3 }'
}

# The release binary: static (glibc, static-pie), symbols stripped.
build_binary() {
    need cargo "cargo (rustup)"
    # Run from `cargo test`, the variables cargo sets for the test would change build-script
    # fingerprints (ring reruns on CARGO_MANIFEST_DIR) and rebuild everything twice.
    local v
    for v in $(compgen -e); do
        case $v in
        CARGO_MANIFEST_* | CARGO_PKG_* | CARGO_CRATE_* | CARGO_BIN_* | CARGO_PRIMARY_PACKAGE | CARGO_TARGET_TMPDIR) unset "$v" ;;
        esac
    done
    local host
    host=$(rustc -vV | sed -n 's/^host: //p')
    echo "== cargo build --release ($host, static)" >&2
    # An explicit --target keeps RUSTFLAGS off build scripts and proc-macros (which cannot be
    # static) and keeps this build apart from target/release.
    RUSTFLAGS="-C target-feature=+crt-static" \
        CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_STRIP=symbols \
        cargo build --release --locked --target "$host" --bin sextant >&2
    BIN=${CARGO_TARGET_DIR:-target}/$host/release/sextant
    if LC_ALL=C ldd "$BIN" 2>&1 | grep -q '=>'; then
        echo "deploy/image.sh: $BIN is dynamically linked" >&2
        exit 1
    fi
}

# CA certificates from Debian's ca-certificates package: every certificate it ships, as
# update-ca-certificates bundles them by default.
ca_bundle() { # dest-file
    local d=$OUT/debs
    rm -rf "$d" && mkdir -p "$d"
    # As root, apt downloads as _apt, who may not reach this folder: download as root then.
    local sandbox=()
    [ "$(id -u)" = 0 ] && sandbox=(-o APT::Sandbox::User=root)
    (cd "$d" && apt-get download -q "${sandbox[@]}" ca-certificates >&2) || {
        echo "deploy/image.sh: apt-get download ca-certificates failed (run apt-get update first)" >&2
        exit 1
    }
    dpkg-deb -x "$d"/ca-certificates_*.deb "$d/x"
    mkdir -p "$(dirname "$1")"
    find "$d/x/usr/share/ca-certificates/mozilla" -name '*.crt' | LC_ALL=C sort | xargs cat >"$1"
    grep -c 'BEGIN CERTIFICATE' "$1" >/dev/null
}

# Files both images share: the binary, CA certificates, passwd/group, /tmp.
common_files() { # root
    local r=$1
    mkdir -p "$r/etc/ssl/certs" "$r/tmp"
    chmod 1777 "$r/tmp"
    cp "$BIN" "$r/sextant"
    chmod 0755 "$r/sextant"
    cp "$OUT/ca-certificates.crt" "$r/etc/ssl/certs/ca-certificates.crt"
    printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$r/etc/passwd"
    printf 'root:x:0:\nnonroot:x:65532:\n' >"$r/etc/group"
}

# A minimal Debian root file system with iptables and nftables, cached in $OUT/debian-rootfs
# (keyed by the sources, the package list and the day); chrootless extract: no maintainer scripts run,
# no root needed, works inside a docker build.
debian_rootfs() {
    need mmdebstrap mmdebstrap
    local src key cache=$OUT/debian-rootfs
    src=$(debian_sources)
    if [ -z "$src" ]; then
        echo "deploy/image.sh: apt has no sources for $(codename) (see /etc/apt/sources.list*)" >&2
        exit 1
    fi
    # Rebuilt daily too, so security updates come in.
    key=$(printf '%s\n%s\n%s\n%s\n' "$src" "$NC_PACKAGES" "$(codename)" "$(date -u +%F)" | sha256sum | cut -c1-16)
    if [ "${SEXTANT_REFRESH_ROOTFS:-}" != 1 ] && [ -f "$cache/.key" ] && [ "$(cat "$cache/.key")" = "$key" ]; then
        echo "== Debian root file system: cached ($cache)" >&2
        return
    fi
    echo "== mmdebstrap $(codename) ($NC_PACKAGES)" >&2
    rm -rf "$cache" "$cache.tmp"
    printf '%s\n' "$src" >"$OUT/sources.list"
    timeout 600 mmdebstrap --quiet --mode=chrootless --variant=extract --include="$NC_PACKAGES" \
        "$(codename)" "$cache.tmp" "$OUT/sources.list" >&2
    local r=$cache.tmp
    # What a container never uses, and what mmdebstrap copied from this host.
    rm -rf "$r"/dev/* "$r"/dev/.??* "$r"/etc/apt "$r"/var/lib/apt "$r"/var/cache/* "$r"/var/log/* \
        "$r"/var/lib/dpkg "$r"/etc/hostname "$r"/etc/resolv.conf "$r"/etc/fstab \
        "$r"/usr/share/doc "$r"/usr/share/man "$r"/usr/share/info "$r"/usr/share/lintian \
        "$r"/usr/share/locale "$r"/usr/lib/*/gconv
    mkdir -p "$r/run"
    # What iptables' postinst (update-alternatives) would do: the nft backend, Debian's default.
    local t
    for t in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
        ln -sf "$t-nft" "$r/usr/sbin/$t"
    done
    echo "$key" >"$r/.key"
    mv "$r" "$cache"
}

stage() {
    mkdir -p "$OUT"
    build_binary
    ca_bundle "$OUT/ca-certificates.crt"

    echo "== staging $OUT/sextant" >&2
    rm -rf "$OUT/sextant"
    common_files "$OUT/sextant"
    # Without this a non-root container cannot bind :53 under runtimes that set no ambient
    # capabilities (containerd, CRI-O): runc leaves NET_BIND_SERVICE in the permitted set, and the
    # file capability makes it effective at exec, also with no_new_privs.
    need setcap libcap2-bin
    setcap cap_net_bind_service=+ep "$OUT/sextant/sextant"

    debian_rootfs
    echo "== staging $OUT/node-cache" >&2
    rm -rf "$OUT/node-cache"
    cp -a "$OUT/debian-rootfs" "$OUT/node-cache"
    rm -f "$OUT/node-cache/.key"
    common_files "$OUT/node-cache"
}

VERSION=
REVISION=
labels() { # title description base
    local created
    created=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    printf '%s\n' \
        "org.opencontainers.image.title=$1" \
        "org.opencontainers.image.description=$2" \
        "org.opencontainers.image.version=$VERSION" \
        "org.opencontainers.image.revision=$REVISION" \
        "org.opencontainers.image.created=$created" \
        "org.opencontainers.image.licenses=Apache-2.0" \
        "org.opencontainers.image.base.name=$3"
}

bah() { buildah --storage-driver "$DRIVER" "$@"; }

# commit NAME ROOTDIR TITLE DESCRIPTION BASE -- buildah config flags...
commit() {
    local name=$1 root=$2 title=$3 desc=$4 base=$5
    shift 6
    local ctr old
    old=$(bah images --quiet --no-trunc --filter reference="$name" 2>/dev/null | head -1)
    ctr=$(bah from --name "sextant-image-$$-$(basename "$root")" scratch)
    CONTAINERS+=("$ctr")
    bah copy --quiet "$ctr" "$root/" / >/dev/null
    local l args=()
    while IFS= read -r l; do args+=(--label "$l"); done < <(labels "$title" "$desc" "$base")
    bah config "${args[@]}" "$@" "$ctr"
    bah commit --quiet --rm "$ctr" "$name" >/dev/null
    # The image this name had before, now untagged: removed, unless a container still uses it.
    if [ -n "$old" ] && [ "$old" != "$(bah images --quiet --no-trunc --filter reference="$name" | head -1)" ]; then
        bah rmi "$old" >/dev/null 2>&1 || true
    fi
}

CONTAINERS=()
cleanup() {
    local c
    for c in "${CONTAINERS[@]}"; do bah rm "$c" >/dev/null 2>&1 || true; done
}

# Registry size: the layers gzip-compressed as a push would store them, plus config and manifest.
pushed_size() { # image
    local d=$OUT/oci-size
    rm -rf "$d"
    bah push --quiet --compression-format gzip "$1" "oci:$d" >/dev/null
    du -sb --apparent-size "$d/blobs" | cut -f1
}

human() { awk -v b="$1" 'BEGIN { printf "%.1f MB", b / 1000000 }'; }

case "${1:-all}" in
binary)
    build_binary
    echo "$BIN"
    ;;
rootfs)
    stage
    ;;
all)
    need buildah buildah
    stage
    VERSION=$("$BIN" -version | sed -n "1s/^Sextant-//p")
    REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)
    trap cleanup EXIT
    echo "== buildah commit $DNS_IMAGE" >&2
    commit "$DNS_IMAGE" "$OUT/sextant" sextant \
        "Sextant, a Kubernetes cluster DNS server that replaces CoreDNS" scratch -- \
        --user 65532:65532 --entrypoint '["/sextant"]' --cmd '["-conf", "/etc/coredns/Corefile"]' \
        --port 53/udp --port 53/tcp --port 9153/tcp --port 8080/tcp --port 8181/tcp
    echo "== buildah commit $NC_IMAGE" >&2
    commit "$NC_IMAGE" "$OUT/node-cache" sextant-node-cache \
        "Sextant as NodeLocal DNSCache (sextant node-cache), with iptables and nftables" \
        "debian:$(codename) (mmdebstrap --variant=extract)" -- \
        --user 0:0 --entrypoint '["/sextant"]' \
        --cmd '["node-cache", "-localip", "169.254.20.10", "-conf", "/etc/Corefile"]' \
        --port 53/udp --port 53/tcp --port 9253/tcp --port 9353/tcp --port 8080/tcp
    for img in "$DNS_IMAGE" "$NC_IMAGE"; do
        size=$(bah images --format '{{.Size}}' --filter reference="$img" | head -1)
        pushed=$(pushed_size "$img")
        printf '%s\t%s uncompressed\t%s compressed (gzip layers, as pushed)\n' \
            "$img" "$size" "$(human "$pushed")"
    done
    ;;
*)
    echo "usage: deploy/image.sh [rootfs|binary]" >&2
    exit 2
    ;;
esac
