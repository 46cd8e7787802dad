"""Central evaluation of the global model on held-out users.

The global model has no user vectors (they stay on clients), so each user's
vector is folded in from that user's training interactions with the shared
parameters fixed; the figure then measures the shared parameters alone.
"""

from __future__ import annotations

import torch

from prunus.common.config import Config
from prunus.common.data import SplitData
from prunus.common.evaluation import ranking_metrics
from prunus.common.models import build_model
from prunus.common.params import Params
from prunus.common.training import client_settings, fold_in, seeded_generator

EVAL_STREAM = 0xE7A1  # keeps evaluation's random stream apart from training's


class CentralEvaluator:
    """Scores a set of shared parameters: fold in users, then rank held-out items."""

    def __init__(self, cfg: Config, split: SplitData, device: torch.device | None = None) -> None:
        self.cfg, self.split = cfg, split
        self.device = device or torch.device("cpu")
        self.users = torch.as_tensor(split.train_users, device=self.device)
        self.items = torch.as_tensor(split.train_items, device=self.device)

    def __call__(self, shared: Params) -> dict[str, float]:
        cfg = self.cfg
        model = build_model(cfg.model.model, self.split.n_users, self.split.n_items, cfg.model.dim, cfg.model.mlp_widths, seed=cfg.runtime.seed)
        model = model.to(self.device)
        model.load_shared({k: torch.as_tensor(v) for k, v in shared.items()})
        generator = seeded_generator(cfg.runtime.seed, EVAL_STREAM)
        fold_in(model, self.users, self.items, client_settings(cfg), cfg.evaluation.fold_in_epochs, cfg.training.user_lr, generator)
        return ranking_metrics(model, self.split, k=cfg.evaluation.top_k, full_ranking=cfg.evaluation.full_ranking)
