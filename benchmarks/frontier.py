"""HR@10 against total bytes for a set of run folders: one point per run, the
dense baseline among them.

    python benchmarks/frontier.py --out docs/results/ml1m-frontier \
        --dense docs/results/ml1m-frontier/runs/dense docs/results/ml1m-frontier/runs/*

writes `frontier.csv` and `frontier.json` (a row per run: its label, split,
HR@10 / NDCG@10, uplink, downlink, request and total bytes, how many times
fewer total bytes than the dense run, HR@10 against the dense run's, the commit)
and `frontier.png` (log bytes across, HR@10 up, 50x and 100x marked) in
`--out`. Every figure comes from the runs' own `summary.json`; runs of another
split than the dense run's are refused, so a frontier never mixes splits.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def row(folder: Path, dense: dict) -> dict:
    """One run's point, against the dense run's summary."""
    s = json.loads((folder / "summary.json").read_text())
    if s["config"]["eval-split"] != dense["config"]["eval-split"]:
        raise SystemExit(f"{folder}: split {s['config']['eval-split']!r}, the dense run's is "
                         f"{dense['config']['eval-split']!r}")
    comm = s["comm"]
    return {
        "run": folder.name,
        "split": s["config"]["eval-split"],
        "hr@10": s["metrics"]["hr@10"],
        "ndcg@10": s["metrics"]["ndcg@10"],
        "uplink_bytes": comm["uplink_bytes"],
        "downlink_bytes": comm["downlink_bytes"],
        "request_bytes": comm["request_bytes"],
        "total_bytes": comm["total_bytes"],
        "x_fewer_total": dense["comm"]["total_bytes"] / comm["total_bytes"],
        "hr@10_vs_dense": s["metrics"]["hr@10"] - dense["metrics"]["hr@10"],
        "commit": (s.get("code") or {}).get("commit"),
    }


def plot(frame: pd.DataFrame, dense_total: int, out: Path) -> None:
    fig, ax = plt.subplots(figsize=(9, 6))
    for fewer, style in ((50, "--"), (100, ":")):
        ax.axvline(dense_total / fewer, color="grey", linestyle=style, linewidth=1)
        ax.text(dense_total / fewer, frame["hr@10"].max(), f" {fewer}x fewer", color="grey", va="top")
    dense = frame[frame["total_bytes"] == dense_total]
    ax.axhline(dense["hr@10"].iloc[0] - 0.01, color="tab:red", linestyle="--", linewidth=1, label="dense - 0.01")
    ax.scatter(frame["total_bytes"], frame["hr@10"], s=60, zorder=3)
    for _, r in frame.iterrows():
        ax.annotate(r["run"], (r["total_bytes"], r["hr@10"]), fontsize=8, xytext=(4, 4), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("total bytes, both directions (log)")
    ax.set_ylabel(f"HR@10 ({frame['split'].iloc[0]} split)")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (each with summary.json)")
    parser.add_argument("--dense", type=Path, required=True, help="the dense baseline's run folder")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    dense = json.loads((args.dense / "summary.json").read_text())
    folders = list(dict.fromkeys([args.dense, *args.runs]))
    frame = pd.DataFrame([row(f, dense) for f in folders]).sort_values("total_bytes", ascending=False)
    args.out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(args.out / "frontier.csv", index=False)
    (args.out / "frontier.json").write_text(json.dumps(frame.to_dict("records"), indent=2) + "\n")
    plot(frame, dense["comm"]["total_bytes"], args.out / "frontier.png")
    print(frame.to_string(index=False, float_format=lambda v: f"{v:.4f}"))


if __name__ == "__main__":
    main()
