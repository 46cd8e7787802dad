"""The ML-1M headline page quotes its run folders' summaries, figure for figure,
and names the one commit they were all made at."""

import json
import re
from pathlib import Path

import pytest

RESULTS = Path(__file__).resolve().parents[2] / "docs" / "results"
PAGE = RESULTS / "ml1m-headline.md"
RUNS = RESULTS / "runs" / "ml1m-headline"
# config of each row -> its run folder
ROWS = {"ml1m-dense.toml": "dense", "ml1m-topk.toml": "topk", "ml1m-total.toml": "total",
        "ml1m-total-int2.toml": "total-int2"}


def _summary(run: str) -> dict:
    return json.loads((RUNS / run / "summary.json").read_text())


def _row(config: str) -> dict[str, str]:
    lines = [line for line in PAGE.read_text().splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    row = next(line for line in lines if f"/{config}`" in line)
    return dict(zip(header, (c.strip() for c in row.strip("|").split("|"))))


@pytest.mark.parametrize("config, run", ROWS.items())
def test_headline_row_matches_the_run_summary(config, run):
    row, summary, dense = _row(config), _summary(run), _summary("dense")
    comm = summary["comm"]
    assert summary["config"]["eval-split"] == "test" and summary["rounds"] == 120
    assert row["HR@10"] == f"{summary['metrics']['hr@10']:.4f}"
    assert row["NDCG@10"] == f"{summary['metrics']['ndcg@10']:.4f}"
    assert row["total bytes"] == f"{comm['total_bytes']:,}"
    assert row["x fewer total"] == f"{dense['comm']['total_bytes'] / comm['total_bytes']:.1f}x"
    assert row["uplink bytes"] == f"{comm['uplink_bytes']:,}"
    assert row["x fewer up"] == f"{dense['comm']['uplink_bytes'] / comm['uplink_bytes']:.1f}x"
    assert row["downlink bytes"] == f"{comm['downlink_bytes']:,}"
    assert row["request bytes"] == f"{comm['request_bytes']:,}"
    assert comm["total_bytes"] == comm["uplink_bytes"] + comm["downlink_bytes"] + comm["request_bytes"]


def test_every_headline_run_was_made_at_the_commit_the_page_names():
    named = re.findall(r"made at commit `([0-9a-f]{40})`", PAGE.read_text())
    assert len(set(named)) == 1, named
    for run in ROWS.values():
        code = _summary(run)["code"]
        assert code == {"commit": named[0], "clean": True}, (run, code)


def test_the_committed_config_meets_the_bill():
    """ml1m-total.toml: at least 20x fewer total bytes than dense, HR@10 at most 0.01 below it."""
    total, dense = _summary("total"), _summary("dense")
    assert dense["comm"]["total_bytes"] / total["comm"]["total_bytes"] >= 20
    assert total["metrics"]["hr@10"] >= dense["metrics"]["hr@10"] - 0.01
