"""A whole federated run, free of Flower's runtime: build the model, run the
rounds of `server.federation` over a transport, write the outputs.

The ServerApp (`server.app`) calls it with Flower's Grid as the transport;
the in-process engine (`simulations.inprocess`) with direct calls.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from prunus.common.config import Config
from prunus.common.data import SplitData
from prunus.common.datasets import load_split
from prunus.common.datasets import partitions as all_partitions
from prunus.common.models import ModelSpec, build_model, model_spec
from prunus.common.privacy import epsilon, noise_multiplier
from prunus.common.results import clear_run_files, code_version, write_clients, write_rounds, write_run
from prunus.server.checkpoint import Checkpoint, check_resumable
from prunus.server.checkpoint import load as load_checkpoint
from prunus.server.checkpoint import save as save_checkpoint
from prunus.server.evaluation import CentralEvaluator
from prunus.server.federation import Federation
from prunus.server.leakage import LeakageMeter
from prunus.server.ledger import REPLY_COLUMNS, Ledger, RoundLog
from prunus.server.model_store import save_model
from prunus.server.progress import RoundProgress
from prunus.server.transport import Transport

log = logging.getLogger("prunus")


def deployment_checkpoint(cfg: Config) -> Checkpoint | None:
    """Under `flwr run`: with `resume = true` the checkpoint in `out` (made under
    the same config, key by key), else None after clearing `out` of an earlier
    run's files. Clients keep their own state in their SuperNodes."""
    out = Path(cfg.runtime.out)
    if not cfg.runtime.resume:
        clear_run_files(out)
        return None
    checkpoint = load_checkpoint(out)
    check_resumable(cfg, checkpoint)
    return checkpoint


def run_federation(cfg: Config, transport: Transport, partitions: list[int], ledger: Ledger,
                   resume: Checkpoint | None = None) -> dict:
    """Train for `rounds` rounds over `transport` (after `resume`'s round, when
    given); write summary.json, rounds.csv, clients.csv, curve.png, model.npz,
    and checkpoint.npz every `checkpoint-every` rounds."""
    started = time.perf_counter()
    code_version()  # the code this run runs, before anything can change it
    out = Path(cfg.runtime.out)
    split = load_split(cfg)
    m = cfg.model
    model = build_model(m.model, 1, split.n_items, m.dim, m.mlp_widths, seed=cfg.runtime.seed)
    params = {k: v.numpy() for k, v in model.shared_state().items()}
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    evaluator = CentralEvaluator(cfg, split, device)
    spec = model_spec(cfg.model, split.n_items)
    federation = Federation(cfg, partitions, params, spec, evaluator, ledger, leakage_meter(cfg, split, spec))

    if resume is not None:
        federation.restore(resume)
        log.info("resuming after round %d", resume.server_round)
    progress = RoundProgress(cfg.federation.rounds)
    every = cfg.runtime.checkpoint_every

    def on_round(entry: RoundLog) -> None:
        progress.update(entry)
        write_rounds(out, ledger.rows())
        if every and entry.round and (entry.round % every == 0 or entry.round == cfg.federation.rounds):
            save_checkpoint(out, federation.snapshot(entry.round))

    try:
        final = federation.run(transport, on_round, start=1 if resume is None else resume.server_round + 1)
    finally:
        progress.close()
    saved = save_model(out, final, model.prunable_names())
    return finish(cfg, ledger, saved, time.perf_counter() - started)


def evaluated_model(cfg: Config) -> str:
    """What the summary's hr@k scores (`server.evaluation`)."""
    if CentralEvaluator.decodes(cfg):
        return (f"as clients decode the {cfg.compression.downlink_codec} broadcast "
                f"(the server's float model: the -server metrics)")
    return "the server's model"


def ldp_guarantee(cfg: Config, ledger: Ledger) -> dict[str, float]:
    """The run's local-DP guarantee: per reply, and composed over the train
    replies of its most-sampled client (`common.privacy`)."""
    if cfg.compression.defence != "ldp":
        return {}
    c = cfg.methods["defence.ldp"]
    sigma = noise_multiplier(c.ldp_epsilon, c.ldp_delta)
    releases = Counter(r.partition for r in ledger.replies if r.kind == "train" and r.status != "failed")
    most = max(releases.values(), default=0)
    return {"ldp-noise-multiplier": sigma, "ldp-epsilon-reply": c.ldp_epsilon, "ldp-delta": c.ldp_delta,
            "ldp-replies-max": most, "ldp-epsilon-run": epsilon(sigma, most, c.ldp_delta)}


def leakage_meter(cfg: Config, split: SplitData, spec: ModelSpec) -> LeakageMeter | None:
    """The attacks of `server.leakage`, when `leakage-sample` asks for them;
    the partitions' true items are read from the split for scoring only."""
    if not cfg.evaluation.leakage_sample:
        return None
    items_of = {p: np.unique(split.train_items[split.rows_of(np.asarray(users))])
                for p, users in enumerate(all_partitions(cfg))}
    widths = [math.prod(spec.shapes[name][1:]) for name in spec.item_tables]
    # the item bias: a one-column item table after the embedding (MF's), if the model has one
    bias = next((sum(widths[:i]) for i in range(1, len(widths)) if widths[i] == 1), None)
    return LeakageMeter(cfg.evaluation.leakage_sample, cfg.runtime.seed, items_of, spec.item_tables, widths[0], bias)


def finish(cfg: Config, ledger: Ledger, model: dict, wall_seconds: float) -> dict:
    """Write the outputs (clients.csv too) and print the final table."""
    out = Path(cfg.runtime.out)
    rows = ledger.rows()
    write_clients(out, ledger.reply_rows(), REPLY_COLUMNS)
    facts = {
        "comm": ledger.comm_summary(),
        "model": model,
        "rounds": cfg.federation.rounds,
        "clients": sum(r["clients"] for r in rows),
        "failures": sum(r["failures"] for r in rows),
        "rejected": sum(r["rejected"] for r in rows),
        # what the server's defences did: replies left out or scaled down, steps refused
        "zeroed": sum(r["zeroed"] for r in rows),
        "row-clipped": sum(r["row_clipped"] for r in rows),
        "clipped": sum(r["clipped"] for r in rows),
        "weight-capped": sum(r["weight_capped"] for r in rows),
        "refused": sum(r["refused"] for r in rows),
        # model entries the broadcast clipped to the downlink's range (the model still travelled)
        "downlink-clipped": int(sum(r.get("downlink-clipped", 0) for r in rows)),
        # which model the headline metrics score: as clients decode the broadcast, or the server's float model
        "evaluated": evaluated_model(cfg),
        "wall_seconds": wall_seconds,
        "placement": ledger.placement(),
    }
    if cfg.evaluation.leakage_sample or cfg.compression.defence == "ldp":
        facts["privacy"] = ledger.privacy_summary() | ldp_guarantee(cfg, ledger)
    return write_run(out, "federated", rows, cfg.evaluation.top_k, facts, cfg.to_dict())
