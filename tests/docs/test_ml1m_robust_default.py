"""The ML-1M clean-cost page of the robust defaults quotes its two run
folders figure for figure, and they show what it claims: the same config and
bytes, the defences on in one and off in the other, HR@10 within 0.005."""

import csv
import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[2] / "docs" / "results"
PAGE = RESULTS / "ml1m-robust-default.md"
RUNS = RESULTS / "runs" / "ml1m-robust-default"
DEFENCES = ("zero-factor", "row-clip", "clip-quantile", "weight-cap")


def _summary(run: str) -> dict:
    return json.loads((RUNS / run / "summary.json").read_text())


def _counts(run: str) -> tuple[int, int, int]:
    rows = list(csv.DictReader((RUNS / run / "rounds.csv").open()))
    return tuple(sum(int(r[k] or 0) for r in rows) for k in ("clipped", "row_clipped", "zeroed"))


def test_the_page_quotes_each_runs_summary():
    lines = " ".join(PAGE.read_text().split())
    for run in ("defaults", "off"):
        s = _summary(run)
        clipped, row_clipped, zeroed = _counts(run)
        row = (f"| {s['metrics']['hr@10']:.4f} | {s['metrics']['ndcg@10']:.4f} | {s['comm']['total_bytes']:,} | "
               f"{clipped:,} | {row_clipped:,} | {zeroed:,} | `{s['code']['commit']}` | `runs/ml1m-robust-default/{run}` |")
        assert row in lines, row


def test_the_runs_differ_only_in_the_defences_and_cost_under_0005():
    on, off = _summary("defaults"), _summary("off")
    assert on["config"]["eval-split"] == off["config"]["eval-split"] == "test"
    assert {k: v for k, v in on["config"].items() if k not in DEFENCES + ("out",)} == \
        {k: v for k, v in off["config"].items() if k not in DEFENCES + ("out",)}
    assert all(off["config"][k] == 0 for k in DEFENCES) and all(on["config"][k] > 0 for k in DEFENCES)
    assert on["comm"]["total_bytes"] == off["comm"]["total_bytes"]
    assert abs(on["metrics"]["hr@10"] - off["metrics"]["hr@10"]) <= 0.005
