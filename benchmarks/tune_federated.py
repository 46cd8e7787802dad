"""Tune federated hyper-parameters fast, on the validation split, in one process.

Runs the very client update (`client.local_update`), aggregation, server
optimiser and central evaluation that the Flower app runs, minus Flower and
Ray, so many settings can be compared in the time one real run takes. The
real run (`prunus simulate`) then confirms the chosen setting.

    python benchmarks/tune_federated.py CONFIG.toml --set key=value ... [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from flwr.app import MetricRecord, RecordDict

from prunus.client.compression import encode_update
from prunus.client.local_update import local_data, local_update
from prunus.common.config import load
from prunus.common.datasets import load_split, partitions
from prunus.common.models import build_model
from prunus.common.params import wire_bytes
from prunus.server.aggregation import aggregate
from prunus.server.evaluation import CentralEvaluator
from prunus.server.ledger import Ledger
from prunus.server.strategy import TRAIN_STREAM, PrunusStrategy
from prunus.server.validation import validate_train_reply


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", nargs="?")
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--out")
    args = parser.parse_args()
    cfg = load(args.config, ["eval-split=validation", *args.set])
    torch.set_num_threads(1)
    split, parts = load_split(cfg), partitions(cfg)
    model = build_model(cfg.model, 1, split.n_items, cfg.dim, cfg.mlp_widths, seed=cfg.seed)
    params = {k: v.numpy() for k, v in model.shared_state().items()}
    strategy = PrunusStrategy(cfg, {p: p for p in range(len(parts))}, params, Ledger())
    evaluator = CentralEvaluator(cfg, split)
    private: dict[int, dict] = {}
    residuals: dict[int, dict] = {}
    curve, started, device = [], time.perf_counter(), torch.device("cpu")
    uplink_bytes = 0
    for server_round in range(1, cfg.rounds + 1):
        updates = []
        for pid in strategy.sample(server_round, cfg.clients_per_round, TRAIN_STREAM):
            data = local_data(split.indptr, split.train_items, np.asarray(parts[pid]), device)
            result = local_update(cfg, data, split.n_items, strategy.params, private.get(pid), server_round, pid, device)
            encoded = encode_update(cfg, result.delta, residuals.get(pid), server_round, pid)
            private[pid], residuals[pid] = result.private, encoded.residual
            reply = RecordDict({"arrays": encoded.record, "metrics": MetricRecord({"num-examples": result.num_examples})})
            uplink_bytes += wire_bytes(reply)
            update, num_examples, _ = validate_train_reply(reply, strategy.shapes, cfg.dense_uplink)
            updates.append((update, 1.0 if cfg.row_averaging else num_examples))
        aggregated = aggregate(updates, strategy.shapes, cfg.row_averaging)
        strategy.params = strategy.optimizer.step(strategy.params, aggregated)
        if strategy.is_eval_round(server_round):
            metrics = evaluator(strategy.params)
            curve.append({"round": server_round, **metrics, "uplink_bytes": uplink_bytes, "seconds": time.perf_counter() - started})
            print(json.dumps(curve[-1]), flush=True)
            if args.out:  # after every evaluation, so a cut-short run keeps its curve
                with open(args.out, "w") as handle:
                    json.dump({"config": cfg.to_dict(), "curve": curve}, handle, indent=1)


if __name__ == "__main__":
    main()
