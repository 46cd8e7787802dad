"""The committed ML-100K frontier: its report and results page quote the run
folders' summaries, figure for figure.

The generated report is checked twice: regenerated from the run folders it must
come out the same, and its tables are re-derived here from the summaries with
plain arithmetic (not the report's code). The hand-written page may quote only
figures that the checked report holds.
"""

import json
import re
import shutil
import statistics
from pathlib import Path

import pandas as pd
import pytest

from simulations.report import write_report

RESULTS = Path(__file__).resolve().parents[2] / "docs" / "results"
SWEEP = RESULTS / "ml100k-frontier"
PAGE = RESULTS / "ml100k-frontier.md"


def _section(text: str, heading: str) -> str:
    return text.split(f"## {heading}\n")[1].split("\n## ")[0]


def _rows(section: str) -> list[list[str]]:
    """The body rows of the first markdown table in `section`, as stripped cells."""
    lines = [line for line in section.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


def _summary(folder: str) -> dict:
    return json.loads((SWEEP / folder / "summary.json").read_text())


def _point(folder: str) -> dict:
    return json.loads((SWEEP / folder / "point.json").read_text())


def _spread(values: list[float]) -> str:
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


@pytest.fixture(scope="module")
def report() -> str:
    return (SWEEP / "report.md").read_text()


@pytest.fixture(scope="module")
def folders() -> list[str]:
    names = [p["name"] for p in json.loads((SWEEP / "sweep.json").read_text())["points"]]
    return [f"runs/{name}" for name in names]


def test_the_sweep_is_complete_with_two_seeds_per_setting(folders):
    assert len(folders) == 36
    seeds: dict[int, set[int]] = {}
    for folder in folders:
        summary, point = _summary(folder), _point(folder)
        assert (SWEEP / folder / "rounds.csv").exists() and summary["config"]["seed"] == point["seed"]
        assert summary["config"]["dataset"] == "ml-100k" and summary["rounds"] == 50
        seeds.setdefault(point["setting"], set()).add(point["seed"])
    assert len(seeds) == 18 and all(s == {0, 1} for s in seeds.values())


def test_report_regenerates_identically_from_the_run_folders(tmp_path: Path, report: str):
    copy = tmp_path / SWEEP.name
    shutil.copytree(SWEEP, copy)
    for output in [*copy.glob("*.png"), *copy.glob("*.csv"), *copy.glob("*.parquet"), copy / "report.md"]:
        output.unlink()  # from the run folders alone
    write_report(copy)
    assert (copy / "report.md").read_text() == report
    for table in ("results.csv", "settings.csv"):
        assert (copy / table).read_text() == (SWEEP / table).read_text(), table
    assert pd.read_parquet(SWEEP / "results.parquet").equals(pd.read_csv(SWEEP / "results.csv"))


def test_every_run_row_is_its_summary(report: str, folders):
    rows = _rows(_section(report, "All runs"))
    assert len(rows) == len(folders)
    baseline = {_point(f)["seed"]: _summary(f) for f in folders if _point(f)["baseline"]}
    for cells in rows:
        folder = re.fullmatch(r"\[.*\]\((.*)\)", cells[0]).group(1)
        summary, seed = _summary(folder), int(cells[1])
        assert seed == summary["config"]["seed"]
        assert cells[2:5] == [f"{summary['metrics']['hr@10']:.4f}", f"{summary['metrics']['ndcg@10']:.4f}",
                              f"{summary['best']['hr@10']:.4f}"]  # fmt: skip
        up, down = summary["comm"]["uplink_bytes"], summary["comm"]["downlink_bytes"]
        assert cells[5:7] == [f"{up:,}", f"{down:,}"]
        assert cells[7] == f"{baseline[seed]['comm']['uplink_bytes'] / up:.1f}x"
        assert cells[8] == f"{baseline[seed]['comm']['downlink_bytes'] / down:.1f}x"


def test_every_setting_row_is_the_mean_of_its_seeds_summaries(report: str, folders):
    by_setting: dict[int, list[dict]] = {}
    for folder in folders:
        by_setting.setdefault(_point(folder)["setting"], []).append(_summary(folder))
    baseline = next(_point(f)["setting"] for f in folders if _point(f)["baseline"])
    base_hr = {s["config"]["seed"]: s["metrics"]["hr@10"] for s in by_setting[baseline]}
    rows = _rows(_section(report, "All settings"))
    assert len(rows) == len(by_setting)
    for cells, (setting, summaries) in zip(rows, sorted(by_setting.items())):
        assert cells[1] == str(len(summaries))
        assert cells[2] == _spread([s["metrics"]["hr@10"] for s in summaries])
        assert cells[3] == _spread([s["metrics"]["ndcg@10"] for s in summaries])
        assert cells[4] == _spread([s["best"]["hr@10"] for s in summaries])
        kept = statistics.mean(s["metrics"]["hr@10"] / base_hr[s["config"]["seed"]] for s in summaries)
        assert cells[9] == f"{100 * kept:.1f}%"
        assert ("(baseline)" in cells[0]) == (setting == baseline)


# result figures as the report writes them: metrics (with their spread), ratios, byte sizes, percentages kept
FIGURE = re.compile(r"\d\.\d{4}(?: ± \d\.\d{4})?|\d+\.\dx|\d+(?:\.\d+)? [KMG]B|\d{2,3}\.\d%")


def _figures(text: str) -> set[str]:
    found = set(FIGURE.findall(text))
    return found | {f.split(" ± ")[0] for f in found}  # a mean may be quoted without its spread


def _unchecked(text: str, report: str) -> list[str]:
    """Result figures of `text` that are none of: the checked report's, the ML-1M
    headline table's (checked by its own test), the centralized ML-100K run's."""
    headline = (RESULTS / "ml1m-headline.md").read_text().splitlines()
    checked = _figures(report) | _figures("\n".join(line for line in headline if line.startswith("|")))
    centralized = json.loads((RESULTS / "runs" / "ml100k-centralized" / "summary.json").read_text())
    checked |= {f"{value:.4f}" for value in centralized["metrics"].values()}
    return sorted(set(FIGURE.findall(text)) - checked)


def test_the_results_page_quotes_only_checked_figures(report: str):
    """Every result figure of the page (0.5212 ± 0.0097, 78.5x, 94.8%, 1.12 GB) is one
    of the checked report's, or of the ML-1M headline table it compares with."""
    page = PAGE.read_text()
    assert len(FIGURE.findall(page)) > 40
    assert not _unchecked(page, report)
    for image in ("frontier.png", "curves.png", "bytes.png"):
        assert f"(ml100k-frontier/{image})" in page and (SWEEP / image).exists()


def test_the_readme_quotes_the_frontier_from_the_report(report: str):
    readme = (RESULTS.parents[1] / "README.md").read_text()
    paragraph = next(p for p in readme.split("\n\n") if p.startswith("ML-100K"))
    assert len(FIGURE.findall(paragraph)) >= 5 and not _unchecked(paragraph, report)
    assert "(docs/results/ml100k-frontier/frontier.png)" in readme and "(docs/results/ml100k-frontier.md)" in readme


def test_the_pages_frontier_is_the_reports_row_for_row(report: str):
    page = _rows(_section(PAGE.read_text(), "The frontier"))
    generated = _rows(_section(report, "Quality against uplink bytes"))
    assert [cells[1:] for cells in page] == [[c[2], c[3], c[5], c[6], c[9]] for c in generated]
