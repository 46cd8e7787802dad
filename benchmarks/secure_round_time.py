"""A secure round against the same compression without secure aggregation, back to back.

Issue 29's target: a secure setting's rounds take at most 3x those of the same
compression in plain rounds. Each variant runs `simulations/configs/
ml100k-dense.toml` (validation split, in-process engine, central evaluation
only after the last round) for `--rounds` rounds, one after another,
`--repeats` times in turn so the machine's load falls on all alike; a run's
figure is its median training round (`seconds` in rounds.csv; the last round,
which also evaluates, left out), and each secure variant is reported as a
ratio to its plain twin.

With `--config`, the pair is that secure config and its plain twin (the same
config with `secure-aggregation = false`), for example the ML-1M setting on
either engine:

    python benchmarks/secure_round_time.py [--rounds 20] [--repeats 1] [--out benchmarks/results/secure_round_time.json]
    python benchmarks/secure_round_time.py --config simulations/configs/ml1m-secure.toml --engine flower \
        --rounds 6 --out benchmarks/results/secure_round_time_ml1m.json
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOWRANK = ["prune-method=lowrank", "rank=8", "rank-basis=model", "error-feedback=false", "downlink-codec=int4"]
SECURE = ["secure-aggregation=true", "ring-clip=3.0"]
# plain twin -> its secure variant
PAIRS = {"dense": ([], SECURE), "lowrank-8-model-basis": (LOWRANK, [*LOWRANK, *SECURE, "ring-bits=16"])}


def _median_round(config: Path, settings: list[str], rounds: int, engine: str, out: Path) -> float:
    base = [f"engine={engine}", "eval-split=validation", f"rounds={rounds}", f"eval-every={rounds}"]
    cmd = [sys.executable, "-m", "prunus.simulations.cli", "simulate", str(config),
           "--out", str(out), *(arg for s in [*base, *settings] for arg in ("--set", s))]  # fmt: skip
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True)
    with (out / "rounds.csv").open() as f:
        seconds = [float(r["seconds"]) for r in csv.DictReader(f) if 0 < int(r["round"]) < rounds]
    return statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--config", type=Path, help="a secure config, timed against its plain twin")
    parser.add_argument("--engine", choices=("inprocess", "flower"), default="inprocess")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/secure_round_time.json")
    args = parser.parse_args()
    config, pairs = ROOT / "simulations/configs/ml100k-dense.toml", PAIRS
    if args.config is not None:
        config, pairs = args.config.resolve(), {args.config.stem: (["secure-aggregation=false"], [])}
    times: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for name, (plain, secure) in pairs.items():
                for kind, settings in (("plain", plain), ("secure", secure)):
                    out = Path(tmp) / f"{name}-{kind}-{repeat}"
                    times.setdefault(f"{name}/{kind}", []).append(
                        _median_round(config, settings, args.rounds, args.engine, out))
    options = f" --config {args.config}" if args.config else ""
    result = {
        "command": f"python benchmarks/secure_round_time.py{options} --engine {args.engine} --rounds {args.rounds} "
                   f"--repeats {args.repeats}",
        "config": str(config.relative_to(ROOT)),
        "engine": args.engine,
        "machine": f"{platform.processor() or platform.machine()}, {platform.python_version()}",
        "settings": {name: {"plain": plain, "secure": secure} for name, (plain, secure) in pairs.items()},
        "median_round_s": {key: round(statistics.median(v), 4) for key, v in times.items()},
        "secure_over_plain": {name: round(statistics.median(times[f"{name}/secure"]) /
                                          statistics.median(times[f"{name}/plain"]), 2) for name in pairs},
    }
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    result["commit"] = commit
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["secure_over_plain"], indent=2))


if __name__ == "__main__":
    main()
