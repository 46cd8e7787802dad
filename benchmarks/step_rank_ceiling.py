"""How good can any uplink be that sends a rank-r update of the item table each round?

Under secure aggregation every client of a round must share coordinates;
`lowrank` shares a rank-r column basis, so each round's step of an item
table has rank at most r, whatever the basis. This benchmark bounds every
such basis from above: plain dense FedAvg (per-row averaging) whose
aggregated step is replaced by its best rank-r approximation (truncated
SVD, which no shared basis can beat for that round), against the same run
untouched. ML-100K, MF d=32, 50 rounds x 100 clients, validation split,
in-process engine, 4-bit broadcast: the settings of
`simulations/experiments/ml100k-secure-explore.toml`, whose secure low-rank
runs it bounds.

    python benchmarks/step_rank_ceiling.py [--ranks 8 16] [--out benchmarks/results/step_rank_ceiling.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from prunus.common.config import load
from prunus.server import pipeline
from prunus.simulations.simulate import run_simulate

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "simulations/configs/ml100k-dense.toml"
SETTINGS = ["engine=inprocess", "eval-split=validation", "rounds=50", "clients-per-round=100", "eval-every=50",
            "downlink-codec=int4"]


def best_rank(step: dict[str, np.ndarray], rank: int) -> dict[str, np.ndarray]:
    """Each table wider than `rank` as its truncated SVD; the rest as it is."""
    out = {}
    for name, value in step.items():
        if value.ndim == 2 and value.shape[1] > rank:
            u, s, vt = np.linalg.svd(value.astype(np.float64), full_matrices=False)
            value = ((u[:, :rank] * s[:rank]) @ vt[:rank]).astype(np.float32)
        out[name] = value
    return out


def truncating(rank: int):
    """`AggregationPipeline.__init__` whose aggregator's step is cut to rank `rank`."""
    init = pipeline.AggregationPipeline.__init__

    def __init__(self, *args, **kwargs):
        init(self, *args, **kwargs)
        aggregate = self.aggregate
        self.aggregate = lambda *a, **k: best_rank(aggregate(*a, **k), rank)

    return __init__


def run(settings: list[str], out: Path, rank: int = 0) -> dict:
    cfg = load(CONFIG, [*SETTINGS, *settings, f"out={out}"])
    original = pipeline.AggregationPipeline.__init__
    if rank:
        pipeline.AggregationPipeline.__init__ = truncating(rank)
    try:
        run_simulate(cfg)
    finally:
        pipeline.AggregationPipeline.__init__ = original
    metrics = json.loads((out / "summary.json").read_text())["metrics"]
    return {k: round(v, 4) for k, v in metrics.items() if k in ("hr@10", "hr@10-server")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/step_rank_ceiling.json")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        results["dense d=32"] = run([], Path(tmp) / "dense")
        for rank in args.ranks:
            results[f"dense d=32, each step cut to rank {rank}"] = run([], Path(tmp) / f"cut{rank}", rank)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    args.out.write_text(json.dumps({"command": "python benchmarks/step_rank_ceiling.py --ranks "
                                    + " ".join(map(str, args.ranks)), "commit": commit, "hr@10": results}, indent=2)
                        + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
