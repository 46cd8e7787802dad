"""The `prunus` command: bad input fails before work; centralized runs end to end."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

from prunus.simulations.cli import main

SMALL = ["--set", "synthetic-users=60", "--set", "synthetic-items=80", "--set", "eval-negatives=20", "--set", "dim=8"]


def test_bad_key_fails_before_any_work(tmp_path: Path, capsys):
    assert main(["simulate", "--set", "lerning-rate=1", "--out", str(tmp_path / "run")]) == 2
    assert "lerning-rate" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_bad_value_in_file_names_key(tmp_path: Path, capsys):
    config = tmp_path / "bad.toml"
    config.write_text('dataset = "netflix"\n')
    assert main(["centralized", str(config)]) == 2
    assert "dataset" in capsys.readouterr().err


def test_malformed_dataset_names_file_and_line(tmp_path: Path, capsys):
    data = tmp_path / "ml"
    data.mkdir()
    (data / "u.data").write_text("1\t2\t5\t100\n1\tx\t4\t101\n")
    assert main(["centralized", "--set", "dataset=ml-100k", "--set", f"data-dir={data}"]) == 2
    err = capsys.readouterr().err
    assert "u.data" in err and "line 2" in err


def test_centralized_writes_summary_rounds_and_curve(tmp_path: Path):
    out = tmp_path / "central"
    cmd = [sys.executable, "-m", "prunus.simulations.cli", "centralized", *SMALL, "--set", "centralized-epochs=4",
           "--set", "eval-every=2", "--out", str(out)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "hr@10" in done.stdout  # the final table
    summary = json.loads((out / "summary.json").read_text())
    assert 0.0 <= summary["metrics"]["hr@10"] <= 1.0
    assert summary["config"]["centralized-epochs"] == 4
    rounds = pd.read_csv(out / "rounds.csv")
    assert list(rounds["epoch"]) == [1, 2, 3, 4]
    assert rounds["hr@10"].notna().sum() == 2
    assert (out / "curve.png").stat().st_size > 1000
