"""The ML-1M headline page quotes its run folders' summaries, figure for
figure, in two sections: the headline on the re-tuned schedule and the
previous one; each names the one commit its runs were all made at."""

import json
import re
from pathlib import Path

import pytest

RESULTS = Path(__file__).resolve().parents[2] / "docs" / "results"
PAGE = RESULTS / "ml1m-headline.md"
PREVIOUS = "## The previous headline"
# per section: (run folders, rounds, config of each row -> its run folder)
SECTIONS = {
    "now": (RESULTS / "runs" / "ml1m-headline-240", 240, {"ml1m-dense.toml": "dense", "ml1m-total.toml": "total"}),
    "previous": (RESULTS / "runs" / "ml1m-headline", 120,
                 {"ml1m-dense.toml": "dense", "ml1m-topk.toml": "topk", "ml1m-total.toml": "total",
                  "ml1m-total-int2.toml": "total-int2"}),
}


def _text(section: str) -> str:
    now, previous = PAGE.read_text().split(PREVIOUS)
    return now if section == "now" else previous


def _summary(section: str, run: str) -> dict:
    return json.loads((SECTIONS[section][0] / run / "summary.json").read_text())


def _row(section: str, config: str) -> dict[str, str]:
    lines = [line for line in _text(section).splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    row = next(line for line in lines if f"/{config}`" in line)
    return dict(zip(header, (c.strip() for c in row.strip("|").split("|"))))


@pytest.mark.parametrize("section, config", [(s, c) for s, (_, _, rows) in SECTIONS.items() for c in rows])
def test_headline_row_matches_the_run_summary(section, config):
    run = SECTIONS[section][2][config]
    row, summary, dense = _row(section, config), _summary(section, run), _summary(section, "dense")
    comm = summary["comm"]
    assert summary["config"]["eval-split"] == "test" and summary["rounds"] == SECTIONS[section][1]
    assert row["HR@10"] == f"{summary['metrics']['hr@10']:.4f}"
    assert row["NDCG@10"] == f"{summary['metrics']['ndcg@10']:.4f}"
    assert row["total bytes"] == f"{comm['total_bytes']:,}"
    assert row["x fewer total"] == f"{dense['comm']['total_bytes'] / comm['total_bytes']:.1f}x"
    assert row["uplink bytes"] == f"{comm['uplink_bytes']:,}"
    assert row["x fewer up"] == f"{dense['comm']['uplink_bytes'] / comm['uplink_bytes']:.1f}x"
    assert row["downlink bytes"] == f"{comm['downlink_bytes']:,}"
    assert row["request bytes"] == f"{comm['request_bytes']:,}"
    assert comm["total_bytes"] == comm["uplink_bytes"] + comm["downlink_bytes"] + comm["request_bytes"]


@pytest.mark.parametrize("section", SECTIONS)
def test_every_headline_run_was_made_at_the_commit_its_section_names(section):
    named = re.findall(r"made at commit\s+`([0-9a-f]{40})`", _text(section))
    assert len(set(named)) == 1, named
    for run in SECTIONS[section][2].values():
        assert _summary(section, run)["code"] == {"commit": named[0], "clean": True}, run


def test_the_committed_config_is_the_one_the_headline_ran():
    """The run's resolved config is what ml1m-total.toml resolves to today
    (but how clients keep their state, which "auto" resolves at run time, with the same results)."""
    from prunus.common.config import load

    ran = _summary("now", "total")["config"]
    today = load(RESULTS.parents[1] / "simulations" / "configs" / "ml1m-total.toml").to_dict()
    differ = {k for k in today if k not in ("engine", "out", "client-state-store") and ran.get(k) != today[k]}
    assert not differ, {k: (ran.get(k), today[k]) for k in differ}


def test_the_committed_config_moves_at_least_50x_fewer_bytes_and_the_page_says_how_far_below_dense_it_is():
    total, dense = _summary("now", "total"), _summary("now", "dense")
    assert dense["comm"]["total_bytes"] / total["comm"]["total_bytes"] >= 50
    gap = dense["metrics"]["hr@10"] - total["metrics"]["hr@10"]
    assert f"{gap:.4f} below" in _text("now")


def test_the_second_seed_paragraph_quotes_its_runs():
    folder = SECTIONS["now"][0] / "seed1"
    dense, total = (json.loads((folder / run / "summary.json").read_text()) for run in ("dense", "total"))
    paragraph = _text("now").split("**A second seed**")[1].split("\n\n")[0]
    named = _summary("now", "total")["code"]
    assert dense["code"] == total["code"] == named and total["config"]["seed"] == dense["config"]["seed"] == 1
    for summary in (dense, total):
        assert f"{summary['metrics']['hr@10']:.4f} / {summary['metrics']['ndcg@10']:.4f}" in paragraph
        assert f"{summary['comm']['total_bytes']:,}" in paragraph
    assert f"{dense['comm']['total_bytes'] / total['comm']['total_bytes']:.1f}x" in paragraph
    assert f"{dense['metrics']['hr@10'] - total['metrics']['hr@10']:.4f} below" in paragraph
