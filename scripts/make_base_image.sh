#!/usr/bin/env bash
# Make a Debian base image locally where no container registry is reachable:
#   scripts/make_base_image.sh [--arch ARCH] IMAGE SUITE [MIRROR]
#   scripts/make_base_image.sh debian:trixie-slim trixie
#   scripts/make_base_image.sh --arch arm64 pytorch-cuda-base:trixie-slim-arm64 trixie
# debootstrap --variant=minbase (about 25 s; an arm64 root runs its second stage under QEMU user emulation,
# 7 min on 2 busy cores: needs qemu-user-static and binfmt-support), then `docker import` (for another
# architecture: a build FROM scratch for linux/ARCH, which records it).
# Skips if IMAGE already exists for that architecture.
# The Dockerfiles still say `FROM debian:trixie-slim`, exactly as users with a registry run them; a local
# image of another architecture takes another name and reaches the build as BASE_IMAGE (--base-image), since
# one local tag holds one architecture here (a registry's debian:trixie-slim is an index of all of them).
set -euo pipefail
arch=amd64
if [[ "${1:-}" == "--arch" ]]; then
    arch="${2:?usage: $0 [--arch amd64|arm64] IMAGE SUITE [MIRROR]}"
    shift 2
fi
image="${1:?usage: $0 [--arch amd64|arm64] IMAGE SUITE [MIRROR]}"
suite="${2:?usage: $0 [--arch amd64|arm64] IMAGE SUITE [MIRROR]}"
mirror="${3:-http://deb.debian.org/debian}"
case "$arch" in
    amd64 | arm64) ;;
    *) echo "error: --arch $arch: not an architecture the images are built for; fix: amd64 or arm64" >&2; exit 2 ;;
esac
if have="$(docker image inspect -f '{{.Architecture}}' "$image" 2>/dev/null)"; then
    if [[ "$have" == "$arch" ]]; then
        echo "$image already present ($arch): $(docker image inspect -f '{{.Id}}' "$image")"
        exit 0
    fi
    echo "error: $image exists for $have, not $arch; fix: give the $arch image another name" >&2
    exit 1
fi
command -v debootstrap >/dev/null || { echo "error: debootstrap not installed; fix: apt-get install debootstrap" >&2; exit 1; }
if [[ "$arch" != "$(dpkg --print-architecture)" ]]; then
    # binfmt_misc runs the arm64 root's programs through QEMU (the F flag: also inside containers).
    if ! grep -qs enabled "/proc/sys/fs/binfmt_misc/qemu-aarch64"; then
        echo "error: no QEMU user emulation for $arch here; fix (as root): apt-get install qemu-user-static" \
            "binfmt-support && update-binfmts --enable qemu-aarch64" >&2
        exit 1
    fi
fi
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
debootstrap --arch "$arch" --variant=minbase "$suite" "$root" "$mirror" >/dev/null
# Slim like the official -slim images: no apt lists or caches in the base layer.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin
if [[ "$arch" == "$(dpkg --print-architecture)" ]]; then
    tar -C "$root" -c . | docker import --change 'CMD ["bash"]' - "$image"
else
    # `docker import --platform` still records this host's architecture (Docker Engine 20.10 here); a
    # build for the platform FROM scratch records the right one.
    context="$(mktemp -d)"
    trap 'rm -rf "$root" "$context"' EXIT
    tar -C "$root" -cf "$context/rootfs.tar" .
    printf 'FROM scratch\nADD rootfs.tar /\nCMD ["bash"]\n' >"$context/Dockerfile"
    docker build -q --platform "linux/$arch" -t "$image" "$context"
fi
echo "imported $image ($(docker image inspect -f '{{.Os}}/{{.Architecture}}' "$image"))"
