"""ML-1M dense rounds on each tested Flower release, prunus's accelerators on and off, back to back.

Each setting runs `simulations/configs/ml1m-dense.toml` for `--rounds` rounds
(central evaluation only after the last) on Flower's Simulation Engine, in
the venv that holds that Flower release (`.venv`: the lock's flwr 1.41.0;
`.venv-flwr142`: the compatibility lock's 1.42.0, made by `make
test-compat`). "off" sets every accelerator of `common/flower_compat.py` that
a config key switches to stock Flower. The settings run one after another,
`--repeats` times in turn, so the machine's load falls on all of them alike;
each run's median training round (round 1, Ray's start, left out) and its
wall time are reported, with the ratios to flwr 1.41 with the accelerators on.

    python benchmarks/flower_versions.py [--rounds 8] [--repeats 1] [--out benchmarks/results/flower_versions.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENVS = {"1.41.0": ROOT / ".venv", "1.42.0": ROOT / ".venv-flwr142"}
OFF = ["fast-dispatch=false", "fast-submit=false", "fast-discovery=false", "reply-wait=false", "actor-pipeline=1",
       "client-batch=1"]  # fmt: skip


def _run(venv: Path, accelerators: bool, rounds: int, out: Path) -> dict:
    settings = [f"rounds={rounds}", f"eval-every={rounds}", *([] if accelerators else OFF)]
    cmd = [str(venv / "bin" / "python"), "-m", "prunus.simulations.cli", "simulate",
           str(ROOT / "simulations" / "configs" / "ml1m-dense.toml"), "--out", str(out),
           *(arg for s in settings for arg in ("--set", s))]  # fmt: skip
    started = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - started
    with open(out / "rounds.csv", newline="") as handle:
        seconds = [float(row["seconds"]) for row in csv.DictReader(handle) if int(row["round"]) >= 2]
    summary = json.loads((out / "summary.json").read_text())
    return {"median_round_s": statistics.median(seconds), "round_seconds": seconds, "wall_s": wall,
            "hr@10": summary["metrics"]["hr@10"], "bytes": summary["comm"]["total_bytes"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "flower_versions.json"))
    args = parser.parse_args()
    missing = [str(v) for v in VENVS.values() if not (v / "bin" / "python").exists()]
    if missing:
        raise SystemExit(f"missing venv(s) {missing}: run `make install` and `make test-compat` first")
    settings = [(flwr, on) for flwr in VENVS for on in (True, False)]
    runs: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for flwr, on in settings:
                name = f"flwr {flwr}, accelerators {'on' if on else 'off'}"
                result = _run(VENVS[flwr], on, args.rounds, Path(tmp) / f"{repeat}-{flwr}-{on}")
                runs.setdefault(name, []).append(result)
                print(f"{name:>34}: median round {result['median_round_s']:6.2f} s, wall {result['wall_s']:6.1f} s",
                      flush=True)
    base = statistics.median(r["median_round_s"] for r in runs["flwr 1.41.0, accelerators on"])
    table = {name: {"median_round_s": statistics.median(r["median_round_s"] for r in results),
                    "wall_s": statistics.median(r["wall_s"] for r in results),
                    "round_ratio_to_1.41_on": statistics.median(r["median_round_s"] for r in results) / base,
                    "hr@10": results[0]["hr@10"], "bytes": results[0]["bytes"], "runs": results}
             for name, results in runs.items()}
    report = {"command": "python benchmarks/flower_versions.py " + " ".join(f"--{k} {v}" for k, v in vars(args).items()
                                                                           if k != "out"),
              "config": "simulations/configs/ml1m-dense.toml", "results": table, "machine": platform.platform()}
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    for name, row in table.items():
        print(f"{name:>34}: {row['median_round_s']:6.2f} s a round ({row['round_ratio_to_1.41_on']:.2f}x)")


if __name__ == "__main__":
    main()
