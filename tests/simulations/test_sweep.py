"""`prunus sweep` end to end on synthetic data: killed midway, resumed, re-reported.

Every point is a real `prunus simulate` (Flower + Ray). `--ray-address local`
gives each point a Ray of its own, whatever cluster this machine may know of.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from prunus.simulations.grid import load_grid
from prunus.simulations.runs import run_dir
from prunus.simulations.sweep import _Active, _Progress

pytestmark = pytest.mark.slow

GRID = """
seeds = [0, 1]
baseline = {prune-method = "topk-global", density = 0.5}

[set]
synthetic-users = 40
synthetic-items = 60
eval-negatives = 20
dim = 8
rounds = 3
clients-per-round = 12
eval-every = 1

[[grids]]
prune-method = ["topk-global", "randomk"]
density = [0.5, 0.1]
"""


def _command(grid: Path, out: Path, point_timeout: int = 240) -> list[str]:
    return [sys.executable, "-m", "prunus.simulations.cli", "sweep", str(grid), "--out", str(out), "--jobs", "2",
            "--ray-address", "local", "--point-timeout", str(point_timeout)]  # fmt: skip


def _sweep(command: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    """Run a sweep in its own process group, so that on a timeout its simulations stop with it."""
    sweep = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = sweep.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(sweep.pid, signal.SIGKILL)
        stdout, stderr = sweep.communicate()
        pytest.fail(f"the sweep ran past {timeout} s:\n{stdout[-3000:]}")
    return subprocess.CompletedProcess(command, sweep.returncode, stdout, stderr)


def _complete(out: Path) -> dict[str, float]:
    """Run folder name -> mtime of its summary.json, for runs that wrote their last output."""
    return {p.parent.name: (p.parent / "summary.json").stat().st_mtime for p in (out / "runs").glob("*/curve.png")}


def _kill_when_some_are_complete(grid: Path, out: Path, log: Path) -> None:
    sweep = subprocess.Popen(_command(grid, out), stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 300
    try:
        while len(_complete(out)) < 2:
            assert sweep.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
    finally:
        os.killpg(sweep.pid, signal.SIGKILL)  # the sweep and the simulations it started
        sweep.wait()


def test_killed_sweep_resumes_with_only_the_missing_points_and_report_reproduces(tmp_path: Path):
    grid, out = tmp_path / "grid.toml", tmp_path / "sweep"
    grid.write_text(GRID)
    _kill_when_some_are_complete(grid, out, tmp_path / "first.log")
    before = _complete(out)
    assert 2 <= len(before) < 8

    done = _sweep(_command(grid, out))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    after = _complete(out)
    assert len(after) == 8
    assert all(after[name] == mtime for name, mtime in before.items())  # not run again
    started = {line.split()[-1] for line in done.stdout.splitlines() if line.startswith("[sweep] start ")}
    skipped = {line.split()[-2] for line in done.stdout.splitlines() if line.startswith("[sweep] skip ")}
    assert skipped == set(before) and started == set(after) - set(before)
    assert "8/8 complete" in done.stdout and f"skip {sorted(before)[0]} (complete)" in (out / "sweep.log").read_text()

    results = pd.read_csv(out / "results.csv")
    assert len(results) == 8 and set(results["run"]) == set(after)
    for _, row in results.iterrows():
        summary = json.loads((out / row["folder"] / "summary.json").read_text())
        assert row["hr@10"] == summary["metrics"]["hr@10"] and row["uplink_bytes"] == summary["comm"]["uplink_bytes"]
    point = json.loads((out / results["folder"][0] / "point.json").read_text())
    assert point["overrides"] == {"prune-method": "topk-global", "density": 0.5} and point["baseline"]
    assert (results.loc[results["baseline"], "uplink_reduction"] == 1.0).all()

    table = (out / "results.csv").read_text()
    for name in ("results.csv", "settings.csv", "report.md", "frontier.png"):
        (out / name).unlink()
    report = subprocess.run([sys.executable, "-m", "prunus.simulations.cli", "report", str(out)], capture_output=True, text=True)
    assert report.returncode == 0, report.stderr[-3000:]
    assert (out / "results.csv").read_text() == table
    assert (out / "report.md").exists() and (out / "frontier.png").exists() and (out / "settings.csv").exists()


def test_a_failing_point_is_reported_and_the_sweep_says_so(tmp_path: Path):
    """A point that fails at run time (its data has a bad line) is named with its
    exit code and log; the sweep's status says not every point completed."""
    data = tmp_path / "ml"
    data.mkdir()
    (data / "u.data").write_text("1\t2\t5\t100\n1\tx\t4\t101\n")
    grid = tmp_path / "grid.toml"
    grid.write_text(f'[set]\ndataset = "ml-100k"\ndata-dir = "{data}"\n[[grids]]\ndensity = [0.5, 0.1]\n')
    done = _sweep(_command(grid, tmp_path / "sweep"), timeout=300)
    assert done.returncode == 1
    assert "FAILED density=0.5_seed=0 (exit code 2, log: " in done.stdout
    assert "FAILED density=0.1_seed=0" in done.stdout and "no report: no complete runs" in done.stdout
    log = tmp_path / "sweep" / "runs" / "density=0.5_seed=0" / "simulate.log"
    assert "u.data" in log.read_text() and "line 2" in log.read_text()


def test_a_point_past_its_timeout_is_stopped_and_counted_failed(tmp_path: Path):
    grid = tmp_path / "grid.toml"
    grid.write_text("[set]\nrounds = 1000\n")
    done = _sweep(_command(grid, tmp_path / "sweep", point_timeout=3), timeout=120)
    assert done.returncode == 1
    assert "FAILED seed=0 (stopped after the point timeout of 3 s" in done.stdout
    assert "0/1 complete (0 skipped), 0 running, 1 failed" in done.stdout


def test_progress_shows_each_running_points_round_and_extrapolates_the_eta(tmp_path: Path):
    grid, out = tmp_path / "grid.toml", tmp_path / "sweep"
    grid.write_text(GRID)
    first, second = load_grid(grid)[:2]
    (run_dir(out, first.name)).mkdir(parents=True)
    (run_dir(out, first.name) / "rounds.csv").write_text("round,clients\n0,0\n1,12\n")  # 1 of 3 rounds done
    now = time.monotonic()
    active = [_Active(first, out, None, now - 30.0, None), _Active(second, out, None, now - 5.0, None)]
    progress = _Progress(tmp_path / "sweep.log", total=8, jobs=2, point_timeout=None)
    line = progress.status(active, pending=6)
    assert f"[{first.name}: round 1/3]" in line and f"[{second.name}: round 0/3]" in line
    # one point takes ~90 s (30 s for 1 of 3 rounds); 8 left of which 35 s are done, 2 at a time
    assert "ETA 5m43s" in line or "ETA 5m42s" in line
