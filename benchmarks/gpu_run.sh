#!/usr/bin/env bash
# On a GPU machine without Flower or Ray: the packages benchmarks/gpu_site.sh
# packed (carried in .gpu-site/), prunus from this working tree (the shim
# folder `prunus/` of links to its four packages), then the check, at most
# 270 s. Its options pass through (--out where the results go).
set -euo pipefail
cd "$(dirname "$0")/.."
site=$(mktemp -d)
tar -xJf .gpu-site/site.tar.xz -C "$site"
mkdir -p "$site/site/prunus"
for package in common client server simulations; do ln -s "$PWD/$package" "$site/site/prunus/$package"; done
PYTHONPATH="$site/site" PYTHONUNBUFFERED=1 timeout 270 python3 benchmarks/gpu_check.py "$@"
