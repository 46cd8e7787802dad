"""How a round scales with the number of clients: 6,040 against 100,000 SuperNodes.

Synthetic data of ML-1M's shape (3,706 items, about 165 interactions per
user, one client per user), MF d=32, 256 clients per round, 3 rounds, through
Flower's Simulation Engine with `prunus simulate`. For each federation size it
records the time until round 1 starts (data, Ray, actors, partition discovery
from the engine's node map confirmed by 32 nodes, and round 0's central
evaluation of every user), the bytes discovery sent, the seconds of each
training round (round 1 also loads the data set in each client actor, round 3
also runs the central evaluation: round 2 is the one compared), and the
peak resident memory of the driver and of each client actor (sampled every 0.5 s).
Client state lives in the run's client-state store, not in the driver.

    python benchmarks/federation_size.py [--sizes 6040 100000] [--out benchmarks/results/federation_size.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ["dataset=synthetic", "synthetic-items=3706", "synthetic-interactions=165", "dim=32", "rounds=3",
            "clients-per-round=256", "eval-every=100", "partition=user"]  # fmt: skip


def run(users: int, out: Path) -> dict[str, float]:
    args = [sys.executable, "-m", "prunus.simulations.cli", "simulate", "--out", str(out),
            *(a for s in [*SETTINGS, f"synthetic-users={users}"] for a in ("--set", s))]  # fmt: skip
    log_path = out.with_suffix(".log")
    peak: dict[str, int] = {}
    until_round_1: float | None = None  # when round 0's line appears
    started = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        driver = psutil.Process(proc.pid)
        while proc.poll() is None:
            if until_round_1 is None and re.search(r"round +0/", log_path.read_text()):
                until_round_1 = time.perf_counter() - started
            try:
                peak["driver"] = max(peak.get("driver", 0), driver.memory_info().rss)
                for p in psutil.process_iter(["cmdline"]):
                    if "ClientAppActor" in " ".join(p.info["cmdline"] or []):
                        peak[f"actor {p.pid}"] = max(peak.get(f"actor {p.pid}", 0), p.memory_info().rss)
            except psutil.Error:
                pass
            time.sleep(0.5)
    assert proc.returncode == 0, log_path.read_text()[-3000:]
    rounds = pd.read_csv(out / "rounds.csv")
    discovery_log = (out / "run.log").read_text()
    actors = [v for k, v in peak.items() if k.startswith("actor")]
    return {
        "wall_s": time.perf_counter() - started,
        "until_round_1_s": float("nan") if until_round_1 is None else until_round_1,
        "round_1_s": float(rounds.loc[rounds["round"] == 1, "seconds"].item()),
        "round_2_s": float(rounds.loc[rounds["round"] == 2, "seconds"].item()),
        "discovery_downlink_bytes": int(rounds.loc[rounds["round"] == 0, "downlink_bytes"].item()),
        "engine_map": "partitions from the simulation engine's node map" in discovery_log,
        "driver_peak_rss_mb": peak.get("driver", 0) / 2**20,
        "actor_peak_rss_mb": max(actors, default=0) / 2**20,
        "actors": len(actors),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[6040, 100000])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "federation_size.json"))
    args = parser.parse_args()
    results = {}
    for users in args.sizes:
        results[str(users)] = figures = run(users, Path("/tmp") / f"federation-size-{users}")
        print(f"{users} clients: " + ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
                                               for k, v in figures.items()), flush=True)  # fmt: skip
    small, large = (results[str(n)] for n in (min(args.sizes), max(args.sizes)))
    round_ratio = large["round_2_s"] / small["round_2_s"]  # round 1 also loads the data in the actors
    report = {
        "command": "python benchmarks/federation_size.py " + " ".join(  # paths as seen from the checkout
            f"--{k} {os.path.relpath(v, ROOT) if k == 'out' else v}" for k, v in vars(args).items()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_average": os.getloadavg()},
        "settings": SETTINGS,
        "results": results,
        "round_ratio_largest_over_smallest": round_ratio,
    }
    print(f"a round at {max(args.sizes)} clients costs {round_ratio:.2f}x one at {min(args.sizes)}")
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
