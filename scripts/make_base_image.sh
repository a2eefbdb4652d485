#!/usr/bin/env bash
# Make a Debian base image locally where no container registry is reachable:
#   scripts/make_base_image.sh debian:trixie-slim trixie [MIRROR]
# debootstrap --variant=minbase (about 25 s), then `docker import`. Skips if the image already exists.
# The Dockerfiles still say `FROM debian:trixie-slim`, exactly as users with a registry run them.
set -euo pipefail
image="${1:?usage: $0 IMAGE SUITE [MIRROR]}"
suite="${2:?usage: $0 IMAGE SUITE [MIRROR]}"
mirror="${3:-http://deb.debian.org/debian}"
if docker image inspect "$image" >/dev/null 2>&1; then
    echo "$image already present: $(docker image inspect -f '{{.Id}}' "$image")"
    exit 0
fi
command -v debootstrap >/dev/null || { echo "error: debootstrap not installed; fix: apt-get install debootstrap" >&2; exit 1; }
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase "$suite" "$root" "$mirror" >/dev/null
# Slim like the official -slim images: no apt lists or caches in the base layer.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin
tar -C "$root" -c . | docker import --change 'CMD ["bash"]' - "$image"
echo "imported $image"
