"""What one client update costs, stage by stage, before and after, and what a round costs.

For a seeded sample of ML-1M users (one client per user, NCF split), runs the
client and server code of one round (`client.handlers` path, no Flower
runtime) and times each stage per client:

* local training (`client.local_update`): the PyTorch reference
  (`local-trainer = "torch"`, what every client ran before) against the closed
  form (`"auto"`), interleaved client by client, the fastest of 3 repeats of
  each (this machine is shared: interleaving keeps a burst of load from
  landing on one side only);
* pruning + encoding (the uplink method's client half), at the first visit
  and at visits 2-4, with the error-feedback residual the earlier ones left;
* the server's byte count of the reply: Flower's own objects (SHA-256 ids,
  deflated copies; what the server did before) against `common.wire_size`;
  decode + validation, and aggregation (amortised over the sample).

Configs: `ml1m-dense.toml` and `ml1m-topk.toml` as they are (MF d=64 with
L2) and as they were when the client step was rewritten (d=32, no L2), and
NeuMF (the dense config with `model = "neumf"`, PyTorch only). One thread, as a client
actor with one CPU.

With `--simulate`, it also runs `prunus simulate` for 10 rounds of each config
through Flower's Simulation Engine, back to back: before (the PyTorch client
step, Flower's own discovery, submission of the ClientApp with every
message, one Ray call per message), unbatched (the defaults, but one Ray call
per message) and after (the defaults): median round seconds, client updates
per second, start-up (Ray, actors, partition discovery) and the CPU the
driver, Ray's raylet and the client actors use in rounds 3-10.

    python benchmarks/client_step.py [--clients 200] [--data ../shared/datasets/ncf-ml-1m] [--simulate]
        [--out benchmarks/results/client_step.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

from prunus.client.local_update import local_data, local_update
from prunus.common.compression import UPLINK, RoundContext, make
from prunus.common.config import Config, load
from prunus.common.datasets import load_split, partitions
from prunus.common.flower_records import to_flower
from prunus.common.models import build_model
from prunus.common.params import wire_bytes
from prunus.common.payload import Content, MetricMap
from prunus.server.aggregation import aggregate
from prunus.server.validation import validate_train_reply

ROOT = Path(__file__).resolve().parents[1]
# `prunus simulate` settings of each variant of --simulate, over the config's own
SIMULATE_VARIANTS = {
    "before": ["local-trainer=torch", "fast-submit=false", "fast-discovery=false", "client-batch=1"],
    "unbatched": ["client-batch=1"],
    "after": [],
}
# the configs as they are (MF d=64 with L2), as they were when the client step
# was rewritten (d=32, no L2), and NeuMF
PREVIOUS = ["dim=32", "l2=0"]
CASES = (("mf-dense", "ml1m-dense.toml", []), ("mf-topk", "ml1m-topk.toml", []),
         ("mf-dense-d32", "ml1m-dense.toml", PREVIOUS), ("mf-topk-d32", "ml1m-topk.toml", PREVIOUS),
         ("neumf-dense", "ml1m-dense.toml", ["model=neumf", "local-lr=0.05", "local-lr-final=0"]))  # fmt: skip


def measure(cfg: Config, chosen: list[int]) -> dict[str, float]:
    """Mean ms per client of each stage, over the `chosen` partitions."""
    split, parts = load_split(cfg), partitions(cfg)
    m = cfg.model
    model = build_model(m.model, 1, split.n_items, m.dim, m.mlp_widths, seed=cfg.runtime.seed)
    shared = {k: v.numpy() for k, v in model.shared_state().items()}
    shapes = {k: v.shape for k, v in shared.items()}
    uplink = make(UPLINK, cfg.compression.prune_method, cfg)
    device, server_round = torch.device("cpu"), 1
    times: dict[str, list[float]] = {"local training": [], "pruning + encoding": [], "server byte count (Flower's objects)": [],
                                     "server byte count": [], "server decode + validation": []}  # fmt: skip
    updates = []
    for pid in chosen:
        data = local_data(split, np.asarray(parts[pid]))
        tick = time.perf_counter()
        result = local_update(cfg, data, split.n_items, shared, None, server_round, pid, device)
        tock = time.perf_counter()
        ctx = RoundContext(server_round, pid, cfg.runtime.seed, cfg.local_lr_at(server_round))
        encoded = uplink.encode(result.delta, None, ctx)
        reply = Content({"arrays": encoded.record,
                         "metrics": MetricMap({"num-examples": result.num_examples, "train-loss": result.loss})})
        t_enc = time.perf_counter()
        flower = sum(len(obj.deflate()) for obj in get_all_nested_objects(to_flower(reply)).values())
        t_flower = time.perf_counter()
        assert wire_bytes(reply) == flower
        t_count = time.perf_counter()
        update, num_examples, _ = validate_train_reply(reply, shapes, uplink)
        t_val = time.perf_counter()
        spans = (tock - tick, t_enc - tock, t_flower - t_enc, t_count - t_flower, t_val - t_count)
        for stage, seconds in zip(times, spans):
            times[stage].append(seconds)
        updates.append((update, 1.0))
    tick = time.perf_counter()
    aggregate(updates, shapes, cfg.federation.row_averaging)
    per_reply = (time.perf_counter() - tick) / len(chosen)
    out = {stage: 1e3 * statistics.mean(values) for stage, values in times.items()}
    out["server aggregation"] = 1e3 * per_reply
    out["pruning + encoding, visits 2-4"] = 1e3 * statistics.mean(later_visits(cfg, chosen, shared, uplink))
    return out


def later_visits(cfg: Config, chosen: list[int], shared: dict[str, np.ndarray], uplink) -> list[float]:
    """Seconds of the uplink method's client half on each client's 2nd to 4th
    visit, with the state the visits before left (the error-feedback residual
    grows toward the size of the model: a client's steady state in a run)."""
    split, parts = load_split(cfg), partitions(cfg)
    seconds = []
    for pid in chosen:
        data, private, state = local_data(split, np.asarray(parts[pid])), None, None
        for visit in range(1, 5):
            result = local_update(cfg, data, split.n_items, shared, private, visit, pid, torch.device("cpu"))
            ctx = RoundContext(visit, pid, cfg.runtime.seed, cfg.local_lr_at(visit))
            tick = time.perf_counter()
            encoded = uplink.encode(result.delta, state, ctx)
            if visit > 1:
                seconds.append(time.perf_counter() - tick)
            private, state = result.private, encoded.state or None
    return seconds


def local_training(cfgs: dict[str, Config], chosen: list[int], repeats: int = 3) -> dict[str, float]:
    """ms per client of `local_update` for each trainer: clients interleaved,
    the fastest of `repeats` per client and trainer (first visit, round 1)."""
    any_cfg = next(iter(cfgs.values()))
    split, parts = load_split(any_cfg), partitions(any_cfg)
    m = any_cfg.model
    model = build_model(m.model, 1, split.n_items, m.dim, m.mlp_widths, seed=any_cfg.runtime.seed)
    shared = {k: v.numpy() for k, v in model.shared_state().items()}
    best: dict[str, list[float]] = {name: [] for name in cfgs}
    for pid in chosen:
        data = local_data(split, np.asarray(parts[pid]))
        for name, cfg in cfgs.items():
            runs = []
            for _ in range(repeats):
                tick = time.perf_counter()
                local_update(cfg, data, split.n_items, shared, None, 1, pid, torch.device("cpu"))
                runs.append(time.perf_counter() - tick)
            best[name].append(min(runs))
    return {name: 1e3 * statistics.mean(values) for name, values in best.items()}


def _cpu_seconds(processes: list) -> float:
    """User + system CPU seconds of the processes still alive (an actor Ray
    restarted, or another program's, may be gone by the second reading)."""
    import psutil

    total = 0.0
    for p in processes:
        try:
            total += sum(p.cpu_times()[:2])
        except psutil.NoSuchProcess:
            continue
    return total


def simulate(config: str, data: str, flags: list[str], out: Path) -> dict[str, float]:
    """10 rounds of `prunus simulate` (Flower's engine): round time, updates per
    second, start-up, and the CPU (cores) of the driver, the raylet and the actors."""
    import psutil

    args = [sys.executable, "-m", "prunus.simulations.cli", "simulate", str(ROOT / "simulations" / "configs" / config),
            "--out", str(out), *(a for s in [f"data-dir={data}", "rounds=10", "eval-every=100", *flags] for a in ("--set", s))]
    log_path = out.with_suffix(".log")
    started = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        while not re.search(r"round +3/", log_path.read_text()) and proc.poll() is None:
            time.sleep(0.2)
        startup = time.perf_counter() - started
        watched = {"driver": [psutil.Process(proc.pid)]}
        for p in psutil.process_iter(["cmdline"]):
            line = " ".join(p.info["cmdline"] or [])
            if "ClientAppActor" in line:
                watched.setdefault("actors", []).append(p)
            elif line.endswith("raylet") or "/raylet " in line or "raylet/raylet" in line:
                watched.setdefault("raylet", []).append(p)
        cpu0 = {k: _cpu_seconds(ps) for k, ps in watched.items()}
        t0 = time.perf_counter()
        while not re.search(r"round +10/", log_path.read_text()) and proc.poll() is None:
            time.sleep(0.2)
        cpu1 = {k: _cpu_seconds(ps) for k, ps in watched.items()}
        window = time.perf_counter() - t0
        proc.wait()
    table = pd.read_csv(out / "rounds.csv")
    train = table[(table["round"] >= 3) & (table["round"] < 10)]
    median = float(train["seconds"].median())
    return {"median_round_s": median, "updates_per_s": float(train["replies"].median()) / median,
            "startup_s": startup, **{f"cpu_{k}_cores": (cpu1[k] - cpu0[k]) / window for k in cpu0}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "datasets" / "ncf-ml-1m"))
    parser.add_argument("--simulate", action="store_true", help="also time 10 rounds of prunus simulate, before and after")
    parser.add_argument("--variants", default=",".join(SIMULATE_VARIANTS),
                        help="which --simulate variants to run (comma-separated; 'before' takes minutes: PyTorch "
                             "folds every user in at each central evaluation)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "client_step.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    results, speedups = [], {}
    for name, config, extra in CASES:
        trainers = ("torch",) if "neumf" in name else ("torch", "auto")
        cfgs = {t: load(ROOT / "simulations" / "configs" / config, [f"data-dir={args.data}", *extra, f"local-trainer={t}"])
                for t in trainers}  # fmt: skip
        rng = np.random.default_rng(0)
        chosen = sorted(rng.choice(len(partitions(cfgs["torch"])), size=args.clients, replace=False).tolist())
        local_training(cfgs, chosen[:5], repeats=1)  # warm-up: caches, allocator
        training = local_training(cfgs, chosen)
        for trainer, cfg in cfgs.items():
            stages = measure(cfg, chosen)
            stages["local training"] = training[trainer]  # the interleaved figure
            stages["total"] = sum(v for k, v in stages.items() if "Flower's objects" not in k and "visits" not in k)
            results.append({"case": name, "trainer": trainer, "ms_per_client": stages})
            print(f"{name:12} {trainer:6} " + "  ".join(f"{k} {v:7.3f}" for k, v in stages.items()), flush=True)
        if "auto" in cfgs:
            before, after = (next(r["ms_per_client"] for r in results if r["case"] == name and r["trainer"] == t)
                             for t in ("torch", "auto"))  # fmt: skip
            old_total = before["total"] - before["server byte count"] + before["server byte count (Flower's objects)"]
            speedups[name] = {"local training": before["local training"] / after["local training"],
                              "server byte count": after["server byte count (Flower's objects)"] / after["server byte count"],
                              "client + server total": old_total / after["total"]}  # fmt: skip
            print(f"{name}: " + ", ".join(f"{k} {v:.1f}x faster" for k, v in speedups[name].items()), flush=True)
    report = {
        "command": "python benchmarks/client_step.py " + " ".join(f"--{k} {v}" for k, v in vars(args).items()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
                    "threads": 1, "load_average": os.getloadavg()},  # fmt: skip
        "note": ("ms per client update, round 1, first visit (user vectors initialised), and pruning + encoding "
                 "also at visits 2-4; means over the sample. "
                 "'before' total: the torch step and Flower's byte count; 'after': the closed form and wire_size"),
        "results": results,
        "speedups": speedups,
    }
    if args.simulate:
        runs = {}
        for config in ("ml1m-dense.toml", "ml1m-topk.toml"):
            for when, flags in ((w, SIMULATE_VARIANTS[w]) for w in args.variants.split(",")):
                out = Path("/tmp") / f"client-step-{config.removesuffix('.toml')}-{when}"
                runs[f"{config} {when}"] = figures = simulate(config, args.data, flags, out)
                print(f"{config} {when}: " + ", ".join(f"{k} {v:.2f}" for k, v in figures.items()), flush=True)
        report["simulate"] = {
            "note": ("10 rounds of prunus simulate (Flower's Simulation Engine, 2 client actors), rounds 3-9 "
                     "timed; settings over the config's own: " + json.dumps(SIMULATE_VARIANTS)),
            "runs": runs,
        }
        for name, (a, b) in {"round_speedup": ("before", "after"), "batching_speedup": ("unbatched", "after")}.items():
            if f"ml1m-dense.toml {a}" in runs and f"ml1m-dense.toml {b}" in runs:
                report["simulate"][name] = {c: runs[f"{c} {a}"]["median_round_s"] / runs[f"{c} {b}"]["median_round_s"]
                                            for c in ("ml1m-dense.toml", "ml1m-topk.toml")}
        if "ml1m-topk.toml after" in runs:
            report["simulate"]["topk_over_dense_round"] = (runs["ml1m-topk.toml after"]["median_round_s"]
                                                          / runs["ml1m-dense.toml after"]["median_round_s"])
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
