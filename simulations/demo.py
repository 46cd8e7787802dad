"""`prunus demo`: dense FedAvg against a pruned federation, on the same data.

Runs `configs/demo.toml` (dense FedAvg) and `configs/demo-pruned.toml` (the
recommended pruning, both directions), each in its own process as `prunus
simulate` would, then prints one comparison (quality, bytes up, down and in
total, the ratios, wall time) and writes it as `comparison.csv`/`.json` with a
plot of HR@10 against cumulative total bytes (`comparison.png`).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

from prunus.common.results import short_bytes
from prunus.simulations.plots import plot_hr_against_total_bytes

CONFIGS = Path(__file__).parent / "configs"
RUNS = (("dense", "dense FedAvg", CONFIGS / "demo.toml"), ("pruned", "pruned", CONFIGS / "demo-pruned.toml"))


def run_demo(out: Path, verbose: bool = False) -> pd.DataFrame:
    """Both runs, then the comparison; returns its table."""
    for number, (name, title, config) in enumerate(RUNS, start=1):
        print(f"\n[prunus demo] {number}/{len(RUNS)}: {title} ({config.name})", flush=True)
        cmd = [sys.executable, "-m", "prunus.simulations.cli", "simulate", str(config), "--out", str(out / name)]
        subprocess.run([*cmd, *(["--verbose"] if verbose else [])], check=True)
    summaries = {name: json.loads((out / name / "summary.json").read_text()) for name, _, _ in RUNS}
    table = comparison(summaries)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "comparison.csv", index=False)
    (out / "comparison.json").write_text(json.dumps(table.to_dict(orient="records"), indent=2) + "\n")
    rounds = {title: pd.read_csv(out / name / "rounds.csv") for name, title, _ in RUNS}
    plot_hr_against_total_bytes(rounds, _hr(summaries), out / "comparison.png")
    print("\n" + format_comparison(table), flush=True)
    print(f"\n[prunus demo] runs, comparison.csv and comparison.png in {out}", flush=True)
    return table


def _hr(summaries: dict[str, dict]) -> str:
    return next(k for k in summaries["dense"]["metrics"] if k.startswith("hr@"))


def comparison(summaries: dict[str, dict]) -> pd.DataFrame:
    """One row per figure: dense, pruned, and dense/pruned where fewer is better."""
    dense, pruned = summaries["dense"], summaries["pruned"]
    hr = _hr(summaries)
    ndcg = hr.replace("hr@", "ndcg@")
    rows = [(hr.upper(), dense["metrics"][hr], pruned["metrics"][hr], None),
            (ndcg.upper(), dense["metrics"][ndcg], pruned["metrics"][ndcg], None)]  # fmt: skip
    for label, key in (("bytes up", "uplink_bytes"), ("bytes down", "downlink_bytes")):
        rows.append((label, dense["comm"][key], pruned["comm"][key], dense["comm"][key] / pruned["comm"][key]))
    total = [s["comm"]["uplink_bytes"] + s["comm"]["downlink_bytes"] for s in (dense, pruned)]
    rows.append(("bytes total", total[0], total[1], total[0] / total[1]))
    rows.append(("wall time (s)", dense["wall_seconds"], pruned["wall_seconds"], None))
    return pd.DataFrame(rows, columns=["figure", "dense", "pruned", "dense/pruned"])


def format_comparison(table: pd.DataFrame) -> str:
    """The table as the console shows it."""
    def cell(figure: str, value: float) -> str:
        if figure.startswith("bytes"):
            return short_bytes(int(value))
        return f"{value:.1f} s" if figure.startswith("wall") else f"{value:.4f}"

    lines = [("", "dense FedAvg", "pruned", "dense/pruned")]
    for row in table.itertuples(index=False):
        ratio = row[3]
        lines.append((row[0], cell(row[0], row[1]), cell(row[0], row[2]), f"{ratio:.1f}x" if ratio == ratio and ratio else ""))
    widths = [max(len(line[i]) for line in lines) for i in range(4)]
    body = ["  ".join(f"{c:<{w}}" if i == 0 else f"{c:>{w}}" for i, (c, w) in enumerate(zip(line, widths))) for line in lines]
    rule = "-" * len(body[0])
    return "\n".join([rule, body[0], rule, *body[1:], rule])
