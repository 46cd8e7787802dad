"""The committed ML-100K sweeps: their reports and results pages quote the run
folders' summaries, figure for figure.

Each generated report is checked twice: regenerated from the run folders it
must come out the same, and its tables are re-derived here from the summaries
with plain arithmetic (not the report's code). A hand-written page may quote
only figures that a checked table holds.
"""

import json
import re
import shutil
import statistics
from pathlib import Path

import pandas as pd
import pytest

from prunus.simulations.report import write_report

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "docs" / "results"
SETTINGS = {"ml100k-frontier": 18, "ml100k-downlink": 10, "ml100k-total": 16,
            "ml100k-leakage": 13, "ml100k-robust": 18,
            "ml100k-robust-default": 12, "ml100k-robust-default-validation": 41}  # sweep -> its settings


def _section(text: str, heading: str) -> str:
    return text.split(f"## {heading}\n")[1].split("\n## ")[0]


def _table(section: str) -> list[dict[str, str]]:
    """The first markdown table in `section`: one dict per body row, keyed by the header."""
    lines = [line for line in section.splitlines() if line.startswith("|")]
    header, *body = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[:1] + lines[2:]]
    return [dict(zip(header, cells)) for cells in body]


def _spread(values: list[float]) -> str:
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


@pytest.fixture(scope="module", params=sorted(SETTINGS))
def sweep(request) -> Path:
    return RESULTS / request.param


@pytest.fixture(scope="module")
def runs(sweep: Path) -> dict[str, tuple[dict, dict]]:
    """Run folder (as the report links it) -> (point.json, summary.json), in grid order."""
    names = [p["name"] for p in json.loads((sweep / "sweep.json").read_text())["points"]]
    return {f"runs/{n}": tuple(json.loads((sweep / "runs" / n / f).read_text()) for f in ("point.json", "summary.json"))
            for n in names}  # fmt: skip


def _baseline(runs: dict[str, tuple[dict, dict]]) -> dict[int, dict]:
    """The baseline's summary per seed."""
    return {point["seed"]: summary for point, summary in runs.values() if point["baseline"]}


def test_the_sweep_is_complete_with_two_seeds_per_setting(sweep: Path, runs):
    seeds: dict[int, set[int]] = {}
    for folder, (point, summary) in runs.items():
        assert (sweep / folder / "rounds.csv").exists() and summary["config"]["seed"] == point["seed"]
        assert summary["config"]["dataset"] == "ml-100k" and summary["rounds"] == 50
        seeds.setdefault(point["setting"], set()).add(point["seed"])
    assert len(seeds) == SETTINGS[sweep.name] and all(s == {0, 1} for s in seeds.values())


def test_report_regenerates_identically_from_the_run_folders(sweep: Path, tmp_path: Path):
    copy = tmp_path / sweep.name
    shutil.copytree(sweep, copy)
    for output in [*copy.glob("*.png"), *copy.glob("*.csv"), *copy.glob("*.parquet"), copy / "report.md"]:
        output.unlink()  # from the run folders alone
    write_report(copy)
    assert (copy / "report.md").read_text() == (sweep / "report.md").read_text()
    for table in ("results.csv", "settings.csv"):
        assert (copy / table).read_text() == (sweep / table).read_text(), table
    assert pd.read_parquet(sweep / "results.parquet").equals(pd.read_csv(sweep / "results.csv"))


