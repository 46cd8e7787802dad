"""`make deploy-test` where a container engine runs: a federation and a Ray
cluster across containers (docker/deploy_test.py), every check passed.

It takes a quarter of an hour or more, so it skips, saying why, wherever it
cannot run: no ML-100K, no make, no podman or docker, an engine that does
not answer (a docker client without its daemon), or no base image to build
on. Those checks take a second.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
ML100K = REPO.parent / "shared" / "datasets" / "ml-100k"
# the bases docker/images.sh builds on: the official one, or the local Debian one
BASES = ("docker.io/library/python:3.11.14-slim-bookworm", "localhost/prunus-base:bookworm")


def _why_not() -> str:
    """Why `make deploy-test` cannot run here ('' if it can)."""
    if not (ML100K / "u.data").exists():
        return f"ML-100K is not at {ML100K}"
    if shutil.which("make") is None:
        return "make not found"
    engine = shutil.which("podman") or shutil.which("docker")
    if engine is None:
        return "neither podman nor docker is installed"
    try:
        done = subprocess.run([engine, "info"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return f"`{Path(engine).name} info` did not answer in 30 s"
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return f"{Path(engine).name} does not run containers here: {last}"
    if not any(_has_image(engine, image) for image in BASES):
        return (f"no base image here ({', '.join(BASES)}): `make images` pulls one or, with no registry, "
                "bootstraps a Debian base (a quarter of an hour); run it once first")
    return ""


def _has_image(engine: str, image: str) -> bool:
    """Whether `image` is in the engine's local store (no pull: a registry may not answer)."""
    done = subprocess.run([engine, "image", "inspect", image], capture_output=True, timeout=30)
    return done.returncode == 0


def test_make_deploy_test_passes_across_containers():
    reason = _why_not()
    if reason:
        pytest.skip(reason)
    done = subprocess.run(["make", "deploy-test", f"DEPLOY_PYTHON={sys.executable}", f"ML100K={ML100K}"],
                          cwd=REPO, capture_output=True, text=True, timeout=3600)  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    report = json.loads((REPO / "runs" / "deploy-test" / "report.json").read_text())
    assert report["checks"] and all(check["ok"] for check in report["checks"]), report["checks"]
    assert report["federation"]["comparison"]["same_model"] and not report["federation"]["comparison"]["differ"]
