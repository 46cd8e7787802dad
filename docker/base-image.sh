#!/usr/bin/env bash
# A local base image for docker/Dockerfile where no container registry is
# reachable: Debian bookworm (minbase) with python3 (3.11) and python3-venv,
# made with debootstrap from a Debian mirror and imported with `podman import`
# (or `docker import`). Run as root (debootstrap needs it).
#
#   bash docker/base-image.sh [TAG]        # default TAG: localhost/prunus-base:bookworm
#
# MIRROR (default http://deb.debian.org/debian) picks the Debian mirror,
# ENGINE (default podman, else docker) the container engine. The root file
# system is built in a temporary folder and removed afterwards.
set -euo pipefail

tag=${1:-localhost/prunus-base:bookworm}
mirror=${MIRROR:-http://deb.debian.org/debian}
engine=${ENGINE:-$(command -v podman || command -v docker || true)}

[[ -n $engine ]] || { echo "base-image.sh: neither podman nor docker found" >&2; exit 2; }
command -v debootstrap >/dev/null || { echo "base-image.sh: debootstrap not found (apt-get install debootstrap)" >&2; exit 2; }
[[ $(id -u) == 0 ]] || { echo "base-image.sh: debootstrap needs root" >&2; exit 2; }

root=$(mktemp -d /var/tmp/prunus-base.XXXXXX)
# debootstrap mounts proc and sys inside the tree; never remove through a mount
trap 'umount -R "$root/proc" "$root/sys" 2>/dev/null || true; rm -rf --one-file-system "$root"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv bookworm "$root" "$mirror" >"$root.log" 2>&1 \
    || { tail -20 "$root.log" >&2; rm -f "$root.log"; exit 1; }
rm -f "$root.log"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar --numeric-owner -C "$root" -c . | "$engine" import --change 'CMD ["/bin/bash"]' - "$tag" >/dev/null
echo "base-image.sh: $tag, $(chroot "$root" python3 --version)"