def test_every_run_row_is_its_summary(sweep: Path, runs):
    rows = _table(_section((sweep / "report.md").read_text(), "All runs"))
    assert len(rows) == len(runs)
    baseline = _baseline(runs)
    for row in rows:
        folder = re.fullmatch(r"\[.*\]\((.*)\)", row["run"]).group(1)
        point, summary = runs[folder]
        seed, comm = point["seed"], summary["comm"]
        assert row["seed"] == str(seed) == str(summary["config"]["seed"])
        assert row["HR@10"] == f"{summary['metrics']['hr@10']:.4f}"
        assert row["NDCG@10"] == f"{summary['metrics']['ndcg@10']:.4f}"
        assert row["best HR@10"] == f"{summary['best']['hr@10']:.4f}"
        total = comm["uplink_bytes"] + comm["downlink_bytes"] + comm.get("request_bytes", 0)
        assert row["total bytes"] == f"{total:,}"
        assert row["request bytes"] == f"{comm.get('request_bytes', 0):,}"
        assert row["uplink bytes"] == f"{comm['uplink_bytes']:,}"
        assert row["downlink bytes"] == f"{comm['downlink_bytes']:,}"
        assert row["x fewer up"] == f"{baseline[seed]['comm']['uplink_bytes'] / comm['uplink_bytes']:.1f}x"
        assert row["x fewer down"] == f"{baseline[seed]['comm']['downlink_bytes'] / comm['downlink_bytes']:.1f}x"


def test_every_setting_row_is_the_mean_of_its_seeds_summaries(sweep: Path, runs):
    by_setting: dict[int, list[dict]] = {}
    for point, summary in runs.values():
        by_setting.setdefault(point["setting"], []).append(summary)
    baseline = _baseline(runs)
    base_setting = next(point["setting"] for point, _ in runs.values() if point["baseline"])
    rows = _table(_section((sweep / "report.md").read_text(), "All settings"))
    assert len(rows) == len(by_setting)

    def total(summary: dict) -> int:
        return summary["comm"]["uplink_bytes"] + summary["comm"]["downlink_bytes"] + summary["comm"].get("request_bytes", 0)

    for row, (setting, summaries) in zip(rows, sorted(by_setting.items())):
        assert row["n"] == str(len(summaries))
        assert row["HR@10"] == _spread([s["metrics"]["hr@10"] for s in summaries])
        assert row["NDCG@10"] == _spread([s["metrics"]["ndcg@10"] for s in summaries])
        assert row["best HR@10"] == _spread([s["best"]["hr@10"] for s in summaries])
        seed = [s["config"]["seed"] for s in summaries]
        kept = statistics.mean(s["metrics"]["hr@10"] / baseline[k]["metrics"]["hr@10"] for s, k in zip(summaries, seed))
        assert row["HR@10 kept"] == f"{100 * kept:.1f}%"
        fewer = statistics.mean(total(baseline[k]) / total(s) for s, k in zip(summaries, seed))
        assert row["x fewer total"] == f"{fewer:.1f}x"
        assert ("(baseline)" in row["setting"]) == (setting == base_setting)


# result figures as the reports write them: metrics (with their spread), ratios, byte sizes, percentages kept
FIGURE = re.compile(r"\d\.\d{4}(?: ± \d\.\d{4})?|\d+\.\dx|\d+(?:\.\d+)? [KMG]B|\d{2,3}\.\d%")


def _figures(text: str) -> set[str]:
    found = set(FIGURE.findall(text))
    return found | {f.split(" ± ")[0] for f in found}  # a mean may be quoted without its spread


def _unchecked(text: str, report: str) -> list[str]:
    """Result figures of `text` that are none of: the checked report's (or another
    committed sweep's), the ML-1M headline table's (checked by its own test), the
    centralized ML-100K run's."""
    headline = (RESULTS / "ml1m-headline.md").read_text().splitlines()
    checked = _figures(report) | _figures("\n".join(line for line in headline if line.startswith("|")))
    for other in SETTINGS:
        checked |= _figures((RESULTS / other / "report.md").read_text())
    centralized = json.loads((RESULTS / "runs" / "ml100k-centralized" / "summary.json").read_text())
    checked |= {f"{value:.4f}" for value in centralized["metrics"].values()}
    return sorted(set(FIGURE.findall(text)) - checked)


