"""What one client update costs, stage by stage, before and after the closed-form MF step.

For a seeded sample of ML-1M users (one client per user, NCF split), runs the
client and server code of one round (`client.handlers` path, no Flower
runtime) and times each stage per client:

* local training (`client.local_update`): the PyTorch reference
  (`local-trainer = "torch"`, what every client ran before) against the closed
  form (`"auto"`), back to back in one process;
* pruning + encoding (the uplink method's client half);
* the server's byte count (`wire_bytes` of the reply), decode + validation,
  and aggregation (amortised over the sample).

Configs: `ml1m-dense.toml` and `ml1m-topk.toml` (MF, d=32), and NeuMF (the
dense config with `model = "neumf"`, PyTorch only). One thread, as a client
actor with one CPU. Message submission to Ray actors is not in here: it is
measured by whole runs (`prunus simulate`, see the issue notes).

    python benchmarks/client_step.py [--clients 200] [--data ../shared/datasets/ncf-ml-1m]
        [--out benchmarks/results/client_step.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from flwr.app import MetricRecord, RecordDict

from prunus.client.local_update import local_data, local_update
from prunus.common.compression import UPLINK, RoundContext
from prunus.common.config import Config, load
from prunus.common.datasets import load_split, partitions
from prunus.common.models import build_model
from prunus.common.params import wire_bytes
from prunus.server.aggregation import aggregate
from prunus.server.validation import validate_train_reply

ROOT = Path(__file__).resolve().parents[1]
CASES = (("mf-dense", "ml1m-dense.toml", []), ("mf-topk", "ml1m-topk.toml", []),
         ("neumf-dense", "ml1m-dense.toml", ["model=neumf", "local-lr=0.05", "local-lr-final=0"]))  # fmt: skip


def measure(cfg: Config, chosen: list[int]) -> dict[str, float]:
    """Mean ms per client of each stage, over the `chosen` partitions."""
    split, parts = load_split(cfg), partitions(cfg)
    m = cfg.model
    model = build_model(m.model, 1, split.n_items, m.dim, m.mlp_widths, seed=cfg.runtime.seed)
    shared = {k: v.numpy() for k, v in model.shared_state().items()}
    shapes = {k: v.shape for k, v in shared.items()}
    uplink = UPLINK.get(cfg.compression.prune_method)(cfg.compression)
    device, server_round = torch.device("cpu"), 1
    times: dict[str, list[float]] = {"local training": [], "pruning + encoding": [], "server byte count": [],
                                     "server decode + validation": []}  # fmt: skip
    updates = []
    for pid in chosen:
        data = local_data(split, np.asarray(parts[pid]))
        tick = time.perf_counter()
        result = local_update(cfg, data, split.n_items, shared, None, server_round, pid, device)
        tock = time.perf_counter()
        ctx = RoundContext(server_round, pid, cfg.runtime.seed, cfg.local_lr_at(server_round))
        encoded = uplink.encode(result.delta, None, ctx)
        reply = RecordDict({"arrays": encoded.record,
                            "metrics": MetricRecord({"num-examples": result.num_examples, "train-loss": result.loss})})
        t_enc = time.perf_counter()
        wire_bytes(reply)
        t_count = time.perf_counter()
        update, num_examples, _ = validate_train_reply(reply, shapes, uplink)
        t_val = time.perf_counter()
        for stage, seconds in zip(times, (tock - tick, t_enc - tock, t_count - t_enc, t_val - t_count)):
            times[stage].append(seconds)
        updates.append((update, 1.0))
    tick = time.perf_counter()
    aggregate(updates, shapes, cfg.federation.row_averaging)
    per_reply = (time.perf_counter() - tick) / len(chosen)
    out = {stage: 1e3 * statistics.mean(values) for stage, values in times.items()}
    out["server aggregation"] = 1e3 * per_reply
    out["total"] = sum(out.values())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "datasets" / "ncf-ml-1m"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "client_step.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = []
    for name, config, extra in CASES:
        trainers = ("torch",) if "neumf" in name else ("torch", "auto")
        for trainer in trainers:
            cfg = load(ROOT / "simulations" / "configs" / config, [f"data-dir={args.data}", *extra, f"local-trainer={trainer}"])
            rng = np.random.default_rng(0)
            chosen = sorted(rng.choice(len(partitions(cfg)), size=args.clients, replace=False).tolist())
            measure(cfg, chosen[:5])  # warm-up: caches, allocator
            stages = measure(cfg, chosen)
            results.append({"case": name, "trainer": trainer, "ms_per_client": stages})
            print(f"{name:12} {trainer:6} " + "  ".join(f"{k} {v:7.3f}" for k, v in stages.items()), flush=True)
    speedups = {}
    for name in ("mf-dense", "mf-topk"):
        before, after = (next(r["ms_per_client"] for r in results if r["case"] == name and r["trainer"] == t)
                         for t in ("torch", "auto"))  # fmt: skip
        speedups[name] = {"local training": before["local training"] / after["local training"],
                          "client + server total": before["total"] / after["total"]}  # fmt: skip
        print(f"{name}: local training {speedups[name]['local training']:.1f}x faster, "
              f"client + server {speedups[name]['client + server total']:.1f}x", flush=True)  # fmt: skip
    report = {
        "command": "python benchmarks/client_step.py " + " ".join(f"--{k} {v}" for k, v in vars(args).items()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
                    "threads": 1, "load_average": os.getloadavg()},  # fmt: skip
        "note": "ms per client update, round 1, first visit (user vectors initialised); means over the sample",
        "results": results,
        "speedups": speedups,
    }
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
