"""A secure round against the same compression without secure aggregation, back to back.

Issue 29's target: a secure setting's rounds take at most 3x those of the same
compression in plain rounds. Each variant runs `simulations/configs/
ml100k-dense.toml` (validation split, in-process engine, central evaluation
only before the first round and after the last) for `--rounds` rounds, one
after another, `--repeats` times in turn so the machine's load falls on all
alike. A run gives two figures for its training rounds (the last round, which
also evaluates, left out): the median of their wall-clock `seconds` in
rounds.csv, and the median of the CPU seconds its processes (the driver and,
under Flower, Ray's processes and actors) spent on each, read at each round's
end: on a machine other jobs load, the CPU figure is the steadier. Each secure
variant is reported as a ratio to its plain twin, by both. Evaluation is never
timed, so it runs cheaply (one fold-in epoch, the server's model only).

With `--config`, the pair is that secure config and its plain twin (the same
config with `secure-aggregation = false`), with `--set` changing both alike;
for example the ML-1M setting on either engine:

    python benchmarks/secure_round_time.py [--rounds 20] [--repeats 1] [--out benchmarks/results/secure_round_time.json]
    python benchmarks/secure_round_time.py --config simulations/configs/ml1m-secure.toml --set leakage-sample=0 \\
        --engine flower --rounds 6 --out benchmarks/results/secure_round_time_ml1m.json
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
LOWRANK = ["prune-method=lowrank", "rank=8", "rank-basis=model", "error-feedback=false", "downlink-codec=int4"]
SECURE = ["secure-aggregation=true", "ring-clip=3.0"]
# plain twin -> its secure variant
PAIRS = {"dense": ([], SECURE), "lowrank-8-model-basis": (LOWRANK, [*LOWRANK, *SECURE, "ring-bits=16"])}
# evaluation is not timed: the cheapest that still runs
UNTIMED = ["eval-split=validation", "fold-in-epochs=1", "eval-as-decoded=off"]
POLL_S = 0.05  # how often a run's rounds.csv is looked at for a finished round


def _tree_cpu(process: psutil.Process) -> float:
    """User + system CPU seconds of `process` and its descendants alive now."""
    total = 0.0
    for p in [process, *process.children(recursive=True)]:
        try:
            total += sum(p.cpu_times()[:2])
        except psutil.NoSuchProcess:  # ended since listed
            continue
    return total


def _rounds_done(out: Path) -> int:
    """How many rows rounds.csv has (it is rewritten at the end of each round)."""
    try:
        return max(0, len((out / "rounds.csv").read_text().splitlines()) - 1)
    except FileNotFoundError:
        return 0


def _median_round(config: Path, settings: list[str], rounds: int, engine: str, out: Path) -> tuple[float, float]:
    """(median wall seconds, median CPU seconds) of the run's training rounds 1 .. rounds-1."""
    base = [f"engine={engine}", *UNTIMED, f"rounds={rounds}", f"eval-every={rounds}"]
    cmd = [sys.executable, "-m", "prunus.simulations.cli", "simulate", str(config),
           "--out", str(out), *(arg for s in [*base, *settings] for arg in ("--set", s))]  # fmt: skip
    cpu_at: dict[int, float] = {}  # rows in rounds.csv -> the tree's CPU seconds when they were first seen
    with open(out.with_suffix(".log"), "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        tree = psutil.Process(proc.pid)
        while proc.poll() is None:
            done = _rounds_done(out)
            if done and done not in cpu_at:
                cpu_at[done] = _tree_cpu(tree)
            time.sleep(POLL_S)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.with_suffix('.log').read_text()[-3000:]}")
    with (out / "rounds.csv").open() as f:
        seconds = [float(r["seconds"]) for r in csv.DictReader(f) if 0 < int(r["round"]) < rounds]
    # round r ends with r + 1 rows (round 0 is the first): its CPU is what was spent since round r - 1's end
    cpu = [cpu_at[r + 1] - cpu_at[r] for r in range(1, rounds) if r in cpu_at and r + 1 in cpu_at]
    if len(cpu) < len(seconds):
        raise SystemExit(f"{out.name}: a round ended unseen (polled every {POLL_S} s)")
    return statistics.median(seconds), statistics.median(cpu)


def code_commit() -> str:
    """The commit of the prunus the runs import (the shim on PYTHONPATH may
    point at another checkout than this script's), "+dirty" with changes."""
    code = Path(importlib.util.find_spec("prunus.common").submodule_search_locations[0]).resolve().parent
    git = ["git", "-C", str(code)]
    commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
                           check=True).stdout.strip()
    return commit + ("+dirty" if dirty else "")


def _ratios(medians: dict[str, float], pairs: dict) -> dict[str, float]:
    return {name: round(medians[f"{name}/secure"] / medians[f"{name}/plain"], 2) for name in pairs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--config", type=Path, help="a secure config, timed against its plain twin")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="settings",
                        help="a config setting for both variants (with --config)")
    parser.add_argument("--engine", choices=("inprocess", "flower"), default="inprocess")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/secure_round_time.json")
    args = parser.parse_args()
    if args.rounds < 2:
        parser.error("--rounds must be at least 2: the last round, which evaluates, is not timed")
    if args.settings and args.config is None:
        parser.error("--set needs --config")
    if any("=" not in setting for setting in args.settings):
        parser.error("--set takes KEY=VALUE")
    config, pairs = ROOT / "simulations/configs/ml100k-dense.toml", PAIRS
    if args.config is not None:
        both = args.settings
        config, pairs = args.config.resolve(), {args.config.stem: ([*both, "secure-aggregation=false"], both)}
    load = os.getloadavg()[0]
    wall: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for name, (plain, secure) in pairs.items():
                for kind, settings in (("plain", plain), ("secure", secure)):
                    out = Path(tmp) / f"{name}-{kind}-{repeat}"
                    seconds, cpu_seconds = _median_round(config, settings, args.rounds, args.engine, out)
                    wall.setdefault(f"{name}/{kind}", []).append(seconds)
                    cpu.setdefault(f"{name}/{kind}", []).append(cpu_seconds)
    options = f" --config {args.config}" if args.config else ""
    options += "".join(f" --set {setting}" for setting in args.settings)
    median_wall = {key: statistics.median(v) for key, v in wall.items()}
    median_cpu = {key: statistics.median(v) for key, v in cpu.items()}
    result = {
        "command": f"python benchmarks/secure_round_time.py{options} --engine {args.engine} --rounds {args.rounds} "
                   f"--repeats {args.repeats}",
        "config": str(config.relative_to(ROOT)),
        "engine": args.engine,
        "machine": f"{platform.processor() or platform.machine()}, {platform.python_version()}, {os.cpu_count()} CPUs",
        # the 1-minute load average before and after: other jobs slow both variants, taken in turn
        "load_average": [round(load, 2), round(os.getloadavg()[0], 2)],
        "settings": {name: {"plain": plain, "secure": secure} for name, (plain, secure) in pairs.items()},
        "median_round_s": {key: round(v, 4) for key, v in median_wall.items()},
        "median_round_cpu_s": {key: round(v, 4) for key, v in median_cpu.items()},
        "secure_over_plain": _ratios(median_wall, pairs),
        "secure_over_plain_cpu": _ratios(median_cpu, pairs),
        "commit": code_commit(),
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"wall": result["secure_over_plain"], "cpu": result["secure_over_plain_cpu"]}, indent=2))


if __name__ == "__main__":
    main()
