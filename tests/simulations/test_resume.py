"""A checkpointed run killed with SIGKILL resumes to exactly the run it would
have been: the same final model, metrics and byte totals (top-k with error
feedback, so the clients' state matters, with the leakage ledger, whose
linked state is the server's; and secure aggregation over the server's
bandit rows and the round's random positions, whose rounds are four
exchanges and whose residual is the client's)."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.slow

SETTINGS = ["engine=inprocess", "rounds=8", "checkpoint-every=2", "prune-method=topk-global", "density=0.1",
            "value-codec=int8", "eval-every=2", "synthetic-users=200", "seed=3"]  # fmt: skip


def _simulate(*args: str) -> list[str]:
    return [sys.executable, "-m", "prunus.simulations.cli", "simulate", *args]


def _sets(settings: list[str]) -> list[str]:
    return [arg for s in settings for arg in ("--set", s)]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _rounds_done(rounds: Path) -> int:
    """The last round in rounds.csv, read while the run rewrites it (-1: none yet,
    or caught between truncating and writing)."""
    try:
        return int(pd.read_csv(rounds)["round"].max())
    except (FileNotFoundError, pd.errors.EmptyDataError, KeyError, ValueError):
        return -1


def _kill_after_round(out: Path, settings: list[str], after: int) -> None:
    run = subprocess.Popen(_simulate(*_sets(settings), "--out", str(out)), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 300
    rounds = out / "rounds.csv"
    while time.monotonic() < deadline and run.poll() is None:
        if _rounds_done(rounds) >= after:
            break
        time.sleep(0.05)
    run.send_signal(signal.SIGKILL)
    run.wait()
    assert not (out / "summary.json").exists(), "the run finished before it was killed"


SECURE = [s for s in SETTINGS if not s.startswith(("prune-method", "density", "value-codec"))] + [
    "secure-aggregation=true", "broadcast-rows=bandit", "bandit-items=0.5", "prune-method=randomk", "density=0.3"]


@pytest.mark.parametrize("settings", [SETTINGS + ["leakage-sample=5"], SECURE], ids=["top-k", "secure"])
def test_a_killed_run_resumes_to_the_uninterrupted_run(tmp_path, settings):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    done = subprocess.run(_simulate(*_sets(settings), "--out", str(whole)), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    _kill_after_round(killed, settings, 5)  # after the checkpoint of round 4, in the middle of the next
    resumed = subprocess.run(_simulate("--resume", str(killed)), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert _sha(whole / "model.npz") == _sha(killed / "model.npz")
    a, b = (json.loads((d / "summary.json").read_text()) for d in (whole, killed))
    assert a["metrics"] == b["metrics"] and a["comm"] == b["comm"] and a["clients"] == b["clients"]
    columns = [c for c in pd.read_csv(whole / "rounds.csv").columns if c != "seconds"]
    pd.testing.assert_frame_equal(pd.read_csv(whole / "rounds.csv")[columns], pd.read_csv(killed / "rounds.csv")[columns])
    pd.testing.assert_frame_equal(pd.read_csv(whole / "clients.csv"), pd.read_csv(killed / "clients.csv"))


def test_a_checkpoint_resumes_only_under_its_own_config(tmp_path):
    out = tmp_path / "run"
    short = [s for s in SETTINGS if not s.startswith("rounds=")] + ["rounds=2"]
    done = subprocess.run(_simulate(*_sets(short), "--out", str(out)), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    other = subprocess.run(_simulate("--resume", str(out), "--set", "density=0.2"), capture_output=True, text=True,
                           timeout=300)  # fmt: skip
    assert other.returncode == 2 and "density = 0.1" in other.stderr and "density = 0.2" in other.stderr
    missing = subprocess.run(_simulate("--resume", str(tmp_path / "nothing")), capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and "checkpoint.npz does not exist" in missing.stderr