def test_the_results_page_names_the_code_its_runs_were_made_at(sweep: Path, runs):
    """A page states the commit its runs ran at (or that they predate recorded
    commits); it fails when a run was made at a commit other than the one named."""
    page = (RESULTS / f"{sweep.name}.md").read_text()
    made = {summary["code"]["commit"] if "code" in summary else "unrecorded" for _, summary in runs.values()}
    assert all(summary.get("code", {"clean": True})["clean"] for _, summary in runs.values())
    named = set(re.findall(r"made at commit `([0-9a-f]{40})`", page))
    if made == {"unrecorded"}:
        assert "made before runs recorded their commit" in page and not named
    else:
        assert named == made, f"the page names {sorted(named)}, its runs were made at {sorted(made)}"


def test_the_results_page_quotes_only_checked_figures(sweep: Path):
    """Every result figure of the page (0.5212 ± 0.0097, 78.5x, 94.8%, 1.12 GB) is one of
    the checked report's, or of the few other checked runs it compares with."""
    page = (RESULTS / f"{sweep.name}.md").read_text()
    assert len(FIGURE.findall(page)) > 20
    assert not _unchecked(page, (sweep / "report.md").read_text())
    for image in ("frontier.png", "frontier-total.png", "curves.png", "bytes.png"):
        assert (sweep / image).exists()
    assert f"({sweep.name}/report.md)" in page and re.search(rf"\({sweep.name}/frontier(-total)?\.png\)", page)


def test_the_frontier_pages_frontier_is_the_reports_row_for_row():
    sweep = RESULTS / "ml100k-frontier"
    page = _table(_section((RESULTS / "ml100k-frontier.md").read_text(), "The frontier"))
    generated = _table(_section((sweep / "report.md").read_text(), "Quality against uplink bytes"))
    columns = ["HR@10", "NDCG@10", "uplink bytes", "x fewer up", "HR@10 kept"]
    assert [[row[c] for c in columns] for row in page] == [[row[c] for c in columns] for row in generated]


def test_the_readme_quotes_the_frontier_from_the_report():
    readme = (ROOT / "README.md").read_text()
    paragraph = next(p for p in readme.split("\n\n") if p.startswith("ML-100K"))
    report = (RESULTS / "ml100k-frontier" / "report.md").read_text()
    assert len(FIGURE.findall(paragraph)) >= 5 and not _unchecked(paragraph, report)
    assert "(docs/results/ml100k-frontier/frontier.png)" in readme and "(docs/results/ml100k-frontier.md)" in readme


def test_the_leakage_page_quotes_the_reports_leakage_table_and_the_runs():
    """Attack precisions (three decimals) are not figures the generic check sees:
    the page's table is the report's, row for row, the report's is the runs'
    means, and the ML-1M figures are those runs' summaries."""
    sweep = RESULTS / "ml100k-leakage"
    page = (RESULTS / "ml100k-leakage.md").read_text()
    table = _table(_section(page, "Quality, bytes and leakage"))
    assert table == _table(_section((sweep / "report.md").read_text(), "Quality, bytes and leakage"))
    by_setting: dict[int, list[dict]] = {}
    for point in json.loads((sweep / "sweep.json").read_text())["points"]:
        summary = json.loads((sweep / "runs" / point["name"] / "summary.json").read_text())
        by_setting.setdefault(point["setting"], []).append(summary)
    assert len(table) == len(by_setting)
    for row, (_, runs) in zip(table, sorted(by_setting.items())):
        for attack in ("direction", "norm", "membership"):
            mean = statistics.mean(r["privacy"][f"leak-{attack}-precision"] for r in runs)
            assert row[attack] == f"{mean:.3f}"
    for run, figure in (("dense", "0.985"), ("topk", "0.794")):
        summary = json.loads((RESULTS / "runs" / "ml1m-leakage" / run / "summary.json").read_text())
        assert f"{summary['privacy']['leak-direction-precision']:.3f}" == figure and figure in page
