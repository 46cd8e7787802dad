"""Committed results keep what reproduces a figure and nothing of the machine
that made them: no absolute path of a checkout or scratch folder, and no
per-client file, model or log that a run folder writes beside its summary."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("docs/results", "benchmarks/results")
MACHINE_PATH = re.compile(r"(?<![\w.])/(?:tmp|work|home|root|Users)/\S*")
NOT_COMMITTED = ("model.npz", "clients.csv", "run.log", "checkpoint.npz")


def _committed() -> list[Path]:
    try:
        listed = subprocess.run(["git", "ls-files", *FOLDERS], cwd=ROOT, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as error:
        pytest.skip(f"not a git checkout: {error}")
    return [ROOT / name for name in listed.stdout.split()]


def test_no_committed_result_names_a_path_of_the_machine_that_made_it():
    found = []
    for path in _committed():
        if path.suffix in {".png", ".parquet", ".npz"} or not path.is_file():
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            found += [f"{path.relative_to(ROOT)}:{number}: {m.group(0)}" for m in MACHINE_PATH.finditer(line)]
    assert not found, "\n".join(found[:20])


def test_run_folders_hold_no_model_client_table_or_log():
    kept = [str(p.relative_to(ROOT)) for p in _committed() if p.name in NOT_COMMITTED]
    assert not kept, kept
