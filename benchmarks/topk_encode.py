"""What the top-k client half costs, stage by stage, at a client's steady state.

For a spread of ML-1M users (one client per user, `ml1m-topk.toml`), runs
four visits of local training and the uplink method's client half, so that
each client holds the error-feedback residual a run leaves, then times the
fifth visit's client half and the server's decoding of its reply (best of 3
passes over the clients, one thread; `total` is the client half):

* carry: the residual added to the update (`compression.sparse.carry`);
* keep: the top 2% positions (`pruning.keep`, `topk-global`);
* quantise: the kept values through the int8 codec, the residual updated;
* pack: the index and value streams (`codec.pack_update`);
* to state: the residual as the client keeps it (`sparse.residual_to_state`);
* decode (server): the reply's payloads back to sparse tensors, as the
  server's validation decodes them (`SparseUplink.decode`).

Each run adds its figures under `--label` to the results file, with the
commit it ran at, so that two commits' code can be measured back to back:

    python benchmarks/topk_encode.py --label after [--clients 40] [--data ../shared/datasets/ncf-ml-1m]
        [--out benchmarks/results/topk_encode.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from prunus.client.local_update import local_data, local_update
from prunus.common.codec import pack_update
from prunus.common.compression import UPLINK, RoundContext, make
from prunus.common.compression.sparse import carry, residual_to_state
from prunus.common.config import load
from prunus.common.datasets import load_split, partitions
from prunus.common.models import build_model
from prunus.common.pruning import keep, quantise
from prunus.common.results import code_version
from prunus.common.update import Sparse

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("carry", "keep", "quantise", "pack", "to state", "decode (server)")


def steady_clients(cfg, count: int) -> list:
    """(update, residual state, context) of `count` clients' fifth visits."""
    split, parts = load_split(cfg), partitions(cfg)
    m = cfg.model
    model = build_model(m.model, 1, split.n_items, m.dim, m.mlp_widths, seed=cfg.runtime.seed)
    shared = {k: v.numpy() for k, v in model.shared_state().items()}
    uplink = make(UPLINK, cfg.compression.prune_method, cfg)
    clients = []
    for pid in np.linspace(0, len(parts) - 1, count).astype(int):
        data, private, state = local_data(split, np.asarray(parts[pid])), None, None
        for visit in range(1, 6):
            result = local_update(cfg, data, split.n_items, shared, private, visit, int(pid), torch.device("cpu"))
            ctx = RoundContext(visit, int(pid), cfg.runtime.seed, cfg.local_lr_at(visit))
            if visit == 5:
                clients.append((result.delta, state, ctx))
                break
            encoded = uplink.encode(result.delta, state, ctx)
            private, state = result.private, encoded.state or None
    return clients


def one_pass(cfg, clients: list) -> dict[str, float]:
    """Seconds of each stage over all clients (the client half as `SparseUplink.encode` runs it)."""
    uplink, c = make(UPLINK, cfg.compression.prune_method, cfg), cfg.compression
    spec = uplink.spec
    seconds = dict.fromkeys(STAGES, 0.0)
    for delta, state, ctx in clients:
        delta = {k: v.copy() for k, v in delta.items()}
        marks = [time.perf_counter()]
        corrected, held = carry(delta, state, ctx)
        marks.append(time.perf_counter())
        kept = keep(corrected, spec, c.density, None)
        marks.append(time.perf_counter())
        sparse = {}
        for name, x in corrected.items():
            idx = kept[name]
            vals = x.ravel()[idx]
            q = quantise(vals, spec.value_codec)
            sparse[name] = Sparse(idx, vals, x.shape)
            x.ravel()[idx] = vals - q
        marks.append(time.perf_counter())
        record = pack_update(sparse, index_codec=c.index_codec, value_codec=spec.value_codec)
        marks.append(time.perf_counter())
        residual_to_state(corrected, ctx.lr, held)
        marks.append(time.perf_counter())
        uplink.decode(record, {name: x.shape for name, x in corrected.items()})
        marks.append(time.perf_counter())
        for stage, start, end in zip(STAGES, marks, marks[1:]):
            seconds[stage] += end - start
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--label", required=True, help="the name these figures go under (e.g. before, after)")
    parser.add_argument("--clients", type=int, default=40)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "datasets" / "ncf-ml-1m"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "topk_encode.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = load(ROOT / "simulations" / "configs" / "ml1m-topk.toml", [f"data-dir={args.data}"])
    clients = steady_clients(cfg, args.clients)
    passes = [one_pass(cfg, clients) for _ in range(3)]
    best = {stage: 1e3 * min(p[stage] for p in passes) / len(clients) for stage in STAGES}
    best["total"] = sum(v for stage, v in best.items() if stage != "decode (server)")  # the client half
    out = Path(args.out)
    report = json.loads(out.read_text()) if out.exists() else {
        "note": "ms per client of the top-k client half at a client's fifth visit (ml1m-topk.toml), and of the server decoding its reply, best of 3 passes, one thread",
        "runs": {}}
    report["runs"][args.label] = {"code": code_version(), "clients": len(clients), "ms_per_client": best}
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report["runs"][args.label], indent=1))


if __name__ == "__main__":
    main()
