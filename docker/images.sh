#!/usr/bin/env bash
# Build the three images of a prunus deployment from docker/Dockerfile:
# prunus-superlink, prunus-serverapp and prunus-supernode (tag TAG, default
# cpu), each a target of the Dockerfile on the same locked install. Layers
# already built are reused, so a second run only rebuilds what changed.
#
#   bash docker/images.sh                     # `make images`
#
# BASE_IMAGE: the base (default: the official python:3.11 slim image). If it
# is not given and cannot be pulled (no registry reachable), podman run as root
# with debootstrap installed builds a local Debian base instead
# (docker/base-image.sh, once). ENGINE: podman or docker (default: the first
# found). With podman the host's pip settings reach the build: the folders in
# PIP_FIND_LINKS are mounted (a local wheel of torch's CPU build, say) and the
# CA bundle PIP_CERT names (a proxy's certificate authority).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
tag=${TAG:-cpu}
official=docker.io/library/python:3.11.14-slim-bookworm
local_base=localhost/prunus-base:bookworm
base=${BASE_IMAGE:-$official}
engine=${ENGINE:-$(command -v podman || command -v docker || true)}
[[ -n $engine ]] || { echo "images.sh: neither podman nor docker found" >&2; exit 2; }
if [[ $(basename "$engine") == podman ]]; then
    export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/docker/containers.conf}
fi

have() { "$engine" image inspect "$1" >/dev/null 2>&1; }

if ! have "$base" && ! "$engine" pull -q "$base" >/dev/null 2>&1; then
    if [[ -n ${BASE_IMAGE:-} || $(basename "$engine") != podman ]]; then
        echo "images.sh: cannot pull $base; name a base that is here with BASE_IMAGE=" >&2
        exit 2
    fi
    echo "images.sh: cannot pull $base (no registry reachable?); using the local Debian base $local_base"
    have "$local_base" || bash docker/base-image.sh "$local_base"
    base=$local_base
fi

build=(--build-arg "BASE=$base")
if [[ $(basename "$engine") == podman ]]; then
    links=()
    for dir in ${PIP_FIND_LINKS:-}; do
        [[ -d $dir ]] && { build+=(--volume "$dir:$dir:ro"); links+=("$dir"); }
    done
    ((${#links[@]})) && build+=(--build-arg "PIP_FIND_LINKS=${links[*]}")
    if [[ -f ${PIP_CERT:-} ]]; then
        build+=(--volume "$PIP_CERT:/etc/ssl/certs/host-ca.pem:ro" --build-arg PIP_CERT=/etc/ssl/certs/host-ca.pem)
    fi
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
for role in superlink serverapp supernode; do
    started=$SECONDS
    nice -n 19 "$engine" build -f docker/Dockerfile --target "$role" "${build[@]}" -t "prunus-$role:$tag" . >"$log" 2>&1 \
        || { tail -40 "$log" >&2; echo "images.sh: building prunus-$role:$tag failed" >&2; exit 1; }
    echo "images.sh: prunus-$role:$tag ($((SECONDS - started)) s, on $base)"
done
