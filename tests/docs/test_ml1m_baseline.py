"""The re-tuned ML-1M baseline page quotes its run folders' summaries figure
for figure, names the commit each run was made at, and its runs meet what the
page claims: the dense baseline reaches HR@10 0.68 on the test split, and the
previous dense config runs its 120 rounds on Flower's engine in under 190 s."""

import json
from pathlib import Path

import pytest

RESULTS = Path(__file__).resolve().parents[2] / "docs" / "results"
PAGE = RESULTS / "ml1m-baseline.md"
RUNS = RESULTS / "runs" / "ml1m-baseline"


def _table(after: str = "## Test split") -> list[dict[str, str]]:
    """The rows of the first table below the heading `after`."""
    text = PAGE.read_text().split(f"\n{after}\n", 1)[1]
    lines = []
    for line in text.splitlines():
        if line.startswith("|"):
            lines.append(line)
        elif lines:
            break
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(header, (c.strip() for c in line.strip("|").split("|")))) for line in lines[2:]]


def _rows() -> dict[str, dict[str, str]]:
    return {row["run folder"].strip("`").removeprefix("runs/ml1m-baseline/"): row for row in _table()}


def _summary(run: str) -> dict:
    return json.loads((RUNS / run / "summary.json").read_text())


def test_every_run_folder_has_its_row_and_every_row_its_folder():
    assert set(_rows()) == {p.name for p in RUNS.iterdir() if (p / "summary.json").exists()}


@pytest.mark.parametrize("run", sorted(p.name for p in RUNS.iterdir()) if RUNS.exists() else [])
def test_a_row_is_its_runs_summary(run):
    row, summary = _rows()[run], _summary(run)
    assert summary["config"]["eval-split"] == "test" and summary["config"]["engine"] == "flower"
    assert summary["code"] == {"commit": row["commit"].strip("`"), "clean": True}
    assert row["rounds"] == str(summary["rounds"]) and row["d"] == str(summary["config"]["dim"])
    assert row["HR@10"] == f"{summary['metrics']['hr@10']:.4f}"
    assert row["NDCG@10"] == f"{summary['metrics']['ndcg@10']:.4f}"
    assert row["total bytes"] == f"{summary['comm']['total_bytes']:,}"
    assert row["uplink bytes"] == f"{summary['comm']['uplink_bytes']:,}"
    assert row["wall time"] == f"{summary['wall_seconds']:.0f} s"


def test_the_runs_meet_what_the_page_claims():
    assert _summary("dense")["metrics"]["hr@10"] >= 0.68
    previous = _summary("dense-previous")
    assert previous["rounds"] == 120 and previous["wall_seconds"] < 190
    assert abs(previous["metrics"]["hr@10"] - 0.6594) <= 0.005


def test_the_page_states_top_ks_time_against_the_dense_runs():
    dense, topk = _summary("dense"), _summary("topk")
    assert dense["code"] == topk["code"]  # made back to back, at one commit
    ratio = f"{topk['wall_seconds'] / dense['wall_seconds']:.2f}x"
    assert ratio in " ".join(PAGE.read_text().split())
    readme = (RESULTS.parents[1] / "README.md").read_text()
    assert f"({ratio} the dense run" in " ".join(readme.split())


NEUMF = RESULTS / "runs" / "ml1m-neumf"


def _neumf_rows() -> dict[str, dict[str, str]]:
    return {row["run folder"].strip("`").removeprefix("runs/ml1m-neumf/"): row for row in _table("## NeuMF, federated and centralized")}


def test_every_neumf_run_folder_has_its_row_and_every_row_its_folder():
    assert set(_neumf_rows()) == {p.name for p in NEUMF.iterdir() if (p / "summary.json").exists()}


@pytest.mark.parametrize("run", sorted(p.name for p in NEUMF.iterdir()) if NEUMF.exists() else [])
def test_a_neumf_row_is_its_runs_summary(run):
    row, summary = _neumf_rows()[run], json.loads((NEUMF / run / "summary.json").read_text())
    config = summary["config"]
    assert config["model"] == "neumf" and config["eval-split"] == "test"
    assert summary["code"] == {"commit": row["commit"].strip("`"), "clean": True}
    assert row["d"] == str(config["dim"])
    assert row["HR@10"] == f"{summary['metrics']['hr@10']:.4f}"
    assert row["NDCG@10"] == f"{summary['metrics']['ndcg@10']:.4f}"
    total = summary["comm"].get("total_bytes", 0)  # centralized: nothing travels
    assert row["total bytes"] == (f"{total:,}" if total else "-")
    assert row["wall time"] == f"{summary['wall_seconds']:.0f} s"
    if summary["kind"] == "federated":  # the committed config resolves to the one that ran
        from prunus.common.config import Config, load

        committed, defaults = load(RESULTS.parents[1] / row["config"].strip("`")).to_dict(), Config().to_dict()
        # a key added since the run stands at its default there
        differ = {k for k in committed if k not in ("engine", "out") and config.get(k, defaults[k]) != committed[k]}
        assert not differ, {k: (config.get(k), committed[k]) for k in differ}
