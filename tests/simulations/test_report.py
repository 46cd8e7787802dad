"""The report of a sweep from fabricated run folders: tables, ratios, frontier, report.md."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from prunus.simulations.cli import main
from prunus.simulations.grid import load_grid
from prunus.simulations.report import budgets
from prunus.simulations.runs import MANIFEST, point_record, read_runs, run_dir, write_json
from prunus.simulations.table import chosen_runs, make_tables

GRID = """
seeds = [0, 1]
baseline = {prune-method = "none"}
[set]
rounds = 2
[[grids]]
prune-method = ["none"]
[[grids]]
prune-method = ["topk-global"]
density = [0.1, 0.01]
[[grids]]
prune-method = ["randomk"]
density = [0.1]
"""
# (HR@10, uplink bytes) per setting, for seeds 0 and 1
FIGURES = {
    0: [(0.60, 1000), (0.62, 1000)],  # dense
    1: [(0.58, 200), (0.60, 210)],  # top-k 10%
    2: [(0.50, 20), (0.54, 22)],  # top-k 1%
    3: [(0.40, 205), (0.42, 205)],  # random-k 10%: dominated by top-k 10%
}


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """A sweep folder as `prunus sweep` leaves it, without running anything."""
    grid = tmp_path / "grid.toml"
    grid.write_text(GRID)
    out = tmp_path / "sweep"
    points = load_grid(grid)
    write_json(out / MANIFEST, {"grid": str(grid), "points": [point_record(p) for p in points]})
    for point in points:
        hr, up = FIGURES[point.setting][point.seed]
        folder = run_dir(out, point.name)
        write_json(folder / "point.json", point_record(point))
        write_json(folder / "summary.json", {
            "metrics": {"hr@10": hr, "ndcg@10": hr / 2}, "best": {"hr@10": hr + 0.01, "ndcg@10": hr / 2},
            "comm": {"uplink_bytes": up, "downlink_bytes": 5000, "dense_uplink_bytes": 1000,
                     "dense_downlink_bytes": 5000},
            "rounds": 2, "wall_seconds": 10.0 + point.seed, "config": point.config.to_dict(),
        })  # fmt: skip
        pd.DataFrame({"round": [0, 1, 2], "uplink_bytes": [0, up // 2, up - up // 2],
                      "downlink_bytes": [0, 2500, 2500], "hr@10": [0.1, np.nan, hr]}).to_csv(folder / "rounds.csv", index=False)  # fmt: skip
        (folder / "curve.png").write_bytes(b"png")
    return out


def _name(sweep: Path, setting: int, seed: int) -> str:
    points = json.loads((sweep / MANIFEST).read_text())["points"]
    return next(p["name"] for p in points if p["setting"] == setting and p["seed"] == seed)


def test_results_have_one_row_per_run_with_ratios_to_the_same_seed_baseline(sweep: Path):
    assert main(["report", str(sweep)]) == 0
    results = pd.read_csv(sweep / "results.csv")
    assert len(results) == 8 and list(results["setting"]) == [0, 0, 1, 1, 2, 2, 3, 3]
    assert {"prune-method", "density", "seed", "hr@10", "hr@10_best", "uplink_bytes", "downlink_bytes",
            "dense_uplink_bytes", "uplink_reduction", "hr@10_retained", "wall_seconds", "folder"} <= set(results)  # fmt: skip
    assert "rounds" in results and "dim" not in results  # only what varies is a setting column
    row = results[(results["setting"] == 1) & (results["seed"] == 1)].iloc[0]
    assert row["uplink_reduction"] == pytest.approx(1000 / 210)
    assert row["hr@10_retained"] == pytest.approx(0.60 / 0.62)
    assert row["downlink_reduction"] == 1.0 and row["method"] == "topk-global + EF"
    for _, run in results.iterrows():  # every figure is its run folder's
        summary = json.loads((sweep / run["folder"] / "summary.json").read_text())
        assert run["hr@10"] == summary["metrics"]["hr@10"]
        assert run["uplink_bytes"] == summary["comm"]["uplink_bytes"]
    assert pd.read_parquet(sweep / "results.parquet").equals(pd.read_csv(sweep / "results.csv"))


def test_settings_have_mean_spread_and_count(sweep: Path):
    main(["report", str(sweep)])
    settings = pd.read_csv(sweep / "settings.csv")
    assert list(settings["n"]) == [2, 2, 2, 2]
    topk1 = settings.iloc[2]
    assert topk1["density"] == 0.01 and topk1["hr@10_mean"] == pytest.approx(0.52)
    assert topk1["hr@10_std"] == pytest.approx(np.std([0.50, 0.54], ddof=1))
    assert topk1["uplink_bytes_mean"] == 21 and bool(settings.iloc[0]["baseline"])


def test_report_shows_the_frontier_budgets_and_every_run(sweep: Path):
    report = (Path(main(["report", str(sweep)]) == 0 and sweep) / "report.md").read_text()
    frontier = report.split("## Best setting")[0]
    assert "topk-global d=0.01" in frontier and "randomk d=0.1" not in frontier  # dominated
    budgets = report.split("## Best setting per uplink budget")[1].split("##")[0]
    assert "| <= 50 B | topk-global d=0.01 | 0.5200 ± 0.0283 |" in budgets
    assert "| <= 200 B | topk-global d=0.01 |" in budgets  # top-k 10% (205 B) is over this budget
    assert "| <= 500 B | topk-global d=0.1 | 0.5900 ± 0.0141 |" in budgets
    assert "| <= 1 KB | dense | 0.6100 ± 0.0141 | 1 KB | 1.0x | 100.0% |" in budgets
    for _, run in pd.read_csv(sweep / "results.csv").iterrows():
        assert f"[{run['run']}]({run['folder']}) | {run['seed']} | {run['hr@10']:.4f} |" in report
    for figure in ("frontier.png", "curves.png", "bytes.png"):
        assert f"({figure})" in report and (sweep / figure).stat().st_size > 10_000


def test_curves_of_chosen_settings_or_of_each_methods_best(sweep: Path):
    tables = make_tables(read_runs(sweep)[0])
    assert list(chosen_runs(tables, None)["label"]) == ["dense", "topk-global d=0.1", "randomk d=0.1"]
    chosen = chosen_runs(tables, ["topk-global d=0.01", "dense"])
    assert list(chosen["label"]) == ["topk-global d=0.01", "dense"] and (chosen["seed"] == 0).all()
    assert main(["report", str(sweep), "--curves", "topk-global d=0.01", "dense"]) == 0
    assert "for the chosen settings (first seed)" in (sweep / "report.md").read_text()


def test_unknown_curve_label_fails_naming_it_and_the_labels(sweep: Path, capsys):
    assert main(["report", str(sweep), "--curves", "topk d=7"]) == 2
    err = capsys.readouterr().err
    assert "'topk d=7'" in err and "'topk-global d=0.01'" in err


@pytest.mark.parametrize(
    "low, high, expected",
    [(21, 1000, [50, 100, 200, 500, 1000]), (1.01e7, 1.12e9, [2e7, 5e7, 1e8, 2e8, 5e8, 1e9, 2e9]), (300, 300, [500])],
)
def test_budgets_step_1_2_5_from_the_cheapest_to_the_dearest_setting(low, high, expected):
    assert budgets(low, high) == pytest.approx(expected)


def test_runs_that_lost_replies_are_named(sweep: Path):
    lossy = run_dir(sweep, _name(sweep, 2, 1))
    summary = json.loads((lossy / "summary.json").read_text())
    write_json(lossy / "summary.json", summary | {"failures": 7, "rejected": 1})
    main(["report", str(sweep)])
    results = pd.read_csv(sweep / "results.csv").set_index("run")
    assert (results.loc[lossy.name, ["failures", "rejected"]] == [7, 1]).all()
    assert results["failures"].sum() == 7
    assert f"`{lossy.name}` (7 / 1)" in (sweep / "report.md").read_text()


def test_incomplete_or_changed_runs_are_left_out_and_named(sweep: Path):
    dense_seed1 = run_dir(sweep, _name(sweep, 0, 1))
    (dense_seed1 / "curve.png").unlink()  # killed before its last output
    changed = run_dir(sweep, _name(sweep, 3, 0))
    summary = json.loads((changed / "summary.json").read_text())
    summary["config"]["dim"] = 7  # ran with another config than the point's
    write_json(changed / "summary.json", summary)
    runs, missing = read_runs(sweep)
    assert sorted(missing) == sorted([dense_seed1.name, changed.name]) and len(runs) == 6
    main(["report", str(sweep)])
    results = pd.read_csv(sweep / "results.csv")
    row = results[(results["setting"] == 1) & (results["seed"] == 1)].iloc[0]
    assert row["uplink_reduction"] == pytest.approx(1000 / 210)  # the baseline's seeds' mean: seed 0 alone
    assert row["hr@10_retained"] == pytest.approx(0.60 / 0.60)
    assert dense_seed1.name in (sweep / "report.md").read_text()


def test_without_a_manifest_every_run_folder_is_reported(sweep: Path):
    (sweep / MANIFEST).unlink()
    runs, missing = read_runs(sweep)
    assert len(runs) == 8 and not missing
    assert [(r.point["setting"], r.point["seed"]) for r in runs][:3] == [(0, 0), (0, 1), (1, 0)]


def test_report_of_a_folder_without_runs_fails_cleanly(tmp_path: Path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "no complete runs" in capsys.readouterr().err


def test_leakage_measured_by_the_runs_gets_its_table_and_figure(sweep: Path):
    for folder in (sweep / "runs").iterdir():
        summary = json.loads((folder / "summary.json").read_text())
        dense = summary["config"]["prune-method"] == "none"
        summary["privacy"] = {"leak-direction-precision": 0.95 if dense else 0.6, "leak-norm-precision": 0.3,
                              "leak-membership-precision": 0.15}
        write_json(folder / "summary.json", summary)
    report = (Path(main(["report", str(sweep)]) == 0 and sweep) / "report.md").read_text()
    section = report.split("## Quality, bytes and leakage")[1].split("\n## ")[0]
    assert "| dense **(baseline)** | 2 | 0.6100 ± 0.0141 |" in section and "| 0.950 | 0.300 | 0.150 | - |" in section
    assert (sweep / "leakage.png").stat().st_size > 10_000
    assert pd.read_csv(sweep / "results.csv")["leak_direction"].notna().all()


def test_without_leakage_there_is_no_leakage_section(sweep: Path):
    report = (Path(main(["report", str(sweep)]) == 0 and sweep) / "report.md").read_text()
    assert "leakage" not in report.lower() and not (sweep / "leakage.png").exists()
