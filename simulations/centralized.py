"""Train the same data and model without federation: the reference that
federated runs are compared with."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from prunus.common.config import Config
from prunus.common.datasets import load_split
from prunus.common.evaluation import ranking_metrics
from prunus.common.models import build_model
from prunus.common.results import clear_run_files, code_version, write_run
from prunus.common.training import TrainSettings, make_optimizer, seeded_generator, train


def run_centralized(cfg: Config) -> dict:
    """Mini-batch Adam over all users' interactions; evaluates every `eval-every` epochs."""
    started = time.perf_counter()
    code_version()  # the code this run runs, before anything can change it
    out = Path(cfg.runtime.out)
    clear_run_files(out)
    torch.manual_seed(cfg.runtime.seed)
    split = load_split(cfg)
    model = build_model(cfg.model.model, split.n_users, split.n_items, cfg.model.dim, cfg.model.mlp_widths, seed=cfg.runtime.seed)
    settings = TrainSettings(
        loss=cfg.training.loss,
        num_negatives=cfg.training.train_negatives,
        epochs=1,
        lr=cfg.centralized.centralized_lr,
        batch_size=cfg.centralized.centralized_batch_size,
        l2=cfg.centralized.centralized_l2,
        optimizer="adam",
    )
    optimizer = make_optimizer(list(model.parameters()), settings)
    users, items = torch.as_tensor(split.train_users), torch.as_tensor(split.train_items)
    generator = seeded_generator(cfg.runtime.seed, 0)
    rows = []
    for epoch in range(1, cfg.centralized.centralized_epochs + 1):
        tick = time.perf_counter()
        loss = train(model, users, items, settings, generator, optimizer=optimizer)
        row = {"epoch": epoch, "train_loss": loss}
        if epoch % cfg.evaluation.eval_every == 0 or epoch == cfg.centralized.centralized_epochs:
            row |= ranking_metrics(model, split, k=cfg.evaluation.top_k, full_ranking=cfg.evaluation.full_ranking)
        row["seconds"] = time.perf_counter() - tick
        rows.append(row)
        metrics = " ".join(f"{k} {v:.4f}" for k, v in row.items() if k.startswith(("hr@", "ndcg@")))
        print(f"[prunus] epoch {epoch:>3}/{cfg.centralized.centralized_epochs}  loss {loss:.4f}  {row['seconds']:5.1f} s  {metrics}", flush=True)
    facts = {"comm": {"uplink_bytes": 0, "downlink_bytes": 0}, "rounds": cfg.centralized.centralized_epochs,
             "wall_seconds": time.perf_counter() - started}
    return write_run(out, "centralized", rows, cfg.evaluation.top_k, facts, cfg.to_dict(), x="epoch")
