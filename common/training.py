"""Local training with negative sampling (BCE or BPR) and user fold-in.

One routine serves the centralized reference, each client's local training and
the server's fold-in of user vectors at evaluation time, so the three can only
differ in what they train, never in how.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from prunus.common.config import Config
from prunus.common.models import Recommender


@dataclass(frozen=True)
class TrainSettings:
    """How to run local optimisation; all values come from the run config."""

    loss: str = "bce"
    num_negatives: int = 4
    epochs: int = 1
    lr: float = 0.01
    batch_size: int = 1024
    l2: float = 0.0
    l1: float = 0.0
    optimizer: str = "adam"
    # "mean" over a batch's samples, or "sum": each positive (with its
    # negatives) counts once, so an item's step does not shrink with the
    # size of the client's data
    reduction: str = "mean"
    # the item ids negatives are drawn from (None: every item); a client of a
    # partial broadcast draws from the pool of rows it received
    negative_pool: np.ndarray | None = None


def client_settings(cfg: Config, server_round: int = 1) -> TrainSettings:
    """The local-training settings of a run's round (also used to fold in users)."""
    return TrainSettings(
        loss=cfg.training.loss,
        num_negatives=cfg.training.train_negatives,
        epochs=cfg.training.local_epochs,
        lr=cfg.local_lr_at(server_round),
        batch_size=cfg.training.batch_size,
        l2=cfg.training.l2,
        l1=cfg.training.l1,
        optimizer=cfg.training.local_optimizer,
        reduction="sum",
    )


def _negatives(n: int, n_items: int, generator: torch.Generator, pool: np.ndarray | None = None) -> torch.Tensor:
    """Uniform item ids (from `pool` if given); a rare collision with a
    positive is accepted noise."""
    if pool is None:
        return torch.randint(0, n_items, (n,), generator=generator)
    return torch.as_tensor(pool)[torch.randint(0, len(pool), (n,), generator=generator)]


def _per_positive_loss(
    model: Recommender,
    users: torch.Tensor,
    items: torch.Tensor,
    settings: TrainSettings,
    n_items: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """Loss of each positive with its freshly sampled negatives (and L2 on the
    rows they touch)."""
    k = settings.num_negatives
    neg_items = _negatives(len(items) * k, n_items, generator, settings.negative_pool).to(items.device)
    neg_users = users.repeat_interleave(k)
    pos = model(users, items)
    neg = model(neg_users, neg_items)
    if settings.loss == "bce":
        per_positive = (F.softplus(-pos) + F.softplus(neg).view(-1, k).sum(1)) / (k + 1)
    else:
        per_positive = -F.logsigmoid(pos.repeat_interleave(k) - neg).view(-1, k).mean(1)
    for weight, power in ((settings.l2, 2), (settings.l1, 1)):
        if weight > 0:
            reg = model.regularised_rows(users, items, power) + model.regularised_rows(neg_users, neg_items, power).view(-1, k).sum(1)
            per_positive = per_positive + weight * reg / (k + 1)
    return per_positive


def make_optimizer(params: list[torch.nn.Parameter], settings: TrainSettings) -> torch.optim.Optimizer:
    if settings.optimizer == "adam":
        return torch.optim.Adam(params, lr=settings.lr)
    return torch.optim.SGD(params, lr=settings.lr)


def train(
    model: Recommender,
    users: torch.Tensor,
    items: torch.Tensor,
    settings: TrainSettings,
    generator: torch.Generator,
    optimizer: torch.optim.Optimizer | None = None,
    params: list[torch.nn.Parameter] | None = None,
) -> float:
    """Train on positive pairs; returns the mean loss.

    `users` index the model's own user table. Negatives are sampled afresh
    every epoch from `generator`, so a seeded generator gives a repeatable run.
    Pass `optimizer` to keep its state across calls (centralized epochs);
    by default a fresh one trains `params` (default: every parameter).
    """
    optimizer = optimizer or make_optimizer(list(model.parameters()) if params is None else params, settings)
    n_items = model.n_items
    total, batches = 0.0, 0
    for _ in range(settings.epochs):
        order = torch.randperm(len(users), generator=generator).to(users.device)
        for start in range(0, len(users), settings.batch_size):
            idx = order[start : start + settings.batch_size]
            per_positive = _per_positive_loss(model, users[idx], items[idx], settings, n_items, generator)
            loss = per_positive.sum() if settings.reduction == "sum" else per_positive.mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
            batches += 1
    return total / max(batches, 1)


def fold_in(
    model: Recommender,
    users: torch.Tensor,
    items: torch.Tensor,
    settings: TrainSettings,
    steps: int,
    lr: float,
    generator: torch.Generator,
) -> float:
    """Fit the private (user) parameters with the shared ones fixed.

    This is how a user vector is obtained for a global model the user never
    trained (as in Federated Reconstruction). Every step is full-batch with
    each user's loss averaged over that user's own samples and the users'
    losses summed, and Adam is element-wise: so each user's vector follows
    exactly the path it would follow alone, whether one client folds in its
    user or the server folds in all users at once.
    """
    shared = model.shared_parameters()
    for p in shared:
        p.requires_grad_(False)
    n_items = model.n_items
    weights = 1.0 / torch.bincount(users)[users].float()
    n_seen = max(int(torch.unique(users).numel()), 1)
    optimizer = torch.optim.Adam(model.private_parameters(), lr=lr)
    loss_value = 0.0
    try:
        for _ in range(steps):
            loss = (_per_positive_loss(model, users, items, settings, n_items, generator) * weights).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_value = float(loss.detach()) / n_seen
    finally:
        for p in shared:
            p.requires_grad_(True)
    return loss_value


def seeded_generator(*parts: int) -> torch.Generator:
    """A torch generator whose seed depends only on `parts` (e.g. seed, round,
    partition), so results do not depend on which process runs what, or when."""
    seed = int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint64)[0] >> 1)
    return torch.Generator().manual_seed(seed)
