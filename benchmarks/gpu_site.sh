#!/usr/bin/env bash
# Packs what benchmarks/gpu_check.py needs on a GPU machine whose image holds
# Python 3.12 with a CUDA build of torch and the scientific stack, but not
# Flower or Ray: the lock's other pins (flwr, ray, grpcio, cryptography, ...),
# as cp312 x86-64 wheels, installed into one folder and packed as
# .gpu-site/site.tar.xz (git-ignored). Ray's wheel alone is 70 MiB, of which
# 30 are Java jars (ray/jars), 8 the dashboard's web client
# (ray/dashboard/client) and some more its libraries (RLlib, Serve, Tune,
# Train, Data, LLM), which Ray core and Flower never import: they are left
# out, and Ray's three binaries are stripped of their symbols (only for
# debuggers: _raylet.so goes from 43 MB to 31), so that the archive travels
# with the working tree under a 64 MiB limit (with the libraries and
# symbols it measured 52 MB, with a 16.5 MB tree). Then, on that machine,
# from the repository root:
#
#   bash benchmarks/gpu_run.sh [gpu_check.py's options]
#
# Needs pip and PyPI here; the image's own packages are named in KEEP.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
# the image's own: its scientific stack (its numpy, numba and pandas are built for its torch), uvloop, pygments
KEEP='uvloop|pygments|torch|numpy|pandas|pyarrow|numba|llvmlite|matplotlib|contourpy|kiwisolver|fonttools|pillow|cycler|pyparsing|python-dateutil|tzdata|sympy|mpmath|networkx|jinja2|markupsafe|filelock|fsspec|typing-extensions|setuptools|uv'
PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64
           manylinux_2_5_x86_64 manylinux1_x86_64)
TARGET=(--only-binary=:all: --python-version 3.12 --implementation cp ${PLATFORMS[@]/#/--platform })
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
grep -E '^[A-Za-z0-9].*==' requirements.lock | grep -vE "^($KEEP)==" > "$work/pins.txt"
"$PYTHON" -m pip download --no-deps "${TARGET[@]}" -d "$work/wheels" -r "$work/pins.txt"
"$PYTHON" -m pip install --no-deps --no-compile "${TARGET[@]}" --target "$work/site" "$work"/wheels/*.whl
rm -rf "$work/site/bin" "$work/site/ray/"{jars,dashboard/client,rllib,serve,tune,train,data,llm}
strip --strip-unneeded "$work/site/ray/_raylet.so" "$work/site/ray/core/src/ray/raylet/raylet" \
    "$work/site/ray/core/src/ray/gcs/gcs_server"
mkdir -p .gpu-site
tar -C "$work" -I 'xz -T0' -cf .gpu-site/site.tar.xz site
echo "gpu_site: .gpu-site/site.tar.xz, $(du -m .gpu-site/site.tar.xz | cut -f1) MB, $(wc -l < "$work/pins.txt") packages"
