"""`prunus distill` on a real (small, in-process) run: each student is a run
folder that `prunus evaluate` re-scores to its figures and `prunus recommend`
serves, the table sets its bytes against the teacher's, and unusable inputs
fail with exit code 2 and a one-line reason."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest

from prunus.common.config import from_mapping
from prunus.common.datasets import load_split
from prunus.simulations.cli import main
from prunus.simulations.recommend import evaluate_run, open_run

SMALL = ["engine=inprocess", "synthetic-users=40", "synthetic-items=60", "eval-negatives=20", "dim=8",
         "rounds=2", "clients-per-round=12", "eval-every=2"]  # fmt: skip
FAST = ["pseudo-users=32", "profile-min=3", "profile-max=10", "distill-epochs=3", "distill-batch=16"]


def _sets(settings: list[str]) -> list[str]:
    return [arg for s in settings for arg in ("--set", s)]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("distill") / "teacher"
    assert main(["simulate", *_sets(SMALL), "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def distilled(teacher: Path) -> Path:
    out = teacher.parent / "students"
    argv = ["distill", str(teacher), "--dim", "2", "4", "--method", "svd", "ranking", "--out", str(out)]
    assert main([*argv, *_sets([*FAST, "eval-split=validation"])]) == 0
    return out


def test_the_table_has_the_teacher_then_each_student(distilled: Path, teacher: Path, capsys):
    rows = pd.read_csv(distilled / "distillation.csv")
    assert list(zip(rows["model"], rows["method"].fillna(""), rows["dim"])) == [
        ("teacher", "", 8), ("student", "svd", 2), ("student", "svd", 4), ("student", "ranking", 2),
        ("student", "ranking", 4)]  # fmt: skip
    assert rows["served_bytes"][0] == (teacher / "model.npz").stat().st_size
    assert (rows["served_bytes"][1:] < rows["served_bytes"][0]).all() and (rows["bytes_ratio"][1:] > 1).all()
    assert set(rows["eval_split"]) == {"validation"}
    assert json.loads((distilled / "distillation.json").read_text())["rows"][3]["folder"] == "ranking-d2"
    assert (distilled / "distillation.md").read_text().startswith("| model | method | dim | served bytes")


def test_a_student_is_a_run_folder_that_evaluate_rescores(distilled: Path, capsys):
    folder = distilled / "ranking-d4"
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["kind"] == "distilled" and summary["config"]["dim"] == 4
    assert summary["distill"]["method"] == "ranking" and len(summary["distill"]["losses"]) == 3
    run = open_run(folder)
    assert run.params["item_embedding.weight"].shape == (run.split.n_items, 4)
    assert evaluate_run(run)["hr@10"] == summary["metrics"]["hr@10"]
    capsys.readouterr()
    assert main(["evaluate", str(folder)]) == 0
    assert "= summary.json" in capsys.readouterr().out


def test_recommend_serves_a_student(distilled: Path, capsys):
    capsys.readouterr()
    assert main(["recommend", str(distilled / "svd-d2"), "--items", "1,2,3", "-n", "5"]) == 0
    out = capsys.readouterr().out
    assert "top 5 (given items excluded):" in out


def test_the_teacher_row_is_the_teachers_own_evaluation(distilled: Path, teacher: Path):
    """The teacher is re-scored on the split the students are (here validation)."""
    rows = pd.read_csv(distilled / "distillation.csv")
    run = open_run(teacher)
    cfg = from_mapping({"eval-split": "validation"}, base=run.cfg)
    assert evaluate_run(dataclasses.replace(run, cfg=cfg, split=load_split(cfg)))["hr@10"] == rows["hr@10"][0]


@pytest.mark.parametrize(("argv", "reason"), [
    (["--dim", "9"], "--dim 9: a student's width must be in 1..8"),
    (["--dim", "2", "--method", "teacher"], "--method teacher: expected one of svd"),
    (["--dim", "2", "--set", "pseudo-users=x"], "pseudo-users: expected int, got 'x'"),
    (["--dim", "2", "--set", "no-such-key=1"], "unknown config key 'no-such-key'"),
])  # fmt: skip
def test_bad_requests_exit_2_with_the_reason(teacher: Path, tmp_path: Path, capsys, argv: list[str], reason: str):
    capsys.readouterr()
    assert main(["distill", str(teacher), "--out", str(tmp_path / "out"), *argv, *_sets(FAST)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"prunus: error: {reason}") and err.count("\n") == 1, err


def test_a_folder_that_is_not_a_run_is_refused(tmp_path: Path, capsys):
    capsys.readouterr()
    assert main(["distill", str(tmp_path), "--dim", "2", "--out", str(tmp_path / "out")]) == 2
    assert "no summary.json" in capsys.readouterr().err
