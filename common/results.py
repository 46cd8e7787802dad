"""What a run leaves behind: summary.json, rounds.csv, curve.png, and the table.

Shared by federated and centralized runs so their outputs read the same.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd

# every file a run writes into its folder (prunus demo adds comparison.*), and
# the checkpoint and the clients' state store of a checkpointed run
RUN_FILES = ("summary.json", "rounds.csv", "clients.csv", "curve.png", "model.npz", "run.log", "checkpoint.npz")
RUN_FOLDERS = ("client-state",)


def clear_run_files(out: Path) -> None:
    """Remove an earlier run's outputs from `out` before a new run writes there,
    so that a folder never mixes two runs' files (other files are left alone)."""
    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)
    for name in RUN_FOLDERS:
        shutil.rmtree(out / name, ignore_errors=True)


def write_rounds(out: Path, rows: list[dict[str, Any]]) -> Path:
    """One row per round (or epoch); metrics are blank where not evaluated."""
    return _write_csv(out / "rounds.csv", rows)


def write_clients(out: Path, rows: list[dict[str, Any]], columns: list[str]) -> Path:
    """One row per client reply: round, partition, host, Ray node, status, bytes."""
    return _write_csv(out / "clients.csv", rows, columns)


def _write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=columns).to_csv(path, index=False)
    return path


def write_run(out: Path, kind: str, rows: list[dict[str, Any]], k: int, facts: dict[str, Any],
              config: dict[str, Any], x: str = "round") -> dict[str, Any]:
    """A finished run's outputs: summary.json (final and best metrics, then
    `facts` in their order, then the config), rounds.csv, curve.png; prints the
    final table and returns the summary."""
    evaluated = [r for r in rows if f"hr@{k}" in r and r[f"hr@{k}"] == r[f"hr@{k}"]]  # NaN: not evaluated
    final = evaluated[-1] if evaluated else {}
    keys = [key for key in final if key.startswith(("hr@", "ndcg@", "full-", "fed-"))]
    summary = {
        "kind": kind,
        "code": code_version(),
        "metrics": {key: float(final[key]) for key in keys},
        "best": {key: max(float(r[key]) for r in evaluated if key in r) for key in keys},
        **facts,
        "config": config,
    }
    write_summary(out, summary)
    write_rounds(out, rows)
    plot_curve(out, rows, k, x=x)
    print(format_table(summary), flush=True)
    return summary


@lru_cache(maxsize=1)
def code_version() -> dict[str, Any]:
    """The commit the code ran at and whether its tracked files matched it
    (`clean`), so a results page can name the code that made each figure;
    "unknown" outside a git checkout. Read once per process, at the start of
    a run (edits made while it runs are not the code it runs)."""
    repo = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=30,
                              check=True).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "clean": not git("status", "--porcelain", "--untracked-files=no")}
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "clean": False}


def write_summary(out: Path, summary: dict[str, Any]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "summary.json"
    path.write_text(json.dumps(_jsonable(summary), indent=2, sort_keys=False) + "\n")
    return path


def plot_curve(out: Path, rows: list[dict[str, Any]], k: int, x: str = "round") -> Path:
    """HR@k and NDCG@k against rounds (or epochs) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frame = pd.DataFrame(rows)
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for metric in (f"hr@{k}", f"ndcg@{k}"):
        if metric in frame:
            points = frame[[x, metric]].dropna()
            ax.plot(points[x], points[metric], marker="o", markersize=3, label=metric.upper())
    ax.set_xlabel(x)
    ax.set_ylabel("metric (held-out item vs sampled negatives)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = out / "curve.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def format_table(summary: dict[str, Any]) -> str:
    """The final table printed at the end of a run."""
    metrics = summary.get("metrics", {})
    comm = summary.get("comm", {})
    lines = [("run", summary.get("kind", "")), ("rounds", summary.get("rounds", ""))]
    lines += [(name, f"{value:.4f}") for name, value in metrics.items() if isinstance(value, float)]
    for key in ("total_bytes", "uplink_bytes", "downlink_bytes", "request_bytes", "protocol_bytes"):
        if key in comm and (comm[key] or key not in ("request_bytes", "protocol_bytes")):  # only where there were any
            lines.append((key.replace("_", " "), human_bytes(comm[key])))
    for key in ("total_ratio", "uplink_ratio", "downlink_ratio"):
        if isinstance(comm.get(key), float) and math.isfinite(comm[key]):
            lines.append((key.replace("_", " ") + " (dense/sent)", f"{comm[key]:.1f}x"))
    if "failures" in summary:  # federated runs: replies lost to client errors or to validation
        lines.append(("client replies failed", str(summary["failures"])))
        lines.append(("client replies rejected", str(summary["rejected"])))
        for key, what in (("zeroed", "client replies zeroed"), ("row-clipped", "client replies row-clipped"),
                          ("clipped", "client replies clipped"), ("weight-capped", "client replies weight-capped"),
                          ("refused", "rounds whose step was refused")):
            if summary.get(key):  # the defences' work, where they did any
                lines.append((what, str(summary[key])))
    lines.append(("wall time", f"{summary.get('wall_seconds', 0.0):.1f} s"))
    width = max(len(name) for name, _ in lines)
    rule = "-" * (width + 22)
    body = "\n".join(f"{name:<{width}}  {value}" for name, value in lines)
    return f"{rule}\n{body}\n{rule}"


def human_bytes(count: int) -> str:
    """`1,234,567 B (1.2 MB)`; plain bytes below 1 KB."""
    return f"{count:,} B ({short_bytes(count)})" if count >= 1000 else f"{count:,} B"


def short_bytes(count: int) -> str:
    """`1.2 MB`: decimal units, one decimal."""
    value = float(count)
    for unit in ("B", "KB", "MB", "GB"):
        if abs(value) < 1000:
            return f"{value:.1f} {unit}" if unit != "B" else f"{count} B"
        value /= 1000
    return f"{value:.1f} TB"


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):
        return value.item()
    return value
