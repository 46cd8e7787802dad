"""benchmarks/frontier.py: a point per run folder from its own summary, against the dense run, one split only."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "frontier.py"
spec = importlib.util.spec_from_file_location("frontier", SCRIPT)
frontier = importlib.util.module_from_spec(spec)
spec.loader.exec_module(frontier)


def _run(root: Path, name: str, hr: float, up: int, down: int, request: int, split: str = "validation") -> Path:
    folder = root / name
    folder.mkdir()
    summary = {"config": {"eval-split": split}, "metrics": {"hr@10": hr, "ndcg@10": hr / 2},
               "code": {"commit": "abc", "clean": True},
               "comm": {"uplink_bytes": up, "downlink_bytes": down, "request_bytes": request,
                        "total_bytes": up + down + request}}
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def test_each_run_is_a_point_against_the_dense_run(tmp_path):
    dense = _run(tmp_path, "dense", 0.8, 500, 500, 0)
    small = _run(tmp_path, "small", 0.79, 5, 10, 5)
    out = tmp_path / "out"
    frontier.main(["--dense", str(dense), "--out", str(out), str(small), str(dense)])
    rows = json.loads((out / "frontier.json").read_text())
    assert [r["run"] for r in rows] == ["dense", "small"]  # the dense run once, most bytes first
    assert rows[1]["x_fewer_total"] == 50.0 and rows[1]["hr@10_vs_dense"] == pytest.approx(-0.01)
    assert (out / "frontier.csv").read_text().count("\n") == 3 and (out / "frontier.png").stat().st_size > 0


def test_a_run_of_another_split_is_refused(tmp_path):
    dense = _run(tmp_path, "dense", 0.8, 500, 500, 0)
    other = _run(tmp_path, "other", 0.7, 5, 5, 0, split="test")
    with pytest.raises(SystemExit, match="split"):
        frontier.main(["--dense", str(dense), "--out", str(tmp_path / "out"), str(other)])
