#!/usr/bin/env bash
# Builds the Strongroom OCI image without a container daemon: umoci lays out
# an image from an empty base, the server binary and the shared libraries
# it links (glibc, libgcc_s, the dynamic loader) go into one layer, and the
# layout is written as an OCI archive (`oci-archive:` for skopeo/podman,
# `ctr images import`, `crane push`). The image runs `strongroom server` as
# uid 100 / gid 1000, the user the Helm chart's security context expects.
#
#   scripts/build-image.sh [--binary PATH] [--output FILE] [--tag TAG]
#
# Without --binary it builds the release binary first (cargo build
# --release). Why not a static musl binary: the musl target is not part of
# the toolchain here and cannot be downloaded; bundling the four glibc
# libraries the binary links costs no extra compile. The Dockerfile beside
# the workspace builds the same image with Docker.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

binary=""
output="strongroom-oci.tar"
tag="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary="$2"; shift 2 ;;
    --output) output="$2"; shift 2 ;;
    --tag) tag="$2"; shift 2 ;;
    *) echo "usage: $0 [--binary PATH] [--output FILE] [--tag TAG]" >&2; exit 2 ;;
  esac
done
command -v umoci >/dev/null || { echo "umoci is not installed: run scripts/setup-tools.sh (apt-get install umoci)" >&2; exit 1; }
if [ -z "$binary" ]; then
  cargo build --release -p examples --bin strongroom
  binary="${CARGO_TARGET_DIR:-target}/release/strongroom"
fi
[ -x "$binary" ] || { echo "no executable at $binary" >&2; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
layout="$work/oci"
image="$layout:$tag"
rootless=()
[ "$(id -u)" -eq 0 ] || rootless=(--rootless)

umoci init --layout "$layout"
umoci new --image "$image"
umoci unpack "${rootless[@]}" --image "$image" "$work/bundle"
rootfs="$work/bundle/rootfs"

# The binary, without debug sections, and what it links.
install -D -m 0755 "$binary" "$rootfs/usr/local/bin/strongroom"
strip --strip-debug "$rootfs/usr/local/bin/strongroom"
ldd "$binary" | grep -o '/[^ ]*' | while read -r lib; do
  install -D -m 0755 "$(readlink -f "$lib")" "$rootfs$lib"
done
# TLS roots for the AWS SDK (KMS over HTTPS) and DNS through files/dns.
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
fi
mkdir -p "$rootfs/etc"
printf 'root:x:0:0:root:/root:/sbin/nologin\nvault:x:100:1000:strongroom:/home/vault:/sbin/nologin\n' > "$rootfs/etc/passwd"
printf 'root:x:0:\nvault:x:1000:\n' > "$rootfs/etc/group"
printf 'hosts: files dns\n' > "$rootfs/etc/nsswitch.conf"
# Where the chart mounts config, data and home; writable by the server.
mkdir -p "$rootfs/vault/config" "$rootfs/vault/data" "$rootfs/home/vault" "$rootfs/tmp"
chown 100:1000 "$rootfs/vault/data" "$rootfs/home/vault" 2>/dev/null || true
chmod 1777 "$rootfs/tmp"

umoci repack "${rootless[@]}" --image "$image" "$work/bundle"
umoci config --image "$image" \
  --config.entrypoint /usr/local/bin/strongroom --config.entrypoint server \
  --config.cmd -config=/vault/config/strongroom.hcl \
  --config.user 100:1000 \
  --config.workingdir /home/vault \
  --config.env PATH=/usr/local/bin:/usr/bin:/bin \
  --config.env HOME=/home/vault \
  --config.exposedports 8200/tcp --config.exposedports 8201/tcp \
  --config.volume /vault/data \
  --config.label org.opencontainers.image.title=strongroom \
  --config.label "org.opencontainers.image.version=$tag" \
  --author strongroom
umoci gc --layout "$layout"
mkdir -p "$(dirname "$output")"
tar -C "$layout" -cf "$output.tmp" .
mv "$output.tmp" "$output"
echo "wrote $output (oci-archive, $tag, $(du -h "$output" | cut -f1))"
