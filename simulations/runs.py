"""The folders of a sweep: where each point's run lives and when it is complete.

Shared by the sweep (what to skip on a rerun) and the report (what to
tabulate), so both agree on what "complete" means from the files alone.

    DIR/sweep.json              the points of the last `prunus sweep`, in grid order
    DIR/runs/<name>/point.json  the point: overrides, seed, baseline flag, config hash
    DIR/runs/<name>/...         the run's config.toml, simulate.log and outputs
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prunus.simulations.grid import Point, config_hash

MANIFEST = "sweep.json"
POINT = "point.json"
SUMMARY = "summary.json"
LAST_OUTPUT = "curve.png"  # the ServerApp writes it after summary.json and rounds.csv


@dataclass(frozen=True)
class Run:
    """A complete run folder: its point record and its summary."""

    folder: Path
    point: dict[str, Any]
    summary: dict[str, Any]

    @property
    def name(self) -> str:
        return self.folder.name


def run_dir(sweep: Path, name: str) -> Path:
    return sweep / "runs" / name


def point_record(point: Point) -> dict[str, Any]:
    return {
        "name": point.name,
        "setting": point.setting,
        "seed": point.seed,
        "overrides": point.overrides,
        "baseline": point.baseline,
        "config_hash": point.config_hash,
    }


def write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2) + "\n")


def complete_summary(folder: Path, expected_hash: str) -> dict[str, Any] | None:
    """summary.json if the run finished with the expected resolved config, else None."""
    try:
        summary = json.loads((folder / SUMMARY).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(summary, dict) or not (folder / LAST_OUTPUT).exists():
        return None
    if config_hash(summary.get("config", {})) != expected_hash:
        return None
    return summary


def read_runs(sweep: Path) -> tuple[list[Run], list[str]]:
    """Complete runs, in grid order, and the names of the points without a
    complete run. The points are those of DIR/sweep.json if there is one (so a
    folder left by an older grid is not reported), else every run folder."""
    manifest = sweep / MANIFEST
    if manifest.exists():
        names = [p["name"] for p in json.loads(manifest.read_text())["points"]]
    else:
        names = sorted(p.parent.name for p in (sweep / "runs").glob(f"*/{POINT}"))
    runs, missing = [], []
    for name in names:
        folder = run_dir(sweep, name)
        try:
            point = json.loads((folder / POINT).read_text())
        except (OSError, ValueError):
            missing.append(name)
            continue
        summary = complete_summary(folder, point["config_hash"])
        if summary is None:
            missing.append(name)
        else:
            runs.append(Run(folder, point, summary))
    runs.sort(key=lambda r: (r.point["setting"], r.point["seed"]))
    return runs, missing
