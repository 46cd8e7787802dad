"""The ML-1M headline page quotes its run folders' summaries, figure for figure."""

import json
import re
from pathlib import Path

import pytest

RESULTS = Path(__file__).resolve().parents[2] / "docs" / "results"
ROWS = {"ml1m-dense.toml": "ml1m-dense", "ml1m-topk.toml": "ml1m-topk", "ml1m-topk-noef.toml": "ml1m-topk-noef"}


@pytest.mark.parametrize("config, run", ROWS.items())
def test_headline_row_matches_the_run_summary(config, run):
    row = next(line for line in (RESULTS / "ml1m-headline.md").read_text().splitlines() if f"/{config}`" in line)
    cells = [c.strip() for c in row.strip("|").split("|")]
    summary = json.loads((RESULTS / "runs" / run / "summary.json").read_text())
    assert float(cells[2]) == round(summary["metrics"]["hr@10"], 4)
    assert float(cells[3]) == round(summary["metrics"]["ndcg@10"], 4)
    assert int(cells[4].replace(",", "")) == summary["comm"]["uplink_bytes"]
    dense = json.loads((RESULTS / "runs" / "ml1m-dense" / "summary.json").read_text())
    ratio = float(re.sub(r"x$", "", cells[5]))
    assert ratio == round(dense["comm"]["uplink_bytes"] / summary["comm"]["uplink_bytes"], 1)
