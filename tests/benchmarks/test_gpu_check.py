"""benchmarks/gpu_check.py off the GPU: the skip, the device check and the metric comparison."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"
spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
gpu_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_check)


def _row(kind: str = "train", status: str = "accepted", device: str = "", peak: int = 0) -> dict[str, str]:
    return {"round": "1", "kind": kind, "partition": "3", "status": status, "cuda_device": device,
            "cuda_peak_bytes": str(peak)}


@pytest.mark.parametrize("cuda, available, reason", [
    (None, False, "is a CPU build"),
    ("13.0", False, "(CUDA 13.0) finds no CUDA device"),
])  # fmt: skip
def test_without_cuda_it_says_why_exits_0_and_writes_nothing(monkeypatch, tmp_path, capsys, cuda, available, reason):
    monkeypatch.setattr(torch.version, "cuda", cuda)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    monkeypatch.setattr(sys, "argv", ["gpu_check.py", "--out", str(tmp_path / "gpu_check.json")])
    gpu_check.main()  # returns: exit code 0
    out = capsys.readouterr().out
    assert out.startswith("gpu_check: skipped: torch ") and reason in out
    assert not (tmp_path / "gpu_check.json").exists()


def test_on_this_machine_without_cuda_the_script_exits_0_saying_why(tmp_path):
    if gpu_check.cuda_missing() is None:
        pytest.skip("this machine has CUDA: the check would run here")
    done = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "r.json")], capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0 and done.stdout == f"gpu_check: skipped: {gpu_check.cuda_missing()}\n", done
    assert torch.__version__ in done.stdout and not (tmp_path / "r.json").exists()


def test_a_gpu_run_passes_only_if_every_train_and_evaluate_reply_computed_on_cuda():
    good = [_row("train", device="cuda:0", peak=5_000), _row("evaluate", device="cuda:0", peak=1),
            _row("rows"),  # a row request runs no model
            _row("train", status="failed")]  # a failed reply says nothing of where it ran
    assert gpu_check.device_problems(good, on_gpu=True) == []
    (problem,) = gpu_check.device_problems([*good, _row("train", device="cuda:0", peak=0)], on_gpu=True)
    assert "0 bytes on CUDA" in problem  # the device was CUDA but the work held nothing there (numpy)
    (problem,) = gpu_check.device_problems([*good, _row("evaluate")], on_gpu=True)
    assert "device 'cpu'" in problem


def test_a_cpu_run_passes_only_if_no_reply_says_cuda():
    assert gpu_check.device_problems([_row(), _row("evaluate"), _row("train", status="failed")], on_gpu=False) == []
    assert len(gpu_check.device_problems([_row(), _row(device="cuda:0", peak=9)], on_gpu=False)) == 1


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])  # a loaded machine draws floats slowly
@given(st.floats(0, 1), st.floats(-0.1, 0.1), st.floats(0, 0.1))
def test_metric_gaps_are_the_absolute_differences_and_fail_above_the_tolerance(cpu, shift, tolerance):
    gpu = {"hr@10": cpu + shift, "ndcg@10": cpu}
    gaps, problems = gpu_check.metric_gaps({"hr@10": cpu, "ndcg@10": cpu}, gpu, tolerance)
    assert gaps == {"hr@10": abs(gpu["hr@10"] - cpu), "ndcg@10": 0.0}
    assert [p.split(":")[0] for p in problems] == (["hr@10"] if gaps["hr@10"] > tolerance else [])


def test_a_missing_or_nan_metric_fails():
    _, problems = gpu_check.metric_gaps({"hr@10": 0.5}, {"hr@10": float("nan"), "ndcg@10": 0.1}, 0.02)
    assert len(problems) == 2  # ndcg@10 missing on the CPU side, hr@10 NaN on the GPU side


def test_a_cpu_runs_outputs_read_back(tmp_path):
    """The run, its times and clients.csv as the check reads them (in process: the same files, no Ray)."""
    settings = [*gpu_check.DATA, "rounds=2", "eval-every=2", "engine=inprocess", "num-silos=4",
                "clients-per-round=4", "federated-eval-clients=4", "dim=8"]  # fmt: skip
    run = gpu_check._simulate([*settings, *gpu_check.MODELS["mf"]], tmp_path / "mf", cuda=False)
    assert set(run["metrics"]) == set(gpu_check.METRICS) and run["total_bytes"] > 0 and run["wall_s"] > 0
    assert run["replies_on_cuda"] == 0 and run["median_round_s"] >= 0
    kinds = {row["kind"] for row in run["rows"]}
    assert {"train", "evaluate"} <= kinds
    assert gpu_check.device_problems(run["rows"], on_gpu=False) == []
